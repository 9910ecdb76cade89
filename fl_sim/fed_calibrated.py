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

from attacks.calibrated import LiRAOffline, logit_confidence
from attacks.metrics import choose_threshold, membership_metrics
from fl_sim.fedrun import build_target_model
from fl_sim.training import predict_logits, set_arrays


def _confidence(cfg, data, arrays, idx) -> np.ndarray:
    """(n,) logit-scaled confidence of the true class under one snapshot."""
    model = build_target_model(cfg, data)
    set_arrays(model, arrays)
    return logit_confidence(predict_logits(model, data.x[idx]), data.y[idx])


def _scores(cfg, data, store, victim, epoch, parts, others) -> list[np.ndarray] | None:
    """LiRA scores for ``victim`` at ``epoch``, one array per index set in ``parts`` (each set
    calibrated on its own); None when the victim's upload or every reference is missing.
    Each snapshot is read and run once for all the sets."""
    if store.find(epoch, victim, "upload") is None:
        return None
    refs = [q for q in others if store.find(epoch, q, "upload") is not None]
    if not refs:
        return None
    idx = np.concatenate(parts)
    target = _confidence(cfg, data, store.get(epoch, victim, "upload"), idx)
    ref = np.stack([_confidence(cfg, data, store.get(epoch, q, "upload"), idx) for q in refs],
                   axis=1)
    out, start = [], 0
    for part in parts:
        t, r = target[start:start + len(part)], ref[start:start + len(part)]
        out.append(LiRAOffline().fit(r).score(t, r))
        start += len(part)
    return out


def global_calibrated(cfg, data, split, store, epochs, notes) -> dict:
    from fl_sim.audit import _mean_result

    per, used_all = {}, {}
    for p in range(split.participants):
        others = [q for q in range(split.participants) if q != p]
        k_idx, k_lab = split.balanced(split.known_members[p], split.known_nonmembers)
        e_idx, e_lab = split.balanced(split.eval_members[p], split.eval_nonmembers)
        ks, es, used = [], [], []
        for e in epochs:
            scores = _scores(cfg, data, store, p, e, [k_idx, e_idx], others)
            if scores is None:
                notes.append(f"no upload of participant {p} (or no reference) in round {e}")
                continue
            ks.append(scores[0])
            es.append(scores[1])
            used.append(e)
        if not used:
            continue
        known, evals = np.mean(ks, axis=0), np.mean(es, axis=0)
        per[p] = membership_metrics(evals, e_lab, choose_threshold(known, k_lab))
        used_all[p] = used
    if not per:
        return {"name": "global_calibrated", "skipped": "; ".join(notes)}
    out = _mean_result("global_calibrated", per)
    out.update(epochs_used={str(p): u for p, u in used_all.items()}, notes=notes,
               target="mean over participants",
               references="the other participants' uploads of the same round")
    return out
