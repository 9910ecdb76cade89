import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FL_SIM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # keep the parse-once caches of tests away from the user's ~/.cache, but share them
    # across one session so the real data sets are parsed once
    if "FL_SIM_CACHE" not in os.environ:
        monkeypatch.setenv("FL_SIM_CACHE", str(tmp_path_factory.getbasetemp() / "fl-sim-cache"))
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def tiny_config(**over):
    """A config for fast end-to-end runs: digits, 4 x 30 records, a small FC net."""
    from fl_sim.config import config_from_dict

    tree = {
        "seed": 0,
        "data": {"name": "digits", "records_per_participant": 30},
        "model": {"name": "fc", "options": {"widths": [16]}},
        "federation": {"participants": 4, "rounds": 2, "batch_size": 8, "lr": 0.1,
                       "num_cpus": 0.5, "round_timeout_s": 120},
        "attack": {"names": [], "epochs": [2]},
    }
    for key, value in over.items():
        node = tree
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return config_from_dict(tree)
