"""A federation on an existing Ray cluster: a head and a worker started with ``ray start``
on this machine, with token authentication (docs/ray-cluster.md), ``federation.ray_address``
pointing at the head. A two-node cluster cannot stay on loopback (Ray refuses to add a node
to a head whose node address is 127.0.0.1), so its token is what keeps strangers out."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fl_sim import federation
from fl_sim.experiment import run_experiment
from fl_sim.snapshots import SnapshotStore
from tests.conftest import tiny_config
from tests.test_flower_runtime import free_port

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _ray_env(token: str) -> dict:
    env = dict(os.environ, RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    return env


def _ray_start(args: list[str], log: Path, token: str) -> subprocess.Popen:
    ray = Path(sys.executable).parent / "ray"
    env = _ray_env(token)
    # --block keeps `ray start` in the foreground: its process group holds every daemon it
    # started, so the test stops exactly what it started
    return subprocess.Popen([str(ray), "start", "--block", "--num-cpus=1", "--num-gpus=0", *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _alive_nodes(address: str, token: str) -> int:
    out = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", f"--address={address}"],
                         capture_output=True, text=True, timeout=60, env=_ray_env(token))
    return out.stdout.count("node_") if out.returncode == 0 else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(head address, the cluster's token)."""
    logs = tmp_path_factory.mktemp("cluster")
    token = secrets.token_hex(32)
    # a short temp dir of its own (Unix socket paths are limited to ~100 bytes), so that no
    # other `ray.init()` on this machine finds this cluster by Ray's default lookup
    temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    address = f"127.0.0.1:{free_port(set())}"
    procs = [_ray_start(["--head", f"--port={address.split(':')[1]}", "--node-ip-address=127.0.0.1",
                         "--include-dashboard=false", f"--temp-dir={temp}"], logs / "head.log", token)]
    try:
        deadline = time.time() + 120
        while _alive_nodes(address, token) < 1:
            assert time.time() < deadline, (logs / "head.log").read_text()[-2000:]
            time.sleep(1)
        procs.append(_ray_start([f"--address={address}", "--node-ip-address=127.0.0.1"], logs / "worker.log",
                                token))
        while _alive_nodes(address, token) < 2:
            assert time.time() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield address, token
    finally:
        federation.shutdown_ray()  # this process's connection to the cluster goes first
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_without_the_clusters_token_a_run_stops_at_once_with_one_line(cluster, tmp_path, monkeypatch):
    import ray

    address, _ = cluster
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    federation.shutdown_ray()
    cfg = tiny_config(federation__num_cpus=1.0, federation__ray_address=address,
                      federation__ray_connect_timeout_s=20)
    t = time.time()
    with pytest.raises(federation.RayAddressError, match="refused this process's token") as e:
        run_experiment(cfg, tmp_path / "run", progress=False)
    assert time.time() - t < 20  # refused at the first try, not after Ray's 20 retries
    assert f"federation.ray_address={address}" in str(e.value) and len(str(e.value).splitlines()) == 1
    assert "RAY_AUTH_TOKEN" in str(e.value) and not (tmp_path / "run").exists()
    assert not ray.is_initialized()
    for joining in [t for t in threading.enumerate() if t.name == "fl-sim-ray-join"]:
        joining.join(5)  # the refused join has ended, nothing of it lingers
        assert not joining.is_alive()


def test_a_federation_runs_on_an_existing_two_node_ray_cluster(cluster, tmp_path, monkeypatch):
    import ray

    address, token = cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what the docs tell a user to export
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    # one CPU per participant and per node: the actor pool spans both nodes or stalls
    cfg = tiny_config(federation__num_cpus=1.0, federation__ray_address=address)
    run_experiment(cfg, tmp_path / "run", progress=False)

    assert ray.is_initialized()  # the kept session is this cluster's, with both nodes
    # the head reports the host's own IP for the loopback address it was given
    assert ray.get_runtime_context().gcs_address.rsplit(":", 1)[1] == address.rsplit(":", 1)[1]
    assert sum(n["Alive"] for n in ray.nodes()) == 2
    assert federation._KEPT["pool"].num_actors == 2  # one actor on each node's one CPU
    # the run says where its participants ran
    assert f"the participants run on the Ray cluster at {address}" in (tmp_path / "run" / "run.log").read_text()

    store = SnapshotStore(tmp_path / "run" / "snapshots" / "passive")
    for rnd in (1, 2):
        uploads = [(store.find(rnd, p, "upload").num_examples, store.get(rnd, p, "upload")) for p in range(4)]
        glob = store.get(rnd, None, "global")
        total = sum(w for w, _ in uploads)
        for key in glob:
            mean = sum(w * u[key].astype(np.float64) for w, u in uploads) / total
            assert np.max(np.abs(mean - glob[key])) < 1e-6, key
