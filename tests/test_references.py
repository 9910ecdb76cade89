"""Reference losses: the global attacker reads each record's loss under the other
participants' uploads of the same round, and the white-box network reads the gap."""

import numpy as np
import pytest
import torch

from attacks.compact import CompactWhiteBox, compact_features
from attacks.features import FeatureSet
from attacks.metrics import membership_metrics
from attacks.nasr import collect_inputs, reference_gap
from attacks.supervised import NasrAttack
from tests.conftest import tiny_config

torch.set_num_threads(1)
FAST = dict(fc_sizes=(32, 16), encoder_sizes=(64, 32, 16), lr=2e-3, epochs=40, patience=6)


def test_reference_gap_is_probability_and_its_excess_over_the_references():
    loss = np.array([0.0, np.log(2.0)])
    refs = np.array([[np.log(2.0), np.log(4.0)], [0.0, np.log(2.0)]])
    gap = reference_gap(loss, refs)
    # record 0: p = 1, references 1/2 and 1/4; record 1: p = 1/2, references 1 and 1/2
    np.testing.assert_allclose(gap, [[1.0, 1.0 - 0.375], [0.5, 0.5 - 0.75]], rtol=1e-6)


def _fs(n, rng, reference=None):
    return FeatureSet(outputs={"logits": rng.normal(size=(n, 3)).astype(np.float32)},
                      loss=rng.random(n).astype(np.float32), label=np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)],
                      grads={"fc.weight": rng.normal(size=(n, 3, 4)).astype(np.float32)}, reference_loss=reference)


def test_references_travel_with_subset_and_concat_and_are_checked():
    rng = np.random.default_rng(0)
    a = _fs(5, rng).with_reference(rng.random((5, 3)))
    b = _fs(4, rng).with_reference(rng.random((4, 3)))
    np.testing.assert_array_equal(a.subset([1, 3]).reference_loss, a.reference_loss[[1, 3]])
    both = FeatureSet.concat([a, b])
    np.testing.assert_array_equal(both.reference_loss, np.concatenate([a.reference_loss, b.reference_loss]))
    with pytest.raises(ValueError, match="reference"):
        FeatureSet.concat([a, _fs(4, rng)])
    with pytest.raises(ValueError, match="reference_loss must be"):
        _fs(5, rng).with_reference(np.zeros((4, 3)))


def test_network_inputs_norm_gradients_and_the_reference_gap():
    rng = np.random.default_rng(1)
    plain, ref = _fs(6, rng), rng.random((6, 2))
    arrays = collect_inputs([plain, plain.with_reference(ref)], grad_input="norm")
    assert "s0|ref" not in arrays and arrays["s1|ref"].shape == (6, 2)
    np.testing.assert_allclose(arrays["s1|ref"], reference_gap(plain.loss, ref), rtol=1e-6)
    np.testing.assert_allclose(arrays["s0|gradnorm|fc.weight"][:, 0],
                               np.log(plain.grad_norms()["fc.weight"].astype(np.float64) + 1e-12), rtol=1e-5)
    assert not any("|grad|" in k for k in arrays)
    assert "s1|ref" not in collect_inputs([plain.with_reference(ref)], use_reference=False)
    with pytest.raises(ValueError, match="grad_input"):
        collect_inputs([plain], grad_input="rows")


def difficulty_confounded(n, seed, R=3):
    """Records differ a lot in difficulty; a member's loss under the observed model is
    lower than under the references by a margin smaller than the spread of difficulty,
    so the observed loss alone is weak and the gap to the references is strong."""
    rng = np.random.default_rng(seed)
    m = rng.permutation(np.arange(n) < n // 2).astype(np.int64)
    difficulty = rng.normal(0.0, 2.0, n)
    soft = lambda z: np.log1p(np.exp(z))  # noqa: E731
    own = soft(difficulty - 1.5 * m + rng.normal(0, 0.3, n))
    refs = soft(difficulty[:, None] + rng.normal(0, 0.3, (n, R)))
    fs = FeatureSet(outputs={}, loss=own.astype(np.float32), label=np.ones((n, 1), np.float32), grads={})
    return fs.with_reference(refs), m


@pytest.mark.parametrize("make", [
    lambda refs: NasrAttack(use_label=False, use_reference=refs, seed=0, **FAST),
    lambda refs: CompactWhiteBox(references=refs),
], ids=["nasr", "compact"])
def test_reading_the_references_beats_the_observed_loss_alone(make):
    known, km = difficulty_confounded(800, seed=2)
    evals, em = difficulty_confounded(800, seed=3)
    auc = {}
    for refs in (False, True):
        attack = make(refs).fit([known], km)
        auc[refs] = membership_metrics(attack.score_samples([evals]), em, attack.threshold_)["auc"]
    assert auc[True] > 0.85 and auc[True] > auc[False] + 0.1, auc


def test_compact_reads_the_probability_and_ignores_references_unless_asked():
    rng = np.random.default_rng(4)
    fs = _fs(5, rng).with_reference(rng.random((5, 3)))
    X = compact_features([fs])
    assert X.shape == (5, 3)  # log loss, p, log gradient norm
    np.testing.assert_allclose(X[:, 1], np.exp(-fs.loss.astype(np.float64)))
    assert compact_features([fs], references=True).shape == (5, 5)


def test_the_global_attacker_reads_the_other_uploads_of_the_same_round(tmp_path):
    from fl_sim.scenarios.common import AttackContext, features_of, losses_of
    from fl_sim.scenarios.federated import with_references
    from fl_sim.snapshots import SnapshotStore
    from fl_sim.splits import target_sets
    from fl_sim.target import initial_arrays, load_data, make_run_split

    cfg = tiny_config()
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    store = SnapshotStore(tmp_path / "snapshots" / "passive")
    uploads = {q: initial_arrays(cfg.model_copy(update={"seed": q}), data) for q in range(4)}
    for q in (0, 1, 3):  # participant 2 sent nothing in round 2
        store.put(2, q, "upload", uploads[q])
    ctx = AttackContext(cfg, data, split, tmp_path)
    sets = target_sets(split, [0])
    feats = features_of(cfg, data, uploads[0], sets.known, sets.eval)
    known, evals = with_references(ctx, store, 2, 0, feats, [sets.known, sets.eval])
    assert known.reference_loss.shape == (len(sets.known), 2)
    np.testing.assert_allclose(evals.reference_loss[:, 1], losses_of(cfg, data, uploads[3], sets.eval), rtol=1e-6)
    np.testing.assert_allclose(known.loss, losses_of(cfg, data, uploads[0], sets.known), rtol=1e-5, atol=1e-6)
    off = cfg.model_copy(update={"attack": cfg.attack.model_copy(update={"network_inputs": ["loss"]})})
    plain = with_references(AttackContext(off, data, split, tmp_path), store, 2, 0, feats, [sets.known, sets.eval])
    assert plain[0].reference_loss is None
