"""What the gradient-ascent pushes do, without Ray: the normalised rule gives every target
record the same weight, two victims' pushes differ, the push measurements read what was
sent, and the local attacker's boosted push is N times its plain one."""

import numpy as np
import pytest
import torch

from attacks.active import gradient_ascent, normalized_gradient_ascent, per_record_gradients
from clients.common import load_partition, local_train
from clients.local_attacker import malicious_train
from fl_sim.catalog import TRAININGS
from fl_sim.federated import ascent_step, write_plans
from fl_sim.models import build_model, get_arrays, model_from, set_arrays
from fl_sim.plan import ClientPlan, LocalAttackPlan
from fl_sim.push import measure_push, record_pass
from fl_sim.splits import target_sets
from fl_sim.target import initial_arrays, load_data, make_run_split, model_spec
from tests.conftest import tiny_config


def _flat(arrays: dict) -> np.ndarray:
    return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k in sorted(arrays)])


def _model():
    torch.manual_seed(0)
    model = build_model("fc", (5,), 3, widths=[4])
    with torch.no_grad():  # a confident model: some records have losses near zero
        model.classifier.weight.mul_(10)
    return model


def _records():
    """Records with losses from near zero to large: the label the model is sure of, at
    growing input scales, and the label it finds least likely."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 5)).astype(np.float32) * np.array([0.1, 1, 5, 20] * 2, np.float32)[:, None]
    with torch.no_grad():
        out = _model()(torch.from_numpy(x))
    y = np.r_[out[:4].argmax(1).numpy(), out[4:].argmin(1).numpy()].astype(np.int64)
    return x, y


def _step(rule, x, y, gamma):
    model = _model()
    before = _flat(get_arrays(model))
    rule(model, x, y, gamma)
    return _flat(get_arrays(model)) - before


def _contributions(rule, x, y, gamma):
    """Each record's contribution to the step, read off the step itself: the step on every
    record minus the step on every record but that one (both rules are sums over records)."""
    full = _step(rule, x, y, gamma)
    keep = np.arange(len(y))
    return [full - _step(rule, x[keep != j], y[keep != j], gamma) for j in range(len(y))]


def _per_record_grads(x, y):
    out = []
    for i in range(len(y)):
        model = _model()
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x[i:i + 1])), torch.from_numpy(y[i:i + 1])).backward()
        out.append(_flat({k: p.grad.numpy() for k, p in model.named_parameters()}))
    return out


def test_normalized_step_gives_every_target_record_the_same_norm():
    x, y = _records()
    gamma = 0.05
    grads = _per_record_grads(x, y)
    norms = np.array([np.linalg.norm(g) for g in grads])
    assert norms.max() / norms.min() > 100  # the records differ a lot

    plain = np.array([np.linalg.norm(c) for c in _contributions(gradient_ascent, x, y, gamma)])
    # the paper's rule: in proportion (atol: each contribution is a difference of two float32 steps)
    np.testing.assert_allclose(plain, gamma * norms, rtol=1e-3, atol=5e-7)
    assert plain.max() / plain.min() > 100

    normed = _contributions(normalized_gradient_ascent, x, y, gamma)
    np.testing.assert_allclose([np.linalg.norm(c) for c in normed], gamma, rtol=1e-3)
    for c, g in zip(normed, grads):  # each along its own record's gradient
        np.testing.assert_allclose(c, gamma * g / np.linalg.norm(g), atol=1e-5)
    np.testing.assert_allclose(_step(normalized_gradient_ascent, x, y, gamma),
                               gamma * sum(g / np.linalg.norm(g) for g in grads), atol=1e-5)


def test_normalized_step_chunks_do_not_change_it():
    x, y = _records()
    a, b = _model(), _model()
    normalized_gradient_ascent(a, x, y, 0.05)
    normalized_gradient_ascent(b, x, y, 0.05, chunk=3)
    np.testing.assert_allclose(_flat(get_arrays(a)), _flat(get_arrays(b)), atol=1e-7)


def test_a_record_with_a_zero_gradient_adds_nothing():
    x, y = _records()
    saturated = _model()
    with torch.no_grad():  # logits so far apart that softmax is exactly one-hot in float32
        saturated.classifier.weight.mul_(1e3)
        saturated.classifier.bias.zero_()
    arrays = get_arrays(saturated)
    pred = saturated(torch.from_numpy(x[:1])).argmax(1).numpy()
    _, _, grads = next(per_record_gradients(saturated, x[:1], pred))
    assert all(float(g.abs().max()) == 0 for g in grads.values())

    alone = _model()
    set_arrays(alone, arrays)
    normalized_gradient_ascent(alone, x[:1], pred, 0.05)
    assert np.array_equal(_flat(get_arrays(alone)), _flat(arrays))  # not NaN, not moved

    both, other = _model(), _model()
    set_arrays(both, arrays)
    set_arrays(other, arrays)
    normalized_gradient_ascent(both, np.r_[x[:1], x[5:6]], np.r_[pred, y[5:6]], 0.05)
    normalized_gradient_ascent(other, x[5:6], y[5:6], 0.05)
    np.testing.assert_allclose(_flat(get_arrays(both)), _flat(get_arrays(other)), atol=1e-7)


@pytest.fixture(scope="module")
def digits():
    cfg = tiny_config(attack__gamma=0.01)
    data = load_data(cfg)
    return cfg, data, make_run_split(cfg, len(data.y))


def test_two_victims_pushed_models_differ(digits):
    """The four victims' ascent federations of a Location-30 seed end at the same test
    accuracy; not because the push ignores the victim: from the same model, two victims'
    pushes differ, by exactly the members' part (the non-member targets are shared)."""
    cfg, data, split = digits
    start = initial_arrays(cfg, data)
    sent = [ascent_step(cfg.for_victim(v), data, split)(start) for v in (0, 1)]
    assert not np.array_equal(_flat(sent[0]), _flat(sent[1]))

    def members_push(v):
        sets = target_sets(split, [v])
        idx = np.r_[sets.known[sets.known_labels == 1], sets.eval[sets.eval_labels == 1]]
        model = model_from(model_spec(cfg, data), start)
        gradient_ascent(model, data.x[idx], data.y[idx], cfg.attack.gamma)
        return _flat(get_arrays(model)) - _flat(start)

    assert set(target_sets(split, [0]).all_indices()) != set(target_sets(split, [1]).all_indices())
    np.testing.assert_allclose(_flat(sent[1]) - _flat(sent[0]), members_push(1) - members_push(0), atol=1e-6)


@pytest.mark.parametrize("normalized", [False, True])
def test_push_measurement_reads_the_step_that_was_sent(digits, normalized):
    cfg, data, split = digits
    start = initial_arrays(cfg, data)
    sent = ascent_step(cfg, data, split, normalized)(start)
    sets = target_sets(split, [cfg.attack.target_participant])
    summary, per = measure_push(cfg, data, sets, start, sent, normalized)
    n = len(sets.all_indices())
    assert summary["members"]["records"] + summary["non_members"]["records"] == n
    assert summary["members"]["records"] == int(np.r_[sets.known_labels, sets.eval_labels].sum())
    # the two groups' measured parts add up to the step that was sent
    assert summary["step_mismatch"] < 1e-3
    np.testing.assert_allclose(summary["push_norm"], np.linalg.norm(_flat(sent) - _flat(start)), rtol=1e-9)
    # per record: the losses are the model's own, the rise is after - before
    model = model_from(model_spec(cfg, data), start)
    idx = sets.all_indices()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(np.asarray(data.x[idx], np.float32))),
                                                 torch.from_numpy(np.asarray(data.y[idx], np.int64)),
                                                 reduction="none").numpy()
    np.testing.assert_allclose(per["loss_before"], loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(per["loss_rise"], np.subtract(per["loss_after"], per["loss_before"]),
                               rtol=1e-4, atol=1e-5)
    assert per["member"] == [int(v) for v in np.r_[sets.known_labels, sets.eval_labels]]
    assert summary["non_members"]["loss_rise"]["mean"] > 0 and summary["members"]["loss_rise"]["mean"] > 0
    last = record_pass(model, data.x[idx[:3]], data.y[idx[:3]])
    assert np.all(last["grad_norm_last"] <= last["grad_norm"] + 1e-9)


def test_local_attackers_boosted_push_is_n_times_its_plain_push(tmp_path):
    """clients/local_attacker.py: the upload is the honest upload plus the ascent's change,
    times ``boost``; the boosted training sets boost = N (federation.participants)."""
    cfg = tiny_config(attack__gamma=0.01, attack__ascent_rounds=[1])
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    n = cfg.federation.participants
    uploads = {}
    for name in ("local_gradient_ascent", "local_gradient_ascent_boosted"):
        plan_path, attack_paths = write_plans(cfg, TRAININGS[name], data, split, tmp_path, name)
        plan = ClientPlan.load(plan_path)
        attack = LocalAttackPlan.load(next(iter(attack_paths.values())))
        assert attack.boost == (n if name.endswith("boosted") else 1.0)
        start = initial_arrays(cfg, data)
        uploads[name] = _flat(malicious_train(plan, attack, 1, start)[0])
        honest = model_from(plan.model_spec(), start)  # the same local training, no push
        local_train(plan, attack.participant, 1, honest, *load_partition(plan, attack.participant))
        uploads["honest"] = _flat(get_arrays(honest))
        pushed = model_from(plan.model_spec(), get_arrays(honest))
        gradient_ascent(pushed, data.x[attack.targets], data.y[attack.targets], cfg.attack.gamma)
        uploads["plain push"] = _flat(get_arrays(pushed)) - uploads["honest"]
        quiet = malicious_train(plan, attack, 2, start)[0]  # not an ascent round: honest
        honest2 = model_from(plan.model_spec(), start)
        local_train(plan, attack.participant, 2, honest2, *load_partition(plan, attack.participant))
        assert np.array_equal(_flat(quiet), _flat(get_arrays(honest2)))
    plain = uploads["local_gradient_ascent"] - uploads["honest"]
    boosted = uploads["local_gradient_ascent_boosted"] - uploads["honest"]
    assert np.linalg.norm(plain) > 0
    np.testing.assert_allclose(plain, uploads["plain push"], atol=1e-6)
    np.testing.assert_allclose(boosted, n * plain, rtol=1e-4, atol=1e-6)


def test_a_push_whose_snapshots_are_gone_is_noted_not_measured(digits, tmp_path):
    from fl_sim.push import measure_pushes
    from fl_sim.snapshots import SnapshotStore

    _, data, split = digits
    cfg = tiny_config(attack__gamma=0.01, federation__rounds=3, attack__epochs=[2, 3])
    store = SnapshotStore(tmp_path / "s")
    start = initial_arrays(cfg, data)
    step = ascent_step(cfg, data, split)
    store.put(1, None, "global", start)
    store.put(2, 0, "sent", step(start))
    store.put(3, 0, "sent", step(start))  # round 2's aggregate, its starting point, is missing
    summary, records = measure_pushes(cfg, TRAININGS["global_gradient_ascent"], data, split, store)
    assert [r["round"] for r in summary["rounds"]] == [2] and len(records) == 1
    assert summary["rounds"][0]["pushed_from"] == "aggregate of round 1"
    assert summary["notes"] == ["round 3: push not measured, the aggregate of round 2 is not in the snapshot store"]
    assert measure_pushes(cfg, TRAININGS["global_isolating"], data, split, store) is None
