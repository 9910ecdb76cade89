"""fl-sim compare keeps what its epoch-set study needs and, when asked, only that."""

import json
from pathlib import Path

import pytest

from fl_sim.compare import keeping_epoch_sets, run_compare
from fl_sim.federated import keep_rounds
from fl_sim.snapshots import SnapshotStore
from tests.conftest import tiny_config


def test_epoch_sets_extend_the_kept_rounds():
    cfg = tiny_config(federation__rounds=10, federation__keep_rounds="attack", attack__epochs=[8, 10])
    kept = keeping_epoch_sets(cfg, [[2, 4]])
    assert set(keep_rounds(cfg)) < set(keep_rounds(kept))
    assert {1, 2, 3, 4, 5, 7, 8, 9, 10, 11} <= set(keep_rounds(kept))
    assert keeping_epoch_sets(cfg, None) is cfg
    every = tiny_config(federation__rounds=10, federation__keep_rounds="all", attack__epochs=[8, 10])
    assert keeping_epoch_sets(every, [[2]]) is every


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_compare_drops_active_snapshots_and_studies_the_epoch_sets(tmp_path):
    cfg = tiny_config(federation__rounds=3, federation__keep_rounds="attack", attack__epochs=[3],
                      attack__names=["global_passive", "global_gradient_ascent"], attack__victims=[0])
    out = run_compare(cfg, 1, tmp_path / "cmp", progress=False, epoch_sets=[[1], [3]], keep_snapshots="passive")
    seed = out / "seed-0"
    assert sorted(d.name for d in (seed / "snapshots").iterdir()) == ["passive"]
    assert SnapshotStore(seed / "snapshots" / "passive").find(1, 0, "upload") is not None  # for epoch set [1]
    results = json.loads((seed / "results.json").read_text())
    assert {a["name"] for a in results["attacks"] if "auc" in a} == {"global_passive", "global_gradient_ascent"}
    epochs_md = (out / "table_epochs.md").read_text()
    assert "| 1 |" in epochs_md and "| 3 |" in epochs_md
    assert json.loads((out / "compare.json").read_text())["snapshots_kept"] == "passive"


@pytest.mark.parametrize("keep, left", [("all", ["global_isolating-victim0", "passive"]),
                                         ("passive", ["passive"]), ("none", [])])
def test_keep_snapshots_prunes_the_federations_it_drops(tmp_path, keep, left):
    from fl_sim.compare import prune_snapshots

    for name in ("passive", "global_isolating-victim0"):
        (tmp_path / "snapshots" / name).mkdir(parents=True)
        (tmp_path / "snapshots" / name / "index.json").write_text("{}")
    (tmp_path / "results.json").write_text("{}")
    prune_snapshots(tmp_path, keep)
    assert sorted(d.name for d in (tmp_path / "snapshots").iterdir()) == left
    assert (tmp_path / "results.json").exists()


def test_epoch_sets_need_the_passive_snapshots(tmp_path):
    from fl_sim.errors import FlSimError

    with pytest.raises(FlSimError, match="keep-snapshots"):
        run_compare(tiny_config(), 1, tmp_path / "cmp", progress=False, epoch_sets=[[1]], keep_snapshots="none")
    assert not (tmp_path / "cmp").exists()


def test_resume_keeps_complete_seeds_and_refuses_another_config(tmp_path):
    from fl_sim.compare import open_out, run_seeds
    from fl_sim.config import dump_config
    from fl_sim.errors import FlSimError

    cfg = tiny_config(attack__names=["global_passive"])
    for k in (0, 1):  # as a finished comparison leaves them; no training happens below
        seed = tmp_path / f"seed-{k}"
        seed.mkdir()
        one = cfg.model_copy(deep=True)
        one.seed = k
        (seed / "config.yaml").write_text(dump_config(one))
        (seed / "results.json").write_text(json.dumps({"seed": k, "attacks": []}))
    assert open_out(tmp_path, overwrite=False, resume=True) == tmp_path
    assert [r["seed"] for r in run_seeds(cfg, 2, tmp_path, progress=False, resume=True)] == [0, 1]
    other = tiny_config(attack__names=["global_passive"], federation__lr=0.5)
    with pytest.raises(FlSimError, match="another config"):
        run_seeds(other, 1, tmp_path, progress=False, resume=True)
    with pytest.raises(FlSimError, match="give one of them"):
        open_out(tmp_path, overwrite=True, resume=True)


def test_sweep_values_may_be_lists_separated_by_semicolons():
    from fl_sim.errors import ConfigError
    from fl_sim.sweep import parse_sweep

    cfg = tiny_config(federation__rounds=4, attack__names=["global_isolating"], attack__epochs=[3, 4])
    key, values, configs = parse_sweep(cfg, "attack.isolate_rounds=[2,3];[3,4]")
    assert key == "attack.isolate_rounds" and values == [[2, 3], [3, 4]]
    assert [c.attack.isolate_rounds for c in configs] == [[2, 3], [3, 4]]
    assert parse_sweep(cfg, "attack.isolate_from=1,3")[1] == [1, 3]
    with pytest.raises(ConfigError, match="isolate_rounds"):
        parse_sweep(cfg, "attack.isolate_rounds=[2,3;[3]")


OTHER_VALUE = {"attack.gamma": 0.5, "attack.isolate_rounds": [1, 2], "attack.isolate_from": 1,
               "attack.ascent_rounds": [1], "attack.victims": "all", "attack.epochs_attack_model": 3,
               "attack.lr_attack_model": 0.1, "attack.conv_filters": 4, "attack.network_inputs": ["loss"],
               "attack.gradients": "matrix"}


def test_every_shared_setting_is_checked_below():
    from fl_sim.sweep import SHARES_PASSIVE

    assert set(OTHER_VALUE) == SHARES_PASSIVE


@pytest.mark.parametrize("key, value", sorted(OTHER_VALUE.items()))
def test_settings_that_share_the_passive_federation_leave_its_plans_unchanged(tmp_path, key, value):
    """The sweep links one passive federation into every value of these keys: each must
    leave what the passive training reads (its plans, its kept rounds) as it was."""
    import json as _json

    from fl_sim.catalog import TRAININGS
    from fl_sim.federated import keep_rounds, write_plans
    from fl_sim.sweep import SHARES_PASSIVE, parse_sweep
    from fl_sim.target import load_data, make_run_split

    assert key in SHARES_PASSIVE
    base = tiny_config(attack__names=["global_passive", "global_gradient_ascent", "global_isolating"],
                       federation__keep_rounds="attack")
    now = base.model_dump(mode="json")["attack"][key.split(".")[1]]
    _, _, (first, other) = parse_sweep(base, f"{key}={_json.dumps(now)};{_json.dumps(value)}")
    data = load_data(first)
    plans = []
    for i, cfg in enumerate((first, other)):
        (tmp_path / str(i)).mkdir()
        split = make_run_split(cfg, len(data.y))
        plan, attackers = write_plans(cfg, TRAININGS["passive"], data, split, tmp_path / str(i), "passive")
        attacker = _json.loads(Path(next(iter(attackers.values()))).read_text())
        attacker.pop("gamma")   # recorded, unused: the passive attacker does not push
        plans.append((Path(plan).read_text().replace(str(tmp_path / str(i)), ""), attacker, keep_rounds(cfg)))
    assert plans[0] == plans[1]
