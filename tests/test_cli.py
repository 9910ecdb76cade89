"""The command line as a user runs it (subprocesses of the installed entry point)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--set", "data.records_per_participant=30", "--set", "model.options.widths=[16]",
        "--set", "federation.batch_size=8", "--set", "attack.names=[]",
        "--set", "attack.epochs=[2]", "--no-progress"]


def fl_sim(*args, timeout=600, cwd=None):
    env = dict(os.environ, RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    return subprocess.run([sys.executable, "-m", "fl_sim.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_run_writes_results_with_target_accuracy(tmp_path):
    out = tmp_path / "run"
    # as a user runs it (stage lines on): stderr holds fl-sim's own lines only, no traceback
    # (the snapshot writer's once was) and no warning from Flower or Ray
    p = fl_sim("run", "--set", "federation.rounds=2", "--out", str(out), *TINY[:-1])
    assert p.returncode == 0, p.stderr[-2000:]
    foreign = [line for line in p.stderr.splitlines() if not line.startswith("fl-sim: ")]
    assert not foreign, p.stderr[-3000:]
    assert "fl-sim: passive rounds: 2 rounds" in p.stderr
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["target"]["train_acc"] <= 1.0
    assert 0.0 <= results["target"]["test_acc"] <= 1.0
    assert results["dataset"] == "digits" and results["seed"] == 0
    assert results["timing"]["total_s"] > 0
    assert (out / "config.yaml").is_file() and (out / "report.md").is_file()
    assert list((out / "figures").glob("*.png"))
    assert (out / "snapshots" / "passive" / "index.json").is_file()
    # never overwritten silently
    again = fl_sim("run", "--set", "federation.rounds=2", "--out", str(out), *TINY)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_missing_data_file_is_one_line_and_status_2(tmp_path):
    out = tmp_path / "run"
    p = fl_sim("run", "--set", "data.name=location30", "--set", f"data.root={tmp_path / 'nowhere'}",
               "--out", str(out), "--no-progress")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "location30" in lines[0] and "nowhere" in lines[0] and "expected" in lines[0]
    assert "Traceback" not in p.stderr
    assert not (out / "results.json").exists()


def test_validate_and_datasets():
    repo = Path(__file__).resolve().parents[1]
    ok = fl_sim("validate", str(repo / "configs" / "default.yaml"))
    assert ok.returncode == 0 and "ok" in ok.stdout
    ds = fl_sim("datasets", "--root", str(repo / "no-such-root"))
    assert ds.returncode == 0
    assert "digits" in ds.stdout and "location30" in ds.stdout and "missing" in ds.stdout


def test_version_list_and_help_explain_themselves(capsys):
    from fl_sim import catalog
    from fl_sim.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("fl-sim ")
    assert main(["list", "attacks"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == catalog.names() and len(listed) > 10
    for kind, must in (("defenses", "dp_sgd"), ("strategies", "fedprox"), ("models", "alexnet"),
                       ("datasets", "location30")):
        assert main(["list", kind]) == 0
        assert must in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 3)" in text and "(default: all)" in text and "examples:" in text
