"""Ray closed to strangers: fl-sim's own Ray listens on loopback only and wants a token; a
``federation.ray_address`` that names no reachable cluster fails fast, with one line."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fl_sim import federation
from fl_sim.config import ray_address_problem
from fl_sim.errors import ConfigError
from fl_sim.experiment import run_experiment
from tests.conftest import tiny_config

LOOPBACK = ("127.", "::1", "::ffff:127.")


def _parent_of() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(root: int) -> set[int]:
    """``root`` and every process below it: this process's Ray, and nobody else's."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_of().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """socket inode -> (address, port) a listening TCP socket is bound to."""
    bound = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/net/{table}") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] != "0A":  # TCP_LISTEN
                    continue
                hexaddr, hexport = fields[1].split(":")
                raw = bytes.fromhex(hexaddr)
                # the kernel prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                bound[int(fields[9])] = (socket.inet_ntop(family, raw), int(hexport, 16))
    return bound


def listening(pids) -> list[tuple[int, str, int, str]]:
    """(pid, bound address, port, command line) of every listening TCP socket of ``pids``."""
    bound, found = _listening_inodes(), []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in bound:
                found.append((pid, *bound[int(link[8:-1])], cmd.strip()))
    return found


# ---------------------------------------------------------------- fl-sim's own Ray


@pytest.fixture(scope="module")
def federation_watched(tmp_path_factory):
    """A tiny federation on a Ray this process starts, every listening socket of this
    process and its descendants recorded every 0.2 s while it runs; HOME is a fresh
    directory, so a token file Ray would write there shows."""
    base = tmp_path_factory.mktemp("ray-safety")
    home = base / "home"
    home.mkdir()
    federation.shutdown_ray()  # a session of this test's own, not one kept from another test
    seen: dict[tuple[int, str, int], str] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for pid, addr, port, cmd in listening(descendants(os.getpid())):
                seen[(pid, addr, port)] = cmd
            stop.wait(0.2)

    env_before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    from ray._private import ray_constants

    cluster_switch = ray_constants.ENABLE_RAY_CLUSTER
    watcher = threading.Thread(target=watch, daemon=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.delenv("RAY_ADDRESS", raising=False)
        watcher.start()
        try:
            run_experiment(tiny_config(), base / "run", progress=False)
            for pid, addr, port, cmd in listening(descendants(os.getpid())):  # and once more at the end
                seen[(pid, addr, port)] = cmd
        finally:
            stop.set()
            watcher.join()
    return {"seen": seen, "home": home, "env_before": env_before, "cluster_switch": cluster_switch}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_every_ray_process_of_a_federation_listens_on_loopback_only(federation_watched):
    seen = federation_watched["seen"]
    beyond = sorted(f"{addr}:{port} (pid {pid}: {cmd[:80]})" for (pid, addr, port), cmd in seen.items()
                    if not addr.startswith(LOOPBACK))
    assert not beyond, "listening beyond loopback: " + "; ".join(beyond)
    # the scan saw Ray's servers, so the check above is not vacuous: the GCS, the raylet
    # (node and object manager), the runtime-env agent and the 4 participants' workers
    commands = list(seen.values())
    assert any("gcs_server" in c for c in commands), commands
    assert sum("raylet" in c.split()[0] for c in commands) >= 2, commands
    assert any("RuntimeEnvAgent" in c or "runtime_env" in c for c in commands), commands
    assert len({pid for (pid, _, _), c in seen.items() if c.startswith("ray::")}) >= 4, commands


def _attach(gcs_address: str, env: dict) -> subprocess.CompletedProcess:
    code = ("import logging, sys, ray\n"
            "try:\n"
            "    ray.init(address=sys.argv[1], logging_level=logging.ERROR)\n"
            # runs code in the session (no CPU: the kept participants' actors hold them all)
            "    print('ATTACHED', ray.get(ray.remote(num_cpus=0)(lambda: 6 * 7).remote()))\n"
            "except Exception as e:\n"
            "    print('REFUSED', type(e).__name__, e)\n")
    # a driver that keeps 127.0.0.1 (Ray would rewrite it to the machine's address, where
    # nothing of this session listens); 2 tries instead of Ray's 20 keep the refusal short
    env = dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_NUM_REDIS_GET_RETRIES="2",
               RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", code, gcs_address], capture_output=True, text=True,
                          timeout=240, env=env)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_local_ray_wants_a_token_that_only_its_processes_hold(federation_watched):
    assert federation._token_auth_supported()  # pyproject requires ray>=2.52
    import ray

    assert ray.is_initialized()  # the federation's session, kept for the next one
    gcs = ray.get_runtime_context().gcs_address
    assert gcs.startswith("127.0.0.1:")
    gcs_pid = next(pid for (pid, _, _), cmd in federation_watched["seen"].items() if "gcs_server" in cmd)
    gcs_env = dict(v.split("=", 1) for v in Path(f"/proc/{gcs_pid}/environ").read_text().split("\0") if "=" in v)
    assert gcs_env.get("RAY_AUTH_MODE") == "token"
    token = gcs_env["RAY_AUTH_TOKEN"]
    assert len(token) >= 32

    stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    refused = _attach(gcs, stranger)
    assert "REFUSED" in refused.stdout and "ATTACHED" not in refused.stdout, refused.stdout + refused.stderr
    assert "InvalidAuthToken" in refused.stderr or "uthenticat" in refused.stdout, refused.stdout + refused.stderr
    wrong = _attach(gcs, dict(stranger, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64))
    assert "REFUSED" in wrong.stdout, wrong.stdout + wrong.stderr
    # the same driver with the session's token gets in: the refusals above were the token's
    holder = _attach(gcs, dict(stranger, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token))
    assert "ATTACHED 42" in holder.stdout, holder.stdout + holder.stderr[-2000:]

    # the token lived in the Ray processes' environment only: no file, nothing left here
    assert not (federation_watched["home"] / ".ray").exists()
    assert {k: os.environ.get(k) for k in federation_watched["env_before"]} == federation_watched["env_before"]
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTER == federation_watched["cluster_switch"]  # Ray's switch is back


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_leaving_the_local_ray_gives_the_process_back_its_own_ray_settings(federation_watched):
    assert federation._token_auth_supported()  # pyproject requires ray>=2.52
    from ray._raylet import AuthenticationMode, get_authentication_mode

    federation.shutdown_ray()
    if os.environ.get("RAY_AUTH_MODE", "disabled").lower() != "token":
        assert get_authentication_mode() == AuthenticationMode.DISABLED


# ---------------------------------------------------------------- federation.ray_address


@pytest.mark.parametrize("address", ["auto", "local", "127.0.0.1:6379", "ray://head.example:10001",
                                     "[::1]:6379", "node-1:65535"])
def test_ray_addresses_fl_sim_can_join_are_accepted(address):
    assert ray_address_problem(address) is None
    assert tiny_config(federation__ray_address=address).federation.ray_address == address


@pytest.mark.parametrize("address", ["not-an-address", "127.0.0.1", ":6379", "head:0", "head:99999",
                                     "ray://", "http://head:8265", "two words:1", "head:6379/x"])
def test_a_malformed_ray_address_is_refused_at_config_time(address):
    with pytest.raises(ConfigError, match="ray_address") as e:
        tiny_config(federation__ray_address=address)
    assert len(str(e.value).splitlines()) == 1


def test_a_malformed_ray_address_env_is_refused_with_one_line(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "not-an-address")
    with pytest.raises(federation.RayAddressError, match="^RAY_ADDRESS: 'not-an-address' is not a Ray address"):
        federation.join_ray_cluster(None, 2.0)


def test_the_connect_timeout_is_a_positive_bounded_number():
    assert tiny_config().federation.ray_connect_timeout_s == 30.0
    for bad in (0, -1, float("inf")):
        with pytest.raises(ConfigError, match="ray_connect_timeout_s"):
            tiny_config(federation__ray_connect_timeout_s=bad)


def fl_sim_run(*args, out: Path) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "fl_sim.cli", "run", "--out", str(out), "--no-progress"]
    for a in args:
        cmd += ["--set", a]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), time.time()


def _one_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "--resume" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.timeout(300)
def test_an_address_where_nothing_listens_fails_at_once_with_one_line(tmp_path):
    """Bad input, exit 2: the address names no cluster, nothing ran, and only a new address
    (or a started head) changes that. Before: more than 10 minutes of Ray retries."""
    p, t0 = fl_sim_run("federation.ray_address=127.0.0.1:1", "federation.ray_connect_timeout_s=2",
                       out=tmp_path / "run")
    _, err = p.communicate(timeout=240)
    # the bound is start-up (torch, Flower) plus the check; the check itself is instant
    assert p.returncode == 2 and time.time() - t0 < 120, err
    _one_line(err, "federation.ray_address=127.0.0.1:1", "connection refused")
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(300)
def test_a_malformed_address_fails_with_one_line_and_status_2(tmp_path):
    p, _ = fl_sim_run("federation.ray_address=not-an-address", out=tmp_path / "run")
    _, err = p.communicate(timeout=240)
    assert p.returncode == 2, err
    _one_line(err, "federation.ray_address", "'not-an-address' is not a Ray address")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never says a word (no Ray head behind it)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(180)
    yield srv
    srv.close()


def _accept(srv: socket.socket, n: int) -> list[socket.socket]:
    # the reachability check's connection, then Ray's own: the run is waiting on Ray now
    return [srv.accept()[0] for _ in range(n)]


@pytest.mark.timeout(300)
def test_a_port_that_is_no_ray_head_fails_within_the_connect_timeout(tmp_path, silent_port):
    port = silent_port.getsockname()[1]
    p, t0 = fl_sim_run(f"federation.ray_address=127.0.0.1:{port}", "federation.ray_connect_timeout_s=3",
                       out=tmp_path / "run")
    conns = _accept(silent_port, 2)
    waiting_since = time.time()
    _, err = p.communicate(timeout=240)
    assert p.returncode == 2, err
    assert time.time() - waiting_since < 3 + 15, err  # the bound, and the interpreter's exit
    _one_line(err, f"federation.ray_address=127.0.0.1:{port}", "within 3 s")
    assert not (tmp_path / "run").exists()
    for c in conns:
        c.close()


@pytest.mark.timeout(300)
def test_sigterm_stops_a_run_waiting_for_its_ray_cluster(tmp_path, silent_port):
    port = silent_port.getsockname()[1]
    p, _ = fl_sim_run(f"federation.ray_address=127.0.0.1:{port}", "federation.ray_connect_timeout_s=600",
                      out=tmp_path / "run")
    conns = _accept(silent_port, 2)
    time.sleep(1)
    sent = time.time()
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode != 0 and time.time() - sent < 10
    for c in conns:
        c.close()
