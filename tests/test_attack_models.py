"""Attack models on synthetic white-box features with a known membership signal.

Synthetic records mimic a trained softmax layer: a member's true-class logit margin is
larger, so its loss and its last-layer gradient (p - y) h^T are smaller, as in the
paper's Fig. 3. With ``signal=0`` members and non-members come from one distribution.
"""

import inspect

import numpy as np
import pytest
import torch

from attacks.base import MembershipAttack
from attacks.blackbox import ShadowModelAttack
from attacks.calibrated import (
    LiRAOffline,
    lira_features,
    logit_confidence,
)
from attacks.compact import CompactWhiteBox
from attacks.features import FeatureSet
from attacks.loss_threshold import LossThreshold
from attacks.metrics import choose_threshold, membership_metrics
from attacks.nasr import NasrAttackNet, collect_inputs, specs_for
from attacks.supervised import NasrAttack
from attacks.unsupervised import UnsupervisedAttack

torch.set_num_threads(1)

N_KNOWN, N_EVAL, C, H = 600, 600, 10, 16
# Small network and short training keep the suite fast; the paper's sizes are defaults.
FAST = dict(conv_filters=16, fc_sizes=(32, 16), encoder_sizes=(64, 32, 16), lr=2e-3,
            epochs=40, patience=6, batch_size=64)


def synthetic(n, *, signal, seed, snapshots=1):
    """(list of n-record FeatureSets, is_member); members get +signal logit margin."""
    rng = np.random.default_rng(seed)
    is_member = rng.permutation(np.arange(n) < n // 2).astype(np.int64)
    y = rng.integers(0, C, n)
    margin = rng.normal(2.0 + signal * is_member, 1.0)
    hidden = np.abs(rng.normal(size=(n, H)))
    onehot = np.eye(C)[y]
    snaps = []
    for _ in range(snapshots):
        logits = rng.normal(0.0, 1.0, (n, C)) + onehot * (margin + rng.normal(0, 0.3, n))[:, None]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = p - onehot  # dL/dlogits for cross-entropy
        snaps.append(FeatureSet(
            outputs={"logits": logits.astype(np.float32), "hidden": hidden.astype(np.float32)},
            loss=(-np.log(p[np.arange(n), y])).astype(np.float32),
            label=onehot.astype(np.float32),
            grads={"fc.weight": (d[:, :, None] * hidden[:, None, :]).astype(np.float32),
                   "fc.bias": d.astype(np.float32)},
        ))
    return snaps, is_member


def split(snaps, m):
    k, e = np.arange(N_KNOWN), np.arange(N_KNOWN, N_KNOWN + N_EVAL)
    return [s.subset(k) for s in snaps], m[k], [s.subset(e) for s in snaps], m[e]


@pytest.fixture(scope="module")
def strong():
    return split(*synthetic(N_KNOWN + N_EVAL, signal=3.0, seed=1))


@pytest.fixture(scope="module")
def null():
    return split(*synthetic(N_KNOWN + N_EVAL, signal=0.0, seed=2))


ATTACKS = {
    "nasr": lambda: NasrAttack(seed=0, **FAST),
    "compact": lambda: CompactWhiteBox(seed=0),
    "loss": lambda: LossThreshold(),
}


def eval_accuracy(attack, known_f, known_m, eval_f, eval_m):
    attack.fit(known_f, known_m)
    scores = attack.score_samples(eval_f)
    assert scores.shape == (len(eval_m),) and np.all(np.isfinite(scores))
    return membership_metrics(scores, eval_m, attack.threshold_)["accuracy"]


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_finds_signal(name, strong):
    assert eval_accuracy(ATTACKS[name](), *strong) > 0.75


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_without_signal_stays_at_chance(name, null):
    assert 0.4 <= eval_accuracy(ATTACKS[name](), *null) <= 0.6


def test_nasr_multi_snapshot():
    kf, km, ef, em = split(*synthetic(N_KNOWN + N_EVAL, signal=3.0, seed=3, snapshots=3))
    attack = NasrAttack(seed=1, **FAST).fit(kf, km)
    assert sum(s.key.startswith("s2|") for s in attack.specs_) == 5  # logits, hidden, loss, 2 grads
    acc = membership_metrics(attack.score_samples(ef), em, attack.threshold_)["accuracy"]
    assert acc > 0.75
    with pytest.raises(ValueError, match="differ"):
        attack.score_samples(ef[:2])  # fitted on three snapshots


def test_nasr_fits_on_known_data_only():
    # Only the known data can reach fit: there is no parameter for anything else.
    assert list(inspect.signature(NasrAttack.fit).parameters) == ["self", "features", "is_member"]
    kf, km = synthetic(200, signal=3.0, seed=4)
    a = NasrAttack(seed=5, val_fraction=0.25, **{**FAST, "epochs": 3}).fit(kf, km)
    tr, va = a.train_idx_, a.val_idx_
    assert len(va) == 50 and len(np.intersect1d(tr, va)) == 0
    assert np.array_equal(np.union1d(tr, va), np.arange(200))
    assert km[va].sum() == 25  # stratified
    # Standardization statistics come from the training part, not the validation part.
    loss_norm = a.net_.components[[s.key for s in a.specs_].index("s0|loss")].norm
    expected = collect_inputs(kf)["s0|loss"][tr].mean()
    assert float(loss_norm.mean) == pytest.approx(float(expected), rel=1e-4)
    # Same seed, same scores; the caller's torch RNG is left untouched.
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    b = NasrAttack(seed=5, val_fraction=0.25, **{**FAST, "epochs": 3}).fit(kf, km)
    assert torch.rand(1) == before
    np.testing.assert_array_equal(a.score_samples(kf), b.score_samples(kf))


def test_nasr_feature_choice():
    kf, km = synthetic(120, signal=3.0, seed=6)
    opts = {**FAST, "epochs": 2}
    a = NasrAttack(layers=["fc"], use_outputs=False, use_loss=False, use_label=False, **opts).fit(kf, km)
    assert [s.key for s in a.specs_] == ["s0|grad|fc.weight", "s0|grad|fc.bias"]
    assert a.specs_[0].kind == "conv" and a.specs_[0].shape == (C, H)
    a = NasrAttack(layers=["fc.bias"], output_layers=["logits"], **opts).fit(kf, km)
    assert [s.key for s in a.specs_] == ["s0|out|logits", "s0|loss", "s0|grad|fc.bias", "label"]
    assert a.score_samples(kf).shape == (120,)
    with pytest.raises(ValueError, match="no gradients"):
        NasrAttack(layers=["conv1"], **opts).fit(kf, km)
    for scaling in ("element", "scalar", "asinh"):
        a = NasrAttack(grad_scaling=scaling, **opts).fit(kf, km)
        assert np.all(np.isfinite(a.score_samples(kf)))
    with pytest.raises(ValueError, match="scaling"):
        NasrAttack(grad_scaling="minmax", **opts).fit(kf, km)


def test_nasr_net_paper_shapes():
    kf, _ = synthetic(8, signal=0.0, seed=7)
    arrays = collect_inputs(kf)
    net = NasrAttackNet(specs_for(arrays), conv_filters=1000)  # paper sizes
    conv = net.components[[s.key for s in net.specs].index("s0|grad|fc.weight")]
    assert conv.conv.kernel_size == (1, H) and conv.conv.out_channels == 1000
    assert [m.out_features for m in net.encoder if isinstance(m, torch.nn.Linear)] == [1]
    out = net({k: torch.from_numpy(v) for k, v in arrays.items()})
    assert out.shape == (8,)
    # The row-kernel convolution is computed as a matmul; it must equal Conv2d exactly.
    conv.eval()
    g = torch.from_numpy(arrays["s0|grad|fc.weight"])
    via_conv = conv.fc(torch.relu(conv.conv(conv.norm(g).unsqueeze(1))).flatten(1))
    torch.testing.assert_close(conv(g), via_conv, rtol=1e-4, atol=1e-5)


def test_unsupervised_strong_signal():
    snaps, m = synthetic(600, signal=5.0, seed=8)
    attack = UnsupervisedAttack(seed=0, conv_filters=16, fc_sizes=(32, 16), encoder_sizes=(64, 32, 16),
                                decoder_sizes=(16, 32), epochs=30, patience=5).fit(snaps)
    acc = float((attack.predict(snaps) == m).mean())
    assert acc > 0.6
    assert membership_metrics(attack.score_samples(snaps), m, attack.threshold_)["auc"] > 0.6


def test_logit_confidence_stable():
    logits = np.array([[1000.0, 0.0, -5.0], [0.2, 0.1, 0.3], [-50.0, 50.0, 0.0]])
    y = np.array([0, 2, 0])
    phi = logit_confidence(logits, y)
    assert np.all(np.isfinite(phi))
    assert phi[0] == pytest.approx(1000.0 - np.log1p(np.exp(-5.0))) and phi[2] == pytest.approx(-100.0)
    p = np.exp(logits[1] - logits[1].max())
    p /= p.sum()
    assert phi[1] == pytest.approx(np.log(p[2] / (1 - p[2])))
    np.testing.assert_allclose(logit_confidence(logits, np.eye(3)[y]), phi)


def test_lira_calibrates_per_record_difficulty():
    rng = np.random.default_rng(9)
    n, R = 2000, 16
    mu = rng.normal(0.0, 3.0, n)  # records differ a lot in how easy they are
    m = rng.permutation(np.arange(n) < n // 2).astype(np.int64)
    refs = mu[:, None] + rng.normal(size=(n, R))
    target = mu + 3.0 * m + rng.normal(size=n)
    feats = lira_features(target, refs)
    s = LiRAOffline().fit(feats).score_samples(feats)
    lira = membership_metrics(s, m, np.median(s))
    raw = membership_metrics(target, m, np.median(target))
    assert lira["tpr_at_fpr"]["0.01"] > 0.4
    assert lira["tpr_at_fpr"]["0.01"] > raw["tpr_at_fpr"]["0.01"] + 0.2
    assert lira["auc"] > 0.95
    # Per-record variance once references are plentiful; no fit needed.
    refs64 = mu[:, None] + rng.normal(size=(n, 64))
    s64 = LiRAOffline().score_samples(lira_features(target, refs64))
    assert membership_metrics(s64, m, 0.0)["auc"] > 0.95


def _forest_train(x, y, seed):
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(n_estimators=30, random_state=seed).fit(x, y)


def _forest_predict(model, x):
    return model.predict_proba(x)


def test_shadow_attack_on_overfitting_model():
    rng = np.random.default_rng(10)
    centers = rng.normal(size=(4, 10))

    def draw(n):
        y = rng.integers(0, 4, n)
        return centers[y] + rng.normal(scale=1.5, size=(n, 10)), y

    x_in, y_in = draw(300)  # target's members
    x_out, y_out = draw(300)  # non-members
    x_att, y_att = draw(600)  # attacker's own data, disjoint from both
    target = _forest_train(x_in, y_in, seed=0)
    x_e, y_e = np.vstack([x_in, x_out]), np.concatenate([y_in, y_out])
    m_e = np.r_[np.ones(300), np.zeros(300)].astype(int)
    evals = (_forest_predict(target, x_e), y_e)
    attack = ShadowModelAttack(_forest_train, _forest_predict, x_att, y_att, n_shadows=3, seed=0).fit(evals)
    assert attack.threshold_ == 0.5  # no labels: the shadows' balanced prior
    s = attack.score_samples(evals)
    assert membership_metrics(s, m_e, attack.threshold_)["accuracy"] > 0.6
    per_class = ShadowModelAttack(_forest_train, _forest_predict, x_att, y_att, n_shadows=2, per_class=True,
                                  seed=0)
    s = per_class.fit(evals).score_samples(evals)
    assert set(per_class.per_class_) and membership_metrics(s, m_e, 0.5)["auc"] > 0.6
    # With the membership of known records, the threshold is chosen on their scores.
    known = np.r_[0:50, 300:350]
    kfeat = (evals[0][known], y_e[known])
    a = ShadowModelAttack(_forest_train, _forest_predict, x_att, y_att, n_shadows=3, seed=0)
    a.fit(kfeat, m_e[known])
    np.testing.assert_array_equal(a.score_samples(evals), attack.score_samples(evals))
    assert a.threshold_ == choose_threshold(a.score_samples(kfeat), m_e[known])


# --- the common interface (attacks.base.MembershipAttack) ----------------------------------


def _small_forest_case():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(160, 4)), rng.integers(0, 3, 160)
    target = _forest_train(x[:40], y[:40], seed=0)
    feats = (_forest_predict(target, x[:80]), y[:80])
    return ShadowModelAttack(_forest_train, _forest_predict, x[80:], y[80:], n_shadows=1, seed=0), feats


def _small_lira_case():
    rng = np.random.default_rng(12)
    mu = rng.normal(0.0, 3.0, 80)
    return LiRAOffline(), lira_features(mu + rng.normal(size=80), mu[:, None] + rng.normal(size=(80, 4)))


TINY = {**FAST, "epochs": 2}
INTERFACE = {
    "nasr": lambda kf: (NasrAttack(seed=0, **TINY), kf),
    "compact": lambda kf: (CompactWhiteBox(seed=0), kf),
    "loss": lambda kf: (LossThreshold(), kf),
    "unsupervised": lambda kf: (UnsupervisedAttack(seed=0, decoder_sizes=(8,), **TINY), kf),
    "shadow": lambda kf: _small_forest_case(),
    "lira": lambda kf: _small_lira_case(),
}


@pytest.mark.parametrize("name", INTERFACE)
@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_common_interface(name, labelled):
    kf, km = synthetic(80, signal=3.0, seed=13)
    attack, feats = INTERFACE[name](kf)
    assert isinstance(attack, MembershipAttack)
    assert list(inspect.signature(attack.fit).parameters) == ["features", "is_member"]
    assert not hasattr(attack, "threshold_") and not hasattr(attack, "score")
    if not labelled and attack.needs_labels:
        with pytest.raises(ValueError, match="needs is_member"):
            attack.fit(feats)
        return
    assert attack.fit(feats, km if labelled else None) is attack
    assert isinstance(attack.threshold_, float) and np.isfinite(attack.threshold_)
    s = attack.score_samples(feats)
    assert s.shape == (80,) and s.dtype == np.float64 and np.all(np.isfinite(s))
    pred = attack.predict(feats)
    assert pred.dtype == np.int64 and pred.shape == (80,)
    np.testing.assert_array_equal(pred, (s >= attack.threshold_).astype(np.int64))
    if labelled and name in ("shadow", "lira"):  # optional labels only choose the threshold
        assert attack.threshold_ == choose_threshold(s, km)


@pytest.mark.parametrize("make, name", [
    (lambda: NasrAttack(epochs=0), "epochs"),
    (lambda: NasrAttack(lr=0.0), "lr"),
    (lambda: NasrAttack(batch_size=0), "batch_size"),
    (lambda: NasrAttack(conv_filters=-1), "conv_filters"),
    (lambda: NasrAttack(val_fraction=1.0), "val_fraction"),
    (lambda: NasrAttack(val_fraction=-0.1), "val_fraction"),
    (lambda: NasrAttack(patience=0), "patience"),
    (lambda: NasrAttack(grad_scaling="minmax"), "grad_scaling"),
    (lambda: UnsupervisedAttack(epochs=0), "epochs"),
    (lambda: UnsupervisedAttack(grad_scaling="minmax"), "grad_scaling"),
    (lambda: UnsupervisedAttack(val_fraction=1.5), "val_fraction"),
    (lambda: CompactWhiteBox(C=0), "C"),
    (lambda: LiRAOffline(min_std=0), "min_std"),
    (lambda: LiRAOffline(min_refs_per_record=0), "min_refs_per_record"),
])
def test_bad_parameters_raise_at_fit(make, name):
    kf, km = synthetic(40, signal=3.0, seed=14)
    attack = make()  # sklearn manner: constructed as given, checked by fit
    feats = lira_features(np.zeros(40), np.ones((40, 2))) if isinstance(attack, LiRAOffline) else kf
    with pytest.raises(ValueError, match=rf"{type(attack).__name__}: {name}="):
        attack.fit(feats, km)


def test_bad_parameters_raise_at_construction():
    with pytest.raises(ValueError, match="LossThreshold: reduce='max'; reduce must be 'mean' or 'last'"):
        LossThreshold("max")
    with pytest.raises(ValueError, match="n_shadows=0; n_shadows must be at least 1"):
        ShadowModelAttack(_forest_train, _forest_predict, np.zeros((4, 2)), np.zeros(4), n_shadows=0)


def test_lira_matches_hand_computation():
    from scipy.stats import norm

    t = np.array([2.0, -1.0, 0.5])
    refs = np.array([[0.0, 1.0], [-1.0, -3.0], [1.0, 2.5]])
    # R = 2 < min_refs_per_record: one pooled sigma = sqrt(mean per-record variance).
    std = np.sqrt(np.mean(refs.var(axis=1, ddof=1)))
    expected = -norm.logsf((t - refs.mean(axis=1)) / std)
    feats = lira_features(t, refs)
    assert feats.shape == (3, 3) and np.array_equal(feats[:, 0], t)
    lira = LiRAOffline().fit(feats)
    assert lira.std_ == pytest.approx(std) and lira.threshold_ == 0.0
    np.testing.assert_allclose(lira.score_samples(feats), expected, rtol=1e-12)
    np.testing.assert_allclose(LiRAOffline().score_samples(feats), expected, rtol=1e-12)  # no fit: same pool
    # Per-record sigma once references suffice.
    per_record = -norm.logsf((t - refs.mean(axis=1)) / refs.std(axis=1, ddof=1))
    per_record_lira = LiRAOffline(min_refs_per_record=2).score_samples(feats)
    np.testing.assert_allclose(per_record_lira, per_record, rtol=1e-12)
    # The pooled sigma of fit applies to records scored against other (e.g. single) references.
    one = lira_features(t, refs[:, 0])
    np.testing.assert_allclose(lira.score_samples(one), -norm.logsf((t - refs[:, 0]) / std), rtol=1e-12)
    with pytest.raises(ValueError, match="at least one reference"):
        LiRAOffline().fit(t[:, None])


def test_no_long_functions_in_attacks():
    import ast
    from pathlib import Path

    long = []
    for path in (Path(__file__).resolve().parents[1] / "attacks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.name}:{node.name}")
    assert not long
