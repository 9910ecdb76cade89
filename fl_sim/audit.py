"""Attacks on a run's snapshots: snapshots + split → white-box features → attack → metrics.

Federated attacks (Nasr et al. Sec. V, Table X):
- global attacker (the aggregator) attacks participant p from p's uploads at the chosen
  epochs; passive attacks cover every participant and report the mean, active ones the
  victim (``attack.target_participant``);
- local attacker (participant N-1) attacks the union of the other participants' data from
  the global models it received.
Every attack is trained on the attacker's known members/non-members only, and judged on
the disjoint, balanced evaluation sets of the split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from attacks.metrics import choose_threshold, membership_metrics
from fl_sim.config import Config
from fl_sim.fedrun import (SETTING_OF_ATTACK, Data, build_target_model, local_attacker_of)
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import Split
from fl_sim.training import set_arrays


def features_of(cfg: Config, data: Data, arrays: dict, *idx_sets: np.ndarray) -> list:
    """White-box features of each index set under one snapshot (one model built for all)."""
    from attacks.features import extract_features

    model = build_target_model(cfg, data)
    set_arrays(model, arrays)
    return [extract_features(model, data.x[idx], data.y[idx], layers=cfg.attack.layers,
                             output_layers=tuple(cfg.attack.output_layers))
            for idx in idx_sets]


def make_attack(cfg: Config, kind: str, seed: int):
    """kind: 'nasr' (supervised network), 'compact', 'unsupervised', 'loss'."""
    if kind == "nasr":
        from attacks.supervised import NasrAttack

        return NasrAttack(conv_filters=cfg.attack.conv_filters, lr=cfg.attack.lr_attack_model,
                          epochs=cfg.attack.epochs_attack_model, seed=seed)
    if kind == "compact":
        from attacks.compact import CompactWhiteBox

        return CompactWhiteBox(seed=seed)
    if kind == "unsupervised":
        from attacks.unsupervised import UnsupervisedAttack

        return UnsupervisedAttack(seed=seed)
    if kind == "loss":
        from attacks.loss_threshold import LossThreshold

        return LossThreshold()
    raise ValueError(kind)


def fit_and_score(attack, known_feats, known_lab, eval_feats, eval_lab,
                  supervised: bool = True) -> dict:
    """Fit on the attacker's knowledge, pick the threshold there, measure on eval."""
    if supervised:
        attack.fit(known_feats, known_lab)
    else:
        # unsupervised: fits on the target records without labels
        attack.fit(eval_feats)
    thr = getattr(attack, "threshold_", None)
    if thr is None:
        thr = choose_threshold(attack.score(known_feats), known_lab)
    scores = attack.score(eval_feats)
    return membership_metrics(scores, eval_lab, thr)


def _snapshot_features(cfg, data, store: SnapshotStore, epochs, participant, role,
                       known_idx, eval_idx, notes: list[str]):
    known, evals, used = [], [], []
    for e in epochs:
        entry = store.find(e, participant, role)
        if entry is None:
            who = "server" if participant is None else f"participant {participant}"
            notes.append(f"no {role} snapshot of {who} in round {e} (failed or not kept)")
            continue
        k, ev = features_of(cfg, data, store.get(e, participant, role), known_idx, eval_idx)
        known.append(k)
        evals.append(ev)
        used.append(e)
    return known, evals, used


def _global_attack(cfg, data, split, store, participant, epochs, kind, seed, notes):
    k_idx, k_lab = split.balanced(split.known_members[participant], split.known_nonmembers)
    e_idx, e_lab = split.balanced(split.eval_members[participant], split.eval_nonmembers)
    known, evals, used = _snapshot_features(cfg, data, store, epochs, participant, "upload",
                                            k_idx, e_idx, notes)
    if not used:
        return None, used
    res = fit_and_score(make_attack(cfg, kind, seed), known, k_lab, evals, e_lab,
                        supervised=kind != "unsupervised")
    return res, used


def _local_observations(store: SnapshotStore, attacker: int, epochs: list[int]):
    """(round, participant, role) of the global model after each epoch as the local attacker
    saw it: what it received at the start of the next round, or the final model (which every
    participant receives at the end)."""
    last = max(store.rounds("global"), default=0)
    out = []
    for e in epochs:
        if store.find(e + 1, attacker, "received"):
            out.append((e + 1, attacker, "received", e))
        elif e == last:
            out.append((e, None, "global", e))
    return out


def _local_attack(cfg, data, split, store, epochs, kind, seed, notes):
    attacker = local_attacker_of(cfg)
    others = [p for p in range(split.participants) if p != attacker]
    k_idx, k_lab = split.balanced([i for p in others for i in split.known_members[p]],
                                  split.known_nonmembers)
    e_idx, e_lab = split.balanced([i for p in others for i in split.eval_members[p]],
                                  split.eval_nonmembers)
    known, evals, used = [], [], []
    for rnd, who, role, epoch in _local_observations(store, attacker, epochs):
        k, ev = features_of(cfg, data, store.get(rnd, who, role), k_idx, e_idx)
        known.append(k)
        evals.append(ev)
        used.append(epoch)
    if len(used) < len(epochs):
        notes.append(f"local attacker observed epochs {used} of {epochs}")
    if not used:
        return None, used
    return fit_and_score(make_attack(cfg, kind, seed), known, k_lab, evals, e_lab,
                         supervised=kind != "unsupervised"), used


def _mean_result(name: str, per: dict[int, dict]) -> dict:
    vals = list(per.values())
    keys = ("accuracy", "auc")
    out = {k: float(np.mean([v[k] for v in vals])) for k in keys}
    out["tpr_at_fpr"] = {f: float(np.mean([v["tpr_at_fpr"][f] for v in vals]))
                         for f in vals[0]["tpr_at_fpr"]}
    out["n_members"] = int(sum(v["n_members"] for v in vals))
    out["n_nonmembers"] = int(sum(v["n_nonmembers"] for v in vals))
    out["roc"] = vals[0].get("roc")
    out["per_participant"] = {str(p): {k: v[k] for k in ("accuracy", "auc", "tpr_at_fpr")}
                              for p, v in per.items()}
    return {"name": name, **out}


def run_federated_attack(cfg: Config, data: Data, split: Split, run_dir: Path, name: str,
                         echo=print) -> dict | None:
    torch.manual_seed(cfg.seed)
    setting = SETTING_OF_ATTACK[name]
    store = SnapshotStore(Path(run_dir) / "snapshots" / setting)
    epochs = cfg.attack_epochs()
    seed = cfg.seed + cfg.attack.seed_offset
    kind = {"global_compact": "compact", "global_unsupervised": "unsupervised"}.get(
        name, "unsupervised" if cfg.attack.unsupervised else "nasr")
    notes: list[str] = []
    if name.startswith("local_"):
        res, used = _local_attack(cfg, data, split, store, epochs, kind, seed, notes)
        if res is None:
            return {"name": name, "skipped": "; ".join(notes)}
        return {"name": name, **res, "epochs_used": used, "notes": notes,
                "target": "union of the other participants' data"}
    if name == "global_calibrated":
        from fl_sim.fed_calibrated import global_calibrated

        return global_calibrated(cfg, data, split, store, epochs, notes)
    victims = list(range(split.participants)) if setting == "passive" else \
        [cfg.attack.target_participant]
    per, used_all = {}, {}
    for p in victims:
        res, used = _global_attack(cfg, data, split, store, p, epochs, kind, seed + p, notes)
        if res is not None:
            per[p], used_all[p] = res, used
    if not per:
        return {"name": name, "skipped": "; ".join(notes)}
    out = _mean_result(name, per)
    out.update(epochs_used={str(p): u for p, u in used_all.items()}, notes=notes,
               target="mean over participants" if len(victims) > 1 else f"participant {victims[0]}")
    return out


def run_attacks(cfg: Config, data: Data, split: Split, run_dir: Path, echo=print) -> list[dict]:
    results = []
    if cfg.federation.mode != "federated":
        from fl_sim.standalone import run_standalone_attacks

        return run_standalone_attacks(cfg, data, split, run_dir, echo=echo)
    for name in cfg.attack.names:
        if name not in SETTING_OF_ATTACK:
            print(f"fl-sim: note: attack {name} is not a federated attack; skipped",
                  file=sys.stderr)
            continue
        res = run_federated_attack(cfg, data, split, run_dir, name, echo)
        if res is not None:
            results.append(res)
    return results
