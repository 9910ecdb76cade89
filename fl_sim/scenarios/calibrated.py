"""Beyond the paper: a calibrated global attack (LiRA offline) in federated learning.

The aggregator holds, every round, one model per participant. For victim p, the other
participants' uploads of the same round were trained without p's records (they share the
global starting point, and the victim's earlier contributions to it), so they serve as
OUT reference models for free: no shadow training. Each record's confidence under p's upload
is compared with its confidences under the references; scores are averaged over the
chosen epochs. Reported like every attack, with TPR at low FPR, which the paper never gave.
"""

from __future__ import annotations

import numpy as np

from attacks import audit
from attacks.calibrated import LiRAOffline, lira_features
from attacks.metrics import choose_threshold, membership_metrics
from fl_sim.catalog import Scenario
from fl_sim.models import model_from
from fl_sim.scenarios.common import AttackContext, logit_confidence_of, mean_result
from fl_sim.scenarios.defended import audit_scores
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import target_sets
from fl_sim.target import model_spec


def _confidence(ctx: AttackContext, arrays, idx) -> np.ndarray:
    """(n,) logit-scaled confidence of the true class under one snapshot."""
    return logit_confidence_of(model_from(model_spec(ctx.cfg, ctx.data), arrays), ctx.data, idx)


def _scores(ctx: AttackContext, store: SnapshotStore, victim: int, epoch: int, parts,
            others) -> list[np.ndarray] | None:
    """LiRA scores for ``victim`` at ``epoch``, one array per index set in ``parts`` (each set
    calibrated on its own references); None when the victim's upload or every reference is
    missing. Each snapshot is read and run once for all the sets."""
    if store.find(epoch, victim, "upload") is None:
        return None
    refs = [q for q in others if store.find(epoch, q, "upload") is not None]
    if not refs:
        return None
    idx = np.concatenate(parts)
    target = _confidence(ctx, store.get(epoch, victim, "upload"), idx)
    ref = np.stack([_confidence(ctx, store.get(epoch, q, "upload"), idx) for q in refs], axis=1)
    out, start = [], 0
    for part in parts:
        feats = lira_features(target[start:start + len(part)], ref[start:start + len(part)])
        out.append(LiRAOffline().fit(feats).score_samples(feats))
        start += len(part)
    return out


def _one_victim(ctx, store, p, notes):
    others = [q for q in range(ctx.split.participants) if q != p]
    sets = target_sets(ctx.split, [p])
    ks, es, used = [], [], []
    for e in ctx.cfg.attack_epochs():
        scores = _scores(ctx, store, p, e, [sets.known, sets.eval], others)
        if scores is None:
            notes.append(f"no upload of participant {p} (or no reference) in round {e}")
            continue
        ks.append(scores[0])
        es.append(scores[1])
        used.append(e)
    if not used:
        return None, used
    known, evals = np.mean(ks, axis=0), np.mean(es, axis=0)
    res = membership_metrics(evals, sets.eval_labels, choose_threshold(known, sets.known_labels))
    res["empirical_epsilon"] = audit_scores(ctx, known, sets.known_labels, evals, sets.eval_labels,
                                            tests=ctx.split.participants)
    return res, used


def evaluate_calibrated_uploads(ctx: AttackContext, scenario: Scenario) -> dict:
    store = ctx.store(scenario)
    per, used_all, notes = {}, {}, []
    for p in range(ctx.split.participants):
        res, used = _one_victim(ctx, store, p, notes)
        if res is not None:
            per[p], used_all[p] = res, used
    if not per:
        return {"skipped": "; ".join(notes)}
    return {**mean_result(per, ctx.cfg.victims()),
            "empirical_epsilon": audit.combine({str(p): v["empirical_epsilon"] for p, v in per.items()}),
            "epochs_used": {str(p): u for p, u in used_all.items()},
            "notes": notes, "target": "mean over participants",
            "references": "the other participants' uploads of the same round"}
