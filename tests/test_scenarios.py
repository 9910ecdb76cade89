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
