"""Stand-alone and fine-tuning settings on real Location-30: the target overfits, the
white-box attacks beat chance, and two controls stay at chance.

One overfitting target (1,000 records, FC 256-128, 30 epochs) is trained once per module
and attacked several ways; the packaged configs run end to end, shrunk.
"""

import dataclasses
import json

import numpy as np
import pytest

from fl_sim.config import load_config
from fl_sim.experiment import run_experiment
from fl_sim.scenarios import run_attacks
from fl_sim.scenarios.common import AttackContext
from fl_sim.scenarios.standalone import TargetView, whitebox_attack
from fl_sim.snapshots import SnapshotStore
from fl_sim.standalone import finetune_sets, run_standalone, target_threads
from fl_sim.target import load_data, make_run_split
from tests.conftest import REPO, SHARED_DATA, tiny_config

LOCATION = SHARED_DATA / "location30" / "dataset_location.tgz"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not LOCATION.exists(),
                       reason=f"Location-30 not found at {LOCATION} (../shared/data)"),
]


def _cfg(**over):
    base = dict(data__name="location30", data__root=str(SHARED_DATA),
                data__records_per_participant=1000, model__options={"widths": [256, 128]},
                federation__mode="standalone", federation__participants=1,
                federation__rounds=30, federation__batch_size=32, federation__lr=0.1,
                federation__num_cpus=1, attack__epochs=[25, 30],
                attack__epochs_attack_model=30, attack__names=["standalone_whitebox"])
    base.update(over)
    return tiny_config(**base)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    cfg = _cfg()
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    run_dir = tmp_path_factory.mktemp("standalone")
    target = run_standalone(cfg, data, split, run_dir)
    return cfg, data, split, run_dir, target


def test_target_overfits_and_snapshots_are_stored(overfit):
    cfg, data, split, run_dir, target = overfit
    assert target["train_acc"] >= 0.98, target
    assert target["test_acc"] <= target["train_acc"] - 0.3, target
    store = SnapshotStore(run_dir / "snapshots" / "standalone")
    assert store.rounds("global") == [25, 30]  # attack epochs and the last one, nothing else
    assert all(e.participant is None for e in store.entries())


def test_supervised_whitebox_beats_chance(overfit):
    cfg, data, split, run_dir, _ = overfit
    (res,) = run_attacks(cfg, data, split, run_dir)
    assert res["name"] == "standalone_whitebox"
    assert res["epochs_used"] == [25, 30]
    assert res["n_members"] == res["n_nonmembers"] == 500
    assert res["accuracy"] > 0.60 and res["auc"] > 0.65, res
    assert set(res["tpr_at_fpr"]) == {"0.001", "0.01", "0.1"}


def test_unsupervised_beats_chance(overfit):
    cfg, data, split, run_dir, _ = overfit
    cfg = cfg.model_copy(update={"attack": cfg.attack.model_copy(
        update={"names": ["standalone_unsupervised"]})})
    (res,) = run_attacks(cfg, data, split, run_dir)
    assert res["name"] == "standalone_unsupervised"
    assert res["accuracy"] > 0.55, res


def test_control_members_never_trained_on(overfit, tmp_path):
    """A target that memorises OTHER records (shuffled labels): the records the attacker is
    judged on as "members" were never trained on, so the attack must sit at chance."""
    cfg, data, split, _, _ = overfit
    other = sorted(split.reference[:len(split.train[0])])
    assert not set(other) & set(split.train[0] + split.test)
    y = np.array(data.y).copy()
    y[other] = np.random.default_rng(1).permutation(y[other])
    shuffled = dataclasses.replace(data, y=y)
    target = run_standalone(cfg, shuffled, dataclasses.replace(split, train=[other]), tmp_path)
    assert target["train_acc"] > 0.8  # it did memorise its own (noise) training set
    (res,) = run_attacks(cfg, data, split, tmp_path)
    assert 0.4 <= res["accuracy"] <= 0.6 and 0.4 <= res["auc"] <= 0.6, res


def test_control_knowledge_labels_swapped_at_random(overfit):
    """The same attack trained on knowledge whose member/non-member labels carry no
    information: in each class, a random half of the labels is flipped.

    Two things make a single such run a poor null, both measured on this target:
    - a plain permutation of the labels correlates with membership by chance (about
      +-0.03), and because members' features (near-zero loss and gradients) separate them
      from non-members almost perfectly, the attack amplifies that into AUC 0.72 or 0.43;
    - even with exactly zero correlation the network learns a random function of the
      features, and members, which collapse to nearly one point, get nearly one score:
      24 single runs gave AUC 0.25 to 0.81 (mean 0.52, sd 0.16), accuracy 0.33 to 0.69.
    The null is therefore the mean over several draws, each paired with its complement
    (labels 1 - l, an equally likely draw): that mean must sit at chance (sd of the mean of
    4 pairs about 0.035), while the same attack with the true labels is far above it.
    """
    cfg, data, split, run_dir, _ = overfit
    accs, aucs = [], []
    with target_threads(cfg):
        t = TargetView(AttackContext(cfg, data, split, run_dir))
        k_idx, k_lab = t.known
        rounds = t.attack_rounds([])
        for s in range(4):
            rng = np.random.default_rng(100 + s)
            lab = k_lab.copy()
            for c in (0, 1):
                members_of_c = np.flatnonzero(k_lab == c)
                lab[rng.choice(members_of_c, len(members_of_c) // 2, replace=False)] = 1 - c
            assert abs(np.corrcoef(lab, k_lab)[0, 1]) < 1e-9
            for labels in (lab, 1 - lab):
                r = whitebox_attack(t, rounds, "nasr", (k_idx, labels), t.eval, t.seed + s)
                accs.append(r["accuracy"])
                aucs.append(r["auc"])
    assert 0.4 <= np.mean(accs) <= 0.6 and 0.4 <= np.mean(aucs) <= 0.6, (accs, aucs)


def test_names_of_other_modes_are_skipped_with_a_note(overfit, capsys):
    cfg, data, split, run_dir, _ = overfit
    cfg = cfg.model_copy(update={"attack": cfg.attack.model_copy(
        update={"names": ["finetune_d_vs_delta", "global_passive"]})})
    assert run_attacks(cfg, data, split, run_dir) == []
    err = capsys.readouterr().err
    assert "finetune_d_vs_delta" in err and "global_passive" in err and "skipped" in err


def _shrunk(config: str, *extra: str):
    return load_config(REPO / "configs" / config, [
        f"data.root={SHARED_DATA}", "data.records_per_participant=300",
        "model.options={widths: [64]}", "federation.rounds=10", "attack.epochs_attack_model=5",
        *extra])


def test_standalone_config_runs_end_to_end(tmp_path):
    cfg = _shrunk("standalone_location30.yaml", "attack.epochs=[10]", "attack.reference_models=1")
    assert cfg.federation.mode == "standalone"
    r = run_experiment(cfg, tmp_path / "run", progress=False)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    names = [a["name"] for a in on_disk["attacks"]]
    assert names == cfg.attack.names == [
        "standalone_whitebox", "standalone_unsupervised", "standalone_compact",
        "standalone_blackbox_shadow", "loss_threshold", "calibrated"]
    for a in on_disk["attacks"]:
        assert 0 <= a["accuracy"] <= 1 and 0 <= a["auc"] <= 1, a
        assert set(a["tpr_at_fpr"]) == {"0.001", "0.01", "0.1"}
        assert a["n_members"] == a["n_nonmembers"] == 150
    assert r["target"]["train_acc"] > r["target"]["test_acc"]
    assert on_disk["mode"] == "standalone"


def test_finetune_config_runs_end_to_end(tmp_path):
    cfg = _shrunk("finetune_location30.yaml", "federation.finetune_epochs=3")
    assert cfg.federation.mode == "finetune"
    r = run_experiment(cfg, tmp_path / "run", progress=False)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    got = {a["name"]: a for a in on_disk["attacks"]}
    assert list(got) == ["finetune_d_vs_delta", "finetune_d_vs_nonmembers",
                         "finetune_delta_vs_nonmembers", "standalone_whitebox"]
    # 300 records: D = 180, D_delta = 120; each cut in halves (known / eval)
    assert got["finetune_d_vs_delta"]["n_members"] == got["finetune_d_vs_delta"]["n_nonmembers"] == 60
    assert got["finetune_d_vs_nonmembers"]["n_members"] == 90
    assert got["finetune_delta_vs_nonmembers"]["n_members"] == 60
    assert "D_delta" in got["finetune_d_vs_delta"]["sets"]
    for key in ("train_acc", "test_acc", "train_acc_d", "train_acc_delta"):
        assert 0 <= r["target"][key] <= 1

    saved = json.loads((tmp_path / "run" / "finetune_split.json").read_text())
    from fl_sim.splits import Split

    split = Split.load(tmp_path / "run" / "split.json")
    assert sorted(saved["d"] + saved["delta"]) == sorted(split.train[0])
    assert not set(saved["d"]) & set(saved["delta"])
    assert len(saved["delta"]) == 120
    assert saved == {**saved, **finetune_sets(cfg, split)}  # a pure function of split + seed
    store = SnapshotStore(tmp_path / "run" / "snapshots" / "finetune")
    assert store.rounds("global") == [1, 2]
    before, after = store.get(1, None, "global"), store.get(2, None, "global")
    assert any(not np.array_equal(before[k], after[k]) for k in before)
