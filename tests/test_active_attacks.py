"""Active attacks through the real strategy, in a real Flower simulation on Ray:
isolation really changes what the victim receives; gradient ascent raises the targets'
loss, and the victim's next local epoch lowers its members' loss more than non-members';
two victims' federations push different models; isolation + ascent pushes the victim's
own upload and leaves the others the plain aggregate; the pushes are measured."""

import numpy as np
import pytest

from fl_sim.catalog import TRAININGS
from fl_sim.federated import ascent_step, runs_of, train_federated
from fl_sim.models import model_from
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import target_sets
from fl_sim.target import load_data, make_run_split, model_spec
from fl_sim.training import evaluate
from tests.conftest import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
VICTIM = 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("active")
    # gamma is per target record: 0.035 x 60 targets is the step the mean-loss rule took with 2.0
    cfg = tiny_config(federation__rounds=4, federation__record_received=True,
                      attack__epochs=[2, 3], attack__gamma=0.035, attack__target_participant=VICTIM,
                      attack__isolate_rounds=[3, 4])
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    results = {}
    for name in ("global_isolating", "global_isolating_gradient_ascent"):
        results[name] = train_federated(cfg, TRAININGS[name], data, split, run_dir)
    # the ascent once per victim, as attack.victims does it: global_gradient_ascent-victim0, -victim1
    two = cfg.model_copy(update={"attack": cfg.attack.model_copy(update={"victims": [VICTIM, 1]})})
    for name, run_cfg in runs_of(two, TRAININGS["global_gradient_ascent"]):
        results[name] = train_federated(run_cfg, TRAININGS["global_gradient_ascent"], data, split, run_dir,
                                        name=name)
    return cfg, data, split, run_dir, results


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_isolation_happens_exactly_in_its_window(runs):
    run_dir = runs[3]
    s = SnapshotStore(run_dir / "snapshots" / "global_isolating")
    for rnd in (1, 2):  # before the window: the aggregate, like everyone
        got = s.get(rnd, VICTIM, "received")
        assert all(_same(s.get(rnd, p, "received"), got) for p in (1, 2, 3))
        assert s.find(rnd, VICTIM, "sent") is None


def test_isolated_victim_receives_exactly_its_own_previous_upload(runs):
    run_dir = runs[3]
    s = SnapshotStore(run_dir / "snapshots" / "global_isolating")
    for rnd in (3, 4):
        got = s.get(rnd, VICTIM, "received")  # recorded by the victim's own client
        assert _same(got, s.get(rnd - 1, VICTIM, "upload"))
        assert not _same(got, s.get(rnd - 1, None, "global"))
        for p in (1, 2, 3):
            assert _same(s.get(rnd, p, "received"), s.get(rnd - 1, None, "global"))


def _loss(cfg, data, arrays, idx):
    model = model_from(model_spec(cfg, data), arrays)
    idx = np.asarray(idx)
    return evaluate(model, data.x[idx], data.y[idx])[0]


def test_gradient_ascent_raises_target_loss_and_members_recover_more(runs):
    cfg, data, split, run_dir, _ = runs
    s = SnapshotStore(run_dir / "snapshots" / f"global_gradient_ascent-victim{VICTIM}")
    targets = target_sets(split, [VICTIM]).all_indices().tolist()
    members = split.train[VICTIM]
    nonmembers = [i for i in targets if i not in set(members)]
    for rnd in (2, 3):
        sent = s.get(rnd, VICTIM, "sent")
        assert _same(sent, s.get(rnd, VICTIM, "received"))  # the client got what was sent
        plain = s.get(rnd - 1, None, "global")
        assert _loss(cfg, data, sent, targets) > _loss(cfg, data, plain, targets) + 0.05
        after = s.get(rnd, VICTIM, "upload")
        drop_members = _loss(cfg, data, sent, members) - _loss(cfg, data, after, members)
        drop_non = _loss(cfg, data, sent, nonmembers) - _loss(cfg, data, after, nonmembers)
        assert drop_members > drop_non, (rnd, drop_members, drop_non)


def test_two_victims_federations_push_different_models(runs):
    """Location-30's four victims' ascent federations end at the same test accuracy; the
    pushed models are not the same: from the same round-1 aggregate, victim 0's and victim
    1's pushes differ, and so do their final models."""
    _, _, _, run_dir, _ = runs
    s0, s1 = (SnapshotStore(run_dir / "snapshots" / f"global_gradient_ascent-victim{v}") for v in (VICTIM, 1))
    assert _same(s0.get(1, None, "global"), s1.get(1, None, "global"))  # no push yet: one history
    sent0, sent1 = s0.get(2, VICTIM, "sent"), s1.get(2, 1, "sent")
    assert not _same(sent0, sent1)
    for s, sent in ((s0, sent0), (s1, sent1)):  # the global push goes to everyone alike
        assert all(_same(s.get(2, p, "received"), sent) for p in range(4))
    assert not _same(s0.get(4, None, "global"), s1.get(4, None, "global"))


def _close(a, b):
    return all(np.allclose(a[k], b[k], rtol=0, atol=1e-7) for k in a)


def test_isolating_ascent_pushes_the_victims_own_upload_and_only_the_victims(runs):
    cfg, data, split, run_dir, _ = runs
    s = SnapshotStore(run_dir / "snapshots" / "global_isolating_gradient_ascent")
    push = ascent_step(cfg, data, split)
    # round 2: an ascent round outside the isolation window: everyone gets the pushed aggregate
    pushed = push(s.get(1, None, "global"))
    assert all(_close(s.get(2, p, "received"), pushed) for p in range(4))
    # round 3: isolation + ascent: the victim its own round-2 upload pushed up the loss, the
    # others the plain aggregate, which nobody pushed
    got = s.get(3, VICTIM, "received")
    assert _same(got, s.get(3, VICTIM, "sent"))
    assert _close(got, push(s.get(2, VICTIM, "upload")))
    assert not _close(got, s.get(2, VICTIM, "upload"))
    for p in (1, 2, 3):
        assert _same(s.get(3, p, "received"), s.get(2, None, "global"))
        assert s.find(3, p, "sent") is None
    # round 4: isolation only: its own upload as it was
    assert _same(s.get(4, VICTIM, "received"), s.get(3, VICTIM, "upload"))


def test_every_push_is_measured_per_group(runs):
    _, _, split, _, results = runs
    for name, victim, pushed_from in (
            (f"global_gradient_ascent-victim{VICTIM}", VICTIM, {2: "aggregate of round 1", 3: "aggregate of round 2"}),
            ("global_gradient_ascent-victim1", 1, {2: "aggregate of round 1", 3: "aggregate of round 2"}),
            ("global_isolating_gradient_ascent", VICTIM,
             {2: "aggregate of round 1", 3: f"upload of participant {VICTIM}, round 2"})):
        push = results[name]["push"]
        assert (push["rule"], push["victim"], push["notes"]) == ("sum", victim, [])
        assert {r["round"]: r["pushed_from"] for r in push["rounds"]} == pushed_from
        members = len(split.train[victim])
        for r in push["rounds"]:
            assert r["step_mismatch"] < 1e-3  # the measured parts are the step that was sent
            assert (r["members"]["records"], r["non_members"]["records"]) == (members, members)
            assert r["non_members"]["loss_rise"]["mean"] > 0
            assert r["members"]["grad_norm_before"]["p10"] <= r["members"]["grad_norm_before"]["median"]
        per = results[name]["push_records"]
        assert [p["round"] for p in per] == [2, 3]
        assert all(len(p["loss_rise"]) == 2 * members == sum(1 for m in p["member"] if m == 0) * 2 for p in per)
    assert "push" not in results["global_isolating"]


def test_a_run_reports_its_normalized_pushes_in_results_and_figure_data(tmp_path):
    import json

    from fl_sim.experiment import run_experiment

    cfg = tiny_config(federation__rounds=3, attack__epochs=[2, 3], attack__gamma=0.01,
                      attack__epochs_attack_model=2, attack__names=["global_gradient_ascent_normalized"])
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    push = saved["settings"]["global_gradient_ascent_normalized"]["push"]
    assert push["rule"] == "normalized" and [r["round"] for r in push["rounds"]] == [2, 3]
    assert "push_records" not in saved["settings"]["global_gradient_ascent_normalized"]
    assert "push" not in saved["settings"]["passive"]
    attack = next(a for a in res["attacks"] if a["name"] == "global_gradient_ascent_normalized")
    assert "auc" in attack
    fig = json.loads((tmp_path / "run" / "figure_data.json").read_text())
    rounds = fig["pushes"]["global_gradient_ascent_normalized"]
    assert [r["round"] for r in rounds] == [2, 3]
    # the victim's 30 records and as many non-members
    assert len(rounds[0]["loss_rise"]) == len(rounds[0]["member"]) == 60 and sum(rounds[0]["member"]) == 30
