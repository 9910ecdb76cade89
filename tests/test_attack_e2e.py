"""End to end through Flower on Ray: the global passive attack beats chance on a target
that overfits (real Location-30, tiny federation)."""

import pytest

from fl_sim.experiment import run_experiment
from tests.conftest import SHARED_DATA, tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


@pytest.mark.skipif(not (SHARED_DATA / "location30" / "dataset_location.tgz").exists(),
                    reason=f"Location-30 not found under {SHARED_DATA} (../shared/data)")
def test_global_passive_attack_beats_chance_on_overfitting_federation(tmp_path):
    cfg = tiny_config(data__name="location30", data__root=str(SHARED_DATA),
                      data__records_per_participant=100, model__options={"widths": [128]},
                      federation__local_epochs=5, federation__rounds=4, federation__lr=0.1,
                      attack__epochs=[3, 4], attack__names=["global_passive"],
                      attack__epochs_attack_model=60)
    r = run_experiment(cfg, tmp_path / "run", progress=False)
    assert r["target"]["train_acc"] > r["target"]["test_acc"] + 0.2  # it does overfit
    a = r["attacks"][0]
    assert a["name"] == "global_passive" and a["n_members"] == a["n_nonmembers"] == 200
    assert a["accuracy"] > 0.6 and a["auc"] > 0.65, a
