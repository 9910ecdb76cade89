"""The scenario catalog is the one place a threat model is declared: a new attack is one
registration, and the config validator, the runner and the results all pick it up."""

import numpy as np
import pytest

from attacks.base import MembershipAttack
from attacks.metrics import choose_threshold
from fl_sim import catalog
from fl_sim.config import load_config
from fl_sim.errors import ConfigError
from fl_sim.experiment import run_experiment
from tests.conftest import tiny_config


class ToyLoss(MembershipAttack):
    """Minus the last snapshot's loss: the loss-threshold attack, written from outside."""

    def fit(self, features, is_member=None):
        self.threshold_ = choose_threshold(self.score_samples(features), is_member)
        return self

    def score_samples(self, features):
        return -np.asarray(features[-1].loss, dtype=np.float64)


@pytest.fixture
def toy():
    scenario = catalog.register(catalog.Scenario(
        "toy_loss", modes=("standalone",), observer="target", targets="target",
        attack=lambda cfg, seed: ToyLoss(), snapshots="final", defenses=("none",)))
    yield scenario
    catalog.unregister("toy_loss")


def test_a_toy_attack_takes_one_registration(toy, tmp_path):
    cfg = tiny_config(federation__mode="standalone", federation__participants=1,
                      federation__rounds=8, data__records_per_participant=200,
                      attack__epochs=[8], attack__names=["toy_loss", "loss_threshold"])
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    got = {a["name"]: a for a in res["attacks"]}
    assert list(got) == ["toy_loss", "loss_threshold"]
    # the same records, snapshot and threshold rule as the built-in it imitates
    for key in ("accuracy", "auc", "tpr_at_fpr", "n_members", "n_nonmembers"):
        assert got["toy_loss"][key] == got["loss_threshold"][key], key
    assert got["toy_loss"]["n_members"] == 100


def test_unknown_names_are_refused_until_registered(toy):
    load_config(None, ["attack.names=[toy_loss]"])
    catalog.unregister("toy_loss")
    with pytest.raises(ConfigError, match="toy_loss"):
        load_config(None, ["attack.names=[toy_loss]"])


def test_every_scenario_is_runnable_and_its_training_known():
    from fl_sim.scenarios import FEDERATED_EVALUATORS, TARGET_EVALUATORS

    for name in catalog.names():
        s = catalog.get(name)
        for mode in s.modes:
            assert s.training_for(mode).mode == mode, name
            table = FEDERATED_EVALUATORS if mode == "federated" else TARGET_EVALUATORS
            key = (s.evaluate, s.observer) if mode == "federated" else s.evaluate
            assert key in table, (name, key)


def test_trainings_follow_the_attacks():
    names = ["global_passive", "global_isolating", "local_gradient_ascent", "local_passive"]
    got = [t.name for t in catalog.trainings_needed(names, "federated")]
    assert got == ["passive", "global_isolating", "local_gradient_ascent"]
    assert [t.name for t in catalog.trainings_needed(["loss_threshold"], "finetune")] == ["finetune"]


def test_a_defense_a_scenario_refuses_is_a_config_error():
    with pytest.raises(ConfigError, match="dp_sgd"):
        load_config(None, ["federation.mode=standalone", "defense.name=dp_sgd",
                           "attack.names=[standalone_whitebox]"])


def test_compare_puts_passive_and_active_on_the_victims_records():
    from fl_sim.compare import tabulate

    def metrics(acc):
        return {"accuracy": acc, "auc": acc, "tpr_at_fpr": {"0.001": 0.0, "0.01": 0.1, "0.1": 0.2},
                "n_members": 10, "n_nonmembers": 10}

    seed = {"dataset": "digits", "model": "fc", "settings": {
        "passive": {"train_acc": 1.0, "test_acc": 0.9},
        "global_isolating": {"train_acc": 1.0, "test_acc": 0.8}}, "attacks": [
        {"name": "global_passive", **metrics(0.6), "target": "mean over participants",
         "on_victim": {"participants": [0], **metrics(0.7)}},
        {"name": "global_isolating", **metrics(0.9), "target": "participant 0",
         "judged_on": "the victims' records"},
        {"name": "local_passive", **metrics(0.55), "target": "union of the other participants' data"},
        {"name": "loss_threshold", "skipped": "not federated"}]}
    md, _ = tabulate([seed], ["global_passive", "global_isolating", "local_passive", "loss_threshold"])
    victim = md.split("On the victim's records")[1]
    assert "| global_passive | 70.0 ± 0.0 |" in victim        # its on_victim part, not the mean
    assert "| global_isolating | 90.0 ± 0.0 |" in victim
    assert "local_passive" not in victim                        # not judged on the victim


def test_victim_rotation_gives_one_federation_per_victim():
    from fl_sim.catalog import TRAININGS
    from fl_sim.compare import rotating
    from fl_sim.federated import runs_of

    cfg = load_config(None, ["attack.victims=all"])
    runs = runs_of(cfg, TRAININGS["global_isolating"])
    assert [n for n, _ in runs] == [f"global_isolating-victim{v}" for v in range(4)]
    assert [c.attack.target_participant for _, c in runs] == [0, 1, 2, 3]
    assert [n for n, _ in runs_of(cfg, TRAININGS["passive"])] == ["passive"]  # nothing to rotate
    plain = load_config(None)
    assert runs_of(plain, TRAININGS["global_isolating"]) == [("global_isolating", plain)]
    # compare rotates unless the config chose its victims
    assert rotating(plain).victims() == [0, 1, 2, 3]
    chosen = load_config(None, ["attack.victims=[2]"])
    assert rotating(chosen).victims() == [2]


def test_isolation_window_defaults_to_the_first_observed_epoch():
    cfg = load_config(None, ["federation.rounds=10", "attack.isolate_from=null"])
    assert cfg.attack_epochs() == [4, 6, 8, 9, 10] and cfg.isolate_rounds() == list(range(4, 11))
    assert load_config(None, ["attack.isolate_from=3"]).isolate_rounds()[0] == 3
    assert load_config(None, ["attack.isolate_rounds=[3, 5]"]).isolate_rounds() == [3, 5]


def test_boosted_local_ascent_scales_only_the_ascent_step():
    from clients.local_attacker import boosted

    before = {"w": np.array([1.0, 2.0], dtype=np.float32), "n": np.array(3, dtype=np.int64)}
    after = {"w": np.array([1.5, 1.0], dtype=np.float32), "n": np.array(3, dtype=np.int64)}
    out = boosted(before, after, 4.0)
    np.testing.assert_allclose(out["w"], [3.0, -2.0])
    assert out["w"].dtype == np.float32 and out["n"] == 3 and out["n"].dtype == np.int64
    assert boosted(before, after, 1.0) is after
