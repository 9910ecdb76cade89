"""fl-sim patches private pieces of Flower's simulation engine (message polling, the Ray
backend's actors) for the release they were written for; with any other Flower it runs
Flower's own engine, unpatched, and says once what is slower."""

import re
import tomllib

import pytest

from fl_sim import federation
from tests.conftest import REPO, tiny_config

_installed = federation.installed_flower


@pytest.mark.parametrize("version, patched", [("1.42.0", True), ("1.42.7", True), ("1.42.1rc1", True),
                                              ("1.41.2", False), ("1.43.0", False), ("2.0.0", False)])
def test_the_patches_apply_to_the_release_they_were_written_for_only(version, patched):
    assert federation.flower_patches_apply(version) is patched


def test_pyproject_pins_the_patched_flower_range_and_the_installed_one_is_in_it():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    flwr = next(d for d in deps if d.startswith("flwr"))
    low, high = federation.PATCHED_FLOWER
    assert re.search(rf">={re.escape(low)}\b", flwr) and re.search(rf"<{re.escape(high)}\b", flwr), flwr
    assert federation.flower_patches_apply()


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_outside_the_range_flower_runs_unpatched_with_one_warning(tmp_path, capsys, monkeypatch):
    import flwr.simulation
    import ray
    from flwr.superlink.grid import InMemoryGrid

    from fl_sim.experiment import run_experiment
    from fl_sim.snapshots import SnapshotStore

    flowers_own, flowers_run = InMemoryGrid.__init__, flwr.simulation.run_simulation
    unpatched = []

    def run_simulation(**kwargs):  # whether Flower's grid is its own while a federation runs
        unpatched.append(InMemoryGrid.__init__ is flowers_own)
        return flowers_run(**kwargs)

    monkeypatch.setattr(flwr.simulation, "run_simulation", run_simulation)
    cfg = tiny_config(attack__names=["global_passive"], attack__epochs_attack_model=3)
    # a process that already keeps actors (as after other federations): Flower's own engine
    # must not wait for the CPUs they hold
    run_experiment(cfg, tmp_path / "before", progress=False)
    assert federation._KEPT.get("pool") is not None and unpatched == [False]
    unpatched.clear()
    capsys.readouterr()
    monkeypatch.setattr(federation, "installed_flower", lambda: "1.43.0")
    monkeypatch.setattr(federation, "_WARNED", set())
    results = run_experiment(cfg, tmp_path / "unpatched", progress=False)
    err = capsys.readouterr().err.splitlines()
    warned = [line for line in err if "Flower 1.43.0" in line]
    assert len(warned) == 1 and warned[0].startswith("fl-sim: warning:") and "0.1 s" in warned[0]
    assert "pool" not in federation._KEPT and not ray.is_initialized()   # Flower's backend shut it down
    store = SnapshotStore(tmp_path / "unpatched" / "snapshots" / "passive")
    assert len(store.rounds("upload")) == 2 and 0 <= results["attacks"][0]["auc"] <= 1
    assert unpatched == [True]

    monkeypatch.setattr(federation, "installed_flower", _installed)
    # the installed, patched-for release: no warning, the patches on, the actors kept
    results2 = run_experiment(cfg, tmp_path / "patched", progress=False)
    assert unpatched == [True, False]
    assert not [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert federation._KEPT.get("pool") is not None
    # same seed, same numbers, whichever engine moved the messages
    assert results2["target"] == results["target"]
