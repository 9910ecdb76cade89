"""Faults a long experiment must survive: a participant that raises, a SIGKILL mid-run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fl_sim.cli import main
from fl_sim.experiment import run_experiment
from fl_sim.snapshots import SnapshotStore
from tests.conftest import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def test_failing_participant_does_not_stop_the_run(tmp_path):
    cfg = tiny_config(federation__rounds=3, federation__fail={2: [1]},
                      attack__names=["global_compact"], attack__epochs=[2, 3])
    results = run_experiment(cfg, tmp_path / "run", progress=False)
    fails = results["failures"]
    assert [(f["round"], f["participant"]) for f in fails] == [(2, 1)]
    assert "fails in round 2" in fails[0]["reason"]
    s = SnapshotStore(tmp_path / "run" / "snapshots" / "passive")
    assert s.find(2, 1, "upload") is None and s.find(3, 1, "upload") is not None
    # round 2 aggregated the replies that came
    glob = s.get(2, None, "global")
    ups = [(s.find(2, p, "upload").num_examples, s.get(2, p, "upload")) for p in (0, 2, 3)]
    total = sum(w for w, _ in ups)
    for k in glob:
        mean = sum(w * u[k].astype(np.float64) for w, u in ups) / total
        assert np.max(np.abs(mean - glob[k])) < 1e-6
    # the attack that needed the missing snapshot says so and used the epochs that exist
    att = results["attacks"][0]
    assert att["epochs_used"]["1"] == [3] and att["epochs_used"]["0"] == [2, 3]
    assert any("participant 1 in round 2" in n for n in att["notes"])
    assert json.loads((tmp_path / "run" / "results.json").read_text())["failures"] == fails


def _cli(*args, **kw):
    env = dict(os.environ, RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    return subprocess.Popen([sys.executable, "-m", "fl_sim.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


ARGS = ["--set", "data.records_per_participant=30", "--set", "model.options.widths=[16]",
        "--set", "federation.batch_size=8", "--set", "federation.rounds=30",
        "--set", "federation.num_cpus=0.5", "--set", "attack.names=[global_isolating]",
        "--set", "attack.epochs_attack_model=5",
        "--set", "attack.epochs=[30]", "--no-progress"]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = _cli("run", "--out", str(killed), *ARGS, start_new_session=True)
    # kill it while the isolating federation (the second one) is half-way: resuming must
    # keep isolating the victim although Flower's node ids change with the new simulation
    index = killed / "snapshots" / "global_isolating" / "index.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        # by default only the kept rounds and the latest aggregate stay: resume starts there
        if index.exists() and 3 <= max(SnapshotStore(index.parent).rounds("global"), default=0) < 30:
            break
        if proc.poll() is not None:
            pytest.fail("run ended before it could be killed: " + proc.stderr.read()[-1000:])
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray processes, no clean-up
    proc.wait()
    done = SnapshotStore(index.parent).rounds("global")
    assert 3 <= max(done) < 30 and not (killed / "results.json").exists()

    resumed = _cli("run", "--resume", str(killed))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    # the uninterrupted reference: the same command, in this process (warm Ray actors)
    assert main(["run", "--out", str(whole), *ARGS]) == 0

    for setting in ("passive", "global_isolating"):
        a = SnapshotStore(killed / "snapshots" / setting).entries()
        b = SnapshotStore(whole / "snapshots" / setting).entries()
        assert [(e.file, e.sha256) for e in a] == [(e.file, e.sha256) for e in b], setting
    iso = SnapshotStore(killed / "snapshots" / "global_isolating")
    assert iso.find(30, 0, "sent") is not None  # the victim was isolated after the resume
    ra = json.loads((killed / "results.json").read_text())
    rb = json.loads((whole / "results.json").read_text())
    assert ra["target"] == rb["target"] and ra["attacks"] == rb["attacks"]
