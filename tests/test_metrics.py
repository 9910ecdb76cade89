"""attacks.metrics: thresholds, accuracy, AUC, TPR at low FPR, the stored ROC curve."""

import json
import math

import numpy as np
import pytest

from attacks.metrics import (
    FPR_TARGETS,
    average_roc,
    choose_threshold,
    membership_metrics,
    tpr_at_fpr,
)


def test_perfect_separation():
    m = np.array([1] * 50 + [0] * 50)
    s = np.concatenate([np.linspace(2, 3, 50), np.linspace(0, 1, 50)])
    thr = choose_threshold(s, m)
    assert 1.0 < thr < 2.0  # halfway between the classes, not on a training score
    r = membership_metrics(s, m, thr)
    assert r["accuracy"] == 1.0 and r["auc"] == 1.0
    assert r["tpr_at_fpr"] == {"0.001": 1.0, "0.01": 1.0, "0.1": 1.0}
    assert r["n_members"] == 50 and r["n_nonmembers"] == 50 and r["threshold"] == thr


def test_inverted_scores_give_zero_auc():
    m = np.array([1, 1, 0, 0])
    r = membership_metrics(np.array([0.0, 0.1, 0.8, 0.9]), m, 0.5)
    assert r["auc"] == 0.0 and r["accuracy"] == 0.0 and r["tpr_at_fpr"]["0.1"] == 0.0


def test_random_scores_near_chance():
    rng = np.random.default_rng(0)
    m_fit, m_eval = rng.integers(0, 2, 4000), rng.integers(0, 2, 4000)
    thr = choose_threshold(rng.normal(size=4000), m_fit)
    r = membership_metrics(rng.normal(size=4000), m_eval, thr)
    assert 0.45 < r["accuracy"] < 0.55 and 0.45 < r["auc"] < 0.55
    assert r["tpr_at_fpr"]["0.01"] < 0.05


def test_hand_computed_case():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    m = np.array([1, 1, 0, 1, 0, 0])
    thr = choose_threshold(s, m)
    # Cuts below 0.8 and below 0.6 both classify 5 of 6 correctly.
    assert thr in (pytest.approx(0.75), pytest.approx(0.55))
    r = membership_metrics(s, m, thr)
    assert r["accuracy"] == pytest.approx(5 / 6)
    assert r["auc"] == pytest.approx(8 / 9)  # 8 of 9 member/non-member pairs ordered right
    # Zero false positives admit the two top members; FPR steps are 1/3.
    assert r["tpr_at_fpr"]["0.001"] == pytest.approx(2 / 3)
    assert r["tpr_at_fpr"]["0.1"] == pytest.approx(2 / 3)
    # Interpolated between (0, 2/3) and (1/3, 1).
    assert r["tpr_at_fpr_interp"]["0.1"] == pytest.approx(2 / 3 + 0.3 * (1 / 3))
    assert membership_metrics(s, m, 0.65)["accuracy"] == pytest.approx(4 / 6)


def test_threshold_convention_and_ties():
    s = np.array([1.0, 1.0, 1.0, 0.0])
    m = np.array([1, 1, 0, 0])
    thr = choose_threshold(s, m)
    assert membership_metrics(s, m, thr)["accuracy"] == 0.75
    # All scores tied: the best is to call everyone the majority class.
    thr = choose_threshold(np.zeros(5), np.array([1, 1, 1, 0, 0]))
    assert (np.zeros(5) >= thr).all()
    thr = choose_threshold(np.zeros(5), np.array([1, 0, 0, 0, 0]))
    assert not (np.zeros(5) >= thr).any()


def test_tpr_at_fpr_is_conservative():
    fpr = np.array([0.0, 0.0, 0.05, 0.2, 1.0])
    tpr = np.array([0.0, 0.3, 0.5, 0.8, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.3
    assert tpr_at_fpr(fpr, tpr, 0.1) == 0.5


def _read_off(roc: dict, fpr: float) -> float:
    f = np.array(roc["fpr"])
    return float(np.array(roc["tpr"])[np.flatnonzero(np.isclose(f, fpr))[0]])


def test_roc_and_tpr_at_fpr_describe_the_same_curve():
    rng = np.random.default_rng(2)
    per = []
    for p in range(4):
        m = rng.integers(0, 2, 600)
        per.append(membership_metrics(rng.normal(size=600) + (1 + p) * m, m, 0.5))
    for r in per:
        for k, v in r["tpr_at_fpr"].items():
            assert _read_off(r["roc"], float(k)) == v
    avg = average_roc([r["roc"] for r in per])
    for k in FPR_TARGETS:
        assert _read_off(avg, float(k)) == pytest.approx(np.mean([r["tpr_at_fpr"][k] for r in per]))


def test_roc_on_grid_and_json_ready():
    rng = np.random.default_rng(1)
    m = rng.integers(0, 2, 5000)
    s = rng.normal(size=5000) + m
    r = membership_metrics(s, m, 0.5)
    f, t = np.array(r["roc"]["fpr"]), np.array(r["roc"]["tpr"])
    assert 10 < len(f) <= 250 and len(f) == len(t) and f.min() == 0.0 and 1e-4 in f
    assert f[0] == 0.0 and f[-1] == 1.0 and t[-1] == 1.0
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(t) >= 0)
    json.dumps(r)  # plain floats/ints/lists only


def test_single_class_and_bad_input():
    r = membership_metrics(np.array([0.1, 0.2]), np.array([1, 1]), 0.0)
    assert r["accuracy"] == 1.0 and math.isnan(r["auc"])
    with pytest.raises(ValueError):
        membership_metrics(np.array([0.1, np.nan]), np.array([1, 0]), 0.0)
    with pytest.raises(ValueError):
        choose_threshold(np.array([0.1, 0.2]), np.array([1, 2]))

