"""Flower's own runtime runs the same apps (fl_sim.flower_app, docs/flower-runtime.md):

- ``flwr run .`` in Flower's simulation runtime (the local SuperLink ``flwr`` starts itself);
- a deployment: one SuperLink and 4 SuperNodes as separate processes on loopback
  (insecure), ``flwr run . <connection>``.

Each runs the tiny config for 2 rounds and checks the snapshots and the FedAvg identity.
Every process a test started, and everything those started (the background SuperLink,
SuperExecs, ServerApp/ClientApp processes, Ray), is stopped by process id; FLWR_HOME is a
temporary directory, never the user's. Linux only: the processes are found in /proc.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_sim.config import dump_config
from fl_sim.io import read_json
from fl_sim.snapshots import SnapshotStore
from tests.conftest import REPO, tiny_config


def runtime(test):
    """The marks of the two tests that start Flower's processes (the first tests below are
    fast and start none)."""
    for mark in (pytest.mark.ray, pytest.mark.timeout(900),
                 pytest.mark.skipif(not sys.platform.startswith("linux"),
                                    reason="finds the processes it started in /proc")):
        test = mark(test)
    return test


BIN = Path(sys.executable).parent
ROUNDS, PARTICIPANTS = 2, 4
CLI_TIMEOUT_S = 600          # `flwr run --stream` returns when the run is over
# one CPU per participant (Flower's simulation config takes whole CPUs: no 0.5): on 2 cores two
# participants train at a time, and only two Ray actors pay the start-up
SIMULATION = f"num-supernodes={PARTICIPANTS} client-resources-num-cpus=1"


# ---------------------------------------------------------------- processes
def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) of every process."""
    table = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            table[int(d.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _family(roots: set[int]) -> set[int]:
    """``roots``, their descendants and the members of process groups they lead."""
    table = _proc_table()
    ours = {p for p in roots if p in table}
    while new := {p for p, (ppid, pgid, _) in table.items()
                  if p not in ours and (ppid in ours or pgid in ours)}:
        ours |= new
    return ours


def _alive(pids: set[int]) -> set[int]:
    table = _proc_table()
    return {p for p in pids if p in table and table[p][2] != "Z"}


def _pids_with_args(*parts: str) -> set[int]:
    """Processes whose command line contains every one of ``parts``."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                args = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if all(any(part in a for a in args) for part in parts):
                out.add(int(d.name))
    return out


class Processes:
    """The processes a test starts (each in a new session, output to a log file), stopped
    with everything they started, by process id."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir, self.env = log_dir, env
        self.popen: dict[str, subprocess.Popen] = {}
        self.roots: set[int] = set()

    def start(self, name: str, args: list) -> subprocess.Popen:
        with open(self.log(name), "wb") as out:
            p = subprocess.Popen([str(a) for a in args], cwd=REPO, env=self.env, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.popen[name] = p
        self.roots.add(p.pid)
        return p

    def adopt(self, pids: set[int]) -> None:
        """Processes started for us by another one (``flwr run``'s background SuperLink)."""
        self.roots |= pids

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def tails(self, extra: list[Path] = (), n: int = 3000) -> str:
        out = []
        for path in [self.log(name) for name in self.popen] + list(extra):
            if path.is_file():
                out.append(f"----- {path.name} (last {n} characters)\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(out)

    def stop(self, grace_s: float = 15.0) -> set[int]:
        """SIGTERM to the whole family, SIGKILL to what is left after ``grace_s``; returns
        the pids that were still alive at the end (none, normally)."""
        seen: set[int] = set()
        deadline = time.monotonic() + grace_s
        sig = signal.SIGTERM
        while True:
            family = _alive(_family(self.roots | seen))
            seen |= family
            for pid in family:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            for p in self.popen.values():   # reap our own children
                p.poll()
            if not _alive(seen):
                return set()
            if sig == signal.SIGKILL and time.monotonic() > deadline + 10:
                return _alive(seen)
            if time.monotonic() > deadline:
                sig = signal.SIGKILL
            time.sleep(0.5)


def free_port(taken: set[int]) -> int:
    """A free loopback port below Linux's ephemeral range (32768+), where Ray's many
    short-lived sockets on a busy machine do not grab it between the check and its use."""
    while True:
        port = random.randint(20000, 32000)
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port


def flower_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",   # flwr starts flower-superlink etc. by name
        "FLWR_HOME": str(home),                              # never the user's ~/.flwr
        # the SuperLink would otherwise `uv sync` the app's dependencies into a new environment
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_ADDRESS": "local",     # a Ray of the simulation's own, not another cluster on the machine
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def write_tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_config(tiny_config(federation__rounds=5)))   # rounds: the run config's
    return path


def run_config(config: Path, run_dir: Path) -> str:
    # absolute paths: the ServerApp runs in the SuperLink's working directory
    return f"config='{config}' run-dir='{run_dir}' rounds={ROUNDS}"


# ---------------------------------------------------------------- checks
def check_federation(run_dir: Path, why: str) -> None:
    """2 rounds stored, an upload per participant per round, and FedAvg's aggregate."""
    status = read_json(run_dir / "status.json") if (run_dir / "status.json").exists() else None
    assert status is not None and status["state"] == "trained", f"status {status}\n{why}"
    assert status["trained"] == ["passive"]
    store = SnapshotStore(run_dir / "snapshots" / "passive")
    assert store.verify() == []
    assert store.rounds("global") == list(range(1, ROUNDS + 1)), why
    for r in range(1, ROUNDS + 1):
        ups = []
        for p in range(PARTICIPANTS):
            entry = store.find(r, p, "upload")
            assert entry is not None, f"round {r}: no upload of participant {p}\n{why}"
            ups.append((entry.num_examples, store.get(r, p, "upload")))
        assert [w for w, _ in ups] == [30] * PARTICIPANTS
        total = sum(w for w, _ in ups)
        glob = store.get(r, None, "global")
        assert set(glob) == set(ups[0][1])
        for k in glob:
            mean = sum(w * u[k].astype(np.float64) for w, u in ups) / total
            assert np.max(np.abs(mean - glob[k])) < 1e-6, f"round {r}, {k}: not the FedAvg mean"
    # the run directory is fl-sim's: its config says the rounds it ran
    assert f"rounds: {ROUNDS}" in (run_dir / "config.yaml").read_text()


def flwr_run(procs: Processes, args: list[str]) -> str:
    """``flwr run ... --stream`` (returns when the run is over); its output."""
    p = procs.start("flwr-run", [BIN / "flwr", "run", ".", *args, "--stream"])
    try:
        p.wait(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run did not return in {CLI_TIMEOUT_S} s\n{procs.tails()}")
    # `flwr run` exits 0 even when the ServerApp raised: the caller checks the results
    return procs.log("flwr-run").read_text(errors="replace")


# ---------------------------------------------------------------- fast tests
def _train_message(arrays: dict, config: dict):
    from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

    return Message(content=RecordDict({"arrays": ArrayRecord({k: torch.from_numpy(v) for k, v in arrays.items()}),
                                       "config": ConfigRecord(config)}),
                   metadata=Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                                     group_id="1", created_at=0.0, ttl=600.0, message_type="train"))


def test_the_runtime_client_app_finds_its_plan_in_the_message_and_applies_the_mods_per_call(tmp_path):
    """The module-level ClientApp replies exactly as the simulation engine's (one handler),
    with the plan's client-side defense mod (local DP noise) applied, the local attacker's
    plan read by the participant it names only."""
    from flwr.app import Context, RecordDict

    from clients.participant import make_client_app, train_reply
    from fl_sim.catalog import TRAININGS
    from fl_sim.federated import write_plans
    from fl_sim.flower_app import clientapp
    from fl_sim.records import PLAN_KEY, RUN_DIR_KEY, record_to_arrays
    from fl_sim.target import initial_arrays, load_data, make_run_split

    cfg = tiny_config(defense__name="local_dp", defense__clipping_norm=1e6)
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    name = "local_gradient_ascent"
    plan_path, attackers = write_plans(cfg, TRAININGS[name], data, split, tmp_path, name)
    assert list(attackers) == [3]
    start = initial_arrays(cfg, data)

    def upload(app, pid, **config):
        ctx = Context(run_id=1, node_id=1, node_config={"partition-id": pid}, state=RecordDict(), run_config={})
        reply = app(_train_message(start, {"server-round": 1, **config}), ctx)
        assert not reply.has_error(), reply.error
        return record_to_arrays(reply.content["arrays"])

    closure = make_client_app(str(plan_path), attackers)
    keys = {RUN_DIR_KEY: str(tmp_path), PLAN_KEY: name}
    for pid in (0, 3):    # an honest participant, the local attacker
        a, b = upload(closure, pid), upload(clientapp, pid, **keys)
        assert all(np.array_equal(a[k], b[k]) for k in start), pid
    # the mod acted: the handler alone (no mods) uploads the noise-free model
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    bare = record_to_arrays(train_reply(_train_message(start, {"server-round": 1}), ctx, plan_path, {})
                            .content["arrays"])
    noisy = upload(clientapp, 0, **keys)
    assert not any(np.array_equal(bare[k], noisy[k]) for k in start)
    # without the keys the runtime app cannot know its plan: a failed reply, not a guess
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    with pytest.raises(Exception, match="fl-sim.run-dir"):
        clientapp(_train_message(start, {"server-round": 1}), ctx)


def test_run_config_settings_and_paths():
    from fl_sim.errors import FlSimError
    from fl_sim.flower_app import APP_DIR, DEFAULTS, config_path, settings_of

    s = settings_of(dict(DEFAULTS, training="passive, global_isolating", set="seed=3; federation.lr=0.1"))
    assert s.trainings == ["passive", "global_isolating"] and s.overrides == ["seed=3", "federation.lr=0.1"]
    assert s.rounds == 0 and not s.resume
    # relative configs are the app's own (the FAB carries configs/), "" the packaged default
    assert config_path("configs/default.yaml") == APP_DIR / "configs" / "default.yaml"
    assert (APP_DIR / "pyproject.toml").is_file() and config_path("") is None
    for bad, message in (({"rounds": -1}, "rounds"), ({"colour": "red"}, "unknown keys colour"),
                         ({"resume": True, "run-dir": "/x", "rounds": 3}, "own config"),
                         ({"resume": True}, "needs run-dir")):
        with pytest.raises(FlSimError, match=message):
            settings_of(bad)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # pathspec's, inside Flower's build
def test_pyproject_declares_the_apps_and_the_fab_holds_the_code_not_the_tests():
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_files
    from flwr.cli.config_utils import load_and_validate

    config, _ = load_and_validate(REPO / "pyproject.toml")   # checks the components exist
    app = config["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "fl_sim.flower_app:serverapp",
                                 "clientapp": "fl_sim.flower_app:clientapp"}
    assert set(app["config"]) == {"config", "run-dir", "training", "rounds", "set", "resume"}
    # the files git tracks (what CI has), as `flwr build` / `flwr run` would pack them
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True)
    assert listed.returncode == 0, f"the tests run in a git checkout (as CI's clone): {listed.stderr}"
    tracked = listed.stdout.split()
    fab, _ = build_fab_from_files({f: REPO / f for f in tracked if (REPO / f).is_file()})
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert "fl_sim/flower_app.py" in names and "configs/default.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/", "bench/", "deploy/", ".venv/"))]
    assert len(fab) < 2_000_000


# ---------------------------------------------------------------- Flower's runtime
@runtime
def test_flwr_run_in_the_simulation_runtime(tmp_path):
    """``flwr run .`` with Flower's default local connection: flwr starts a SuperLink in
    simulation mode in the background (FLWR_HOME/local-superlink/), which the test stops."""
    from fl_sim.experiment import run_experiment
    from fl_sim.flower_app import settings_of, train_on_grid

    t0 = time.monotonic()
    home, run_dir, taken = tmp_path / "flwr-home", tmp_path / "run", set()
    superlink_log = home / "local-superlink" / "superlink.log"
    config = write_tiny_config(tmp_path)
    procs = None
    try:
        for _attempt in range(3):   # the local SuperLink may lose its port or miss flwr's 15 s start-up limit
            procs = Processes(tmp_path, flower_env(
                home, FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port(taken)),
                FLWR_LOCAL_CONTROL_API_PORT=str(free_port(taken))))
            try:
                out = flwr_run(procs, ["--run-config", run_config(config, run_dir),
                                       "--federation-config", SIMULATION])
            finally:
                procs.adopt(_pids_with_args("flower-superlink", str(superlink_log)))
            if "Failed to start local SuperLink" not in out:
                break
            assert not procs.stop(), "processes survived"
        why = procs.tails([superlink_log])
        assert "Successfully started run" in out, why
        check_federation(run_dir, why)
    finally:
        if procs is not None:
            left = procs.stop()
            assert not left, f"processes survived: {sorted(left)}"
    print(f"flwr run, simulation runtime: {time.monotonic() - t0:.0f} s")

    # the ServerApp's own resume finds every round done and does not touch the grid
    before = SnapshotStore(run_dir / "snapshots" / "passive").entries()
    train_on_grid(None, settings_of({"resume": True, "run-dir": str(run_dir)}))
    assert read_json(run_dir / "status.json")["state"] == "trained"
    # fl-sim run --resume finds the training done and goes on to the attacks and the report
    results = run_experiment(None, run_dir, resume=True, progress=False)
    assert SnapshotStore(run_dir / "snapshots" / "passive").entries() == before   # no round retrained
    assert (run_dir / "results.json").is_file() and "train_acc" in results["target"]
    assert read_json(run_dir / "status.json")["state"] == "complete"


@runtime
def test_flower_deployment_superlink_and_4_supernodes(tmp_path):
    """A SuperLink and 4 SuperNodes on loopback (insecure), each SuperNode one participant
    (``--node-config partition-id=I``); ``flwr run . deployment`` runs the same apps."""
    t0 = time.monotonic()
    home, run_dir, taken = tmp_path / "flwr-home", tmp_path / "run", set()
    home.mkdir()
    config = write_tiny_config(tmp_path)
    procs = Processes(tmp_path, flower_env(home))
    try:
        port = _start_superlink(procs, taken)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "deployment"\n\n[superlink.deployment]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n')
        _start_supernodes(procs, port, taken)
        run_app_and_check(procs, "deployment", config, run_dir)
    finally:
        left = procs.stop()
        assert not left, f"processes survived: {sorted(left)}"
    print(f"Flower deployment: {time.monotonic() - t0:.0f} s")


def run_app_and_check(procs: Processes, connection: str, config, run_dir: Path) -> None:
    """``flwr run`` the fl-sim app on ``connection`` and check the federation it trained."""
    out = flwr_run(procs, [connection, "--run-config", run_config(config, run_dir)])
    why = procs.tails()
    assert "Successfully started run" in out, why
    check_federation(run_dir, why)


def _start_superlink(procs: Processes, taken: set[int], timeout_s: float = 120,
                     security: tuple = ("--insecure",), ca: Path | None = None) -> int:
    """``flower-superlink`` (deployment mode) on a free port; returns the port once it
    answers (a new port when it lost the one it was given). ``security``: its TLS and
    authentication arguments; ``ca``: the certificate authority it is checked against
    (``None``: plain HTTP)."""
    import ssl

    import httpx

    url, verify = ("https", ssl.create_default_context(cafile=str(ca))) if ca else ("http", True)
    for attempt in range(3):
        port = free_port(taken)
        p = procs.start(f"superlink-{attempt}", [
            BIN / "flower-superlink", *security, "--host", "127.0.0.1", "--port", port,
            "--disable-runtime-dependency-installation"])
        deadline = time.monotonic() + timeout_s
        while p.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}://127.0.0.1:{port}/health", timeout=1, verify=verify).is_success:
                    return port
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        if p.poll() is None:
            pytest.fail(f"flower-superlink did not answer in {timeout_s} s\n{procs.tails()}")
    pytest.fail(f"flower-superlink did not start\n{procs.tails()}")


def _start_supernodes(procs: Processes, port: int, taken: set[int], timeout_s: float = 180,
                      security=lambda i: ["--insecure"]) -> None:
    """One ``flower-supernode`` per participant; returns once each has registered with
    the SuperLink (one that died, e.g. on a taken port, is started again on another).
    ``security(i)``: participant i's TLS and authentication arguments."""
    nodes = {}

    def start(i: int, attempt: int) -> None:
        name = f"supernode{i}-{attempt}"
        nodes[i] = (name, procs.start(name, [
            BIN / "flower-supernode", *security(i), "--superlink", f"127.0.0.1:{port}",
            "--node-config", f"partition-id={i} num-partitions={PARTICIPANTS}",
            "--host", "127.0.0.1", "--port", free_port(taken)]), attempt)

    for i in range(PARTICIPANTS):
        start(i, 0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = False
        for i, (name, p, attempt) in list(nodes.items()):
            if p.poll() is not None:
                assert attempt < 2, f"flower-supernode {i} keeps dying\n{procs.tails()}"
                start(i, attempt + 1)
                waiting = True
            elif "SuperNode ID:" not in procs.log(name).read_text(errors="replace"):
                waiting = True
        if not waiting:
            return
        time.sleep(0.5)
    pytest.fail(f"the SuperNodes did not connect in {timeout_s} s\n{procs.tails()}")
