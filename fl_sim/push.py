"""What the aggregator's gradient-ascent push does to whom, measured.

For every push round of a federation whose aggregator pushes (global gradient ascent, sum
or normalised rule, alone or with isolation), each target record's loss and the L2 norm
of its own loss gradient (over all parameters, and over the last layer alone) under the
model the push started from and under the model sent; the loss rise; and each group's
part of the step (the victim's target members, the target non-members: the norm of
gamma * sum of the group's weighted gradients). Summaries per group go to results.json
(the federation's ``settings`` entry, key ``push``), the per-record values to
figure_data.json (``pushes``).

Measured after the rounds from the stored snapshots (role ``sent``, and the aggregate or
the victim's upload it was computed from), not inside the strategy: the per-record
gradient passes (two per push, over every target) stay off the rounds' critical path, and
what is measured is what was sent, read back under its checksum. A push whose snapshots
were not kept (``federation.keep_rounds``) is listed in ``notes`` instead.

Because the non-member targets are the same records for every victim
(:func:`fl_sim.splits.target_sets` balances each victim's members against the first
records of the shared non-member pools), the members' part of the step is all that a
victim changes in the push when two victims' federations start from the same model.
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.active import last_layer, per_record_gradients, record_norms, unit_weights, weighted_gradient
from fl_sim.catalog import Training
from fl_sim.config import Config
from fl_sim.models import model_from
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import Split, target_sets
from fl_sim.target import Data, initial_arrays, model_spec
from fl_sim.training import resolve_device

GROUPS = ("members", "non_members")
QUANTITIES = ("loss_before", "loss_after", "loss_rise", "grad_norm_before", "grad_norm_after",
              "grad_norm_last_before", "grad_norm_last_after")
PERCENTILES = (10, 25, 50, 75, 90)


def _flat(arrays: dict[str, np.ndarray], names=None) -> np.ndarray:
    return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k in (names or arrays)])


def _sig(values) -> list[float]:
    # 6 significant digits, as the rest of figure_data.json
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def pushed_from(cfg: Config, training: Training, store: SnapshotStore, rnd: int,
                initial: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray] | None]:
    """(what, arrays) the aggregator pushed in round ``rnd``, as GlobalAttacker chooses it:
    in an isolation round the victim's previous upload, otherwise the previous aggregate
    (round 1: the initial model). arrays is None when that snapshot is not in the store (not
kept, or the victim sent no upload that round)."""
    victim = cfg.attack.target_participant
    if training.isolate and rnd in set(cfg.isolate_rounds()) and rnd > 1:
        if store.find(rnd - 1, victim, "upload") is not None:
            return f"upload of participant {victim}, round {rnd - 1}", store.get(rnd - 1, victim, "upload")
        return f"upload of participant {victim}, round {rnd - 1}", None
    if rnd == 1:
        return "initial model", initial
    if store.find(rnd - 1, None, "global") is not None:
        return f"aggregate of round {rnd - 1}", store.get(rnd - 1, None, "global")
    return f"aggregate of round {rnd - 1}", None


def _sent(store: SnapshotStore, rnd: int, victim: int) -> dict[str, np.ndarray] | None:
    # GlobalAttacker stores it per participant; SecAggObserver once, for everyone
    for who in (victim, None):
        if store.find(rnd, who, "sent") is not None:
            return store.get(rnd, who, "sent")
    return None


def record_pass(model: torch.nn.Module, x, y, member: np.ndarray | None = None,
                normalized: bool = False) -> dict:
    """Each record's loss, gradient norm and last-layer gradient norm under ``model``; with
    ``member`` (0/1 per record), also each group's part of the step before gamma (the sum
    of its records' gradients, each weighted 1, or 1/||g|| with ``normalized``), flat."""
    last = last_layer(model)
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    losses, norms, last_norms = [], [], []
    for _, loss, grads in per_record_gradients(model, x, y):
        n = record_norms(grads)
        losses.append(loss.double().cpu().numpy())
        norms.append(n)
        last_norms.append(record_norms(grads, last).cpu().numpy() if last else np.full(len(n), np.nan))
    norms = torch.cat(norms)
    out = {"names": names, "loss": np.concatenate(losses), "grad_norm": norms.cpu().numpy(),
           "grad_norm_last": np.concatenate(last_norms)}
    if member is not None:
        w = (unit_weights(norms) if normalized else torch.ones_like(norms)).cpu().numpy()
        m = np.asarray(member, dtype=np.float64)
        out["parts"] = {g: np.concatenate([t.reshape(-1).double().cpu().numpy()
                                           for t in weighted_gradient(model, x, y, w * sel)])
                        for g, sel in (("members", m), ("non_members", 1 - m))}
    return out


def _summary(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    pct = np.percentile(v, PERCENTILES)
    return {"mean": float(v.mean()), **{("median" if p == 50 else f"p{p}"): float(q)
                                        for p, q in zip(PERCENTILES, pct)}}


def measure_push(cfg: Config, data: Data, victim_sets, before: dict, sent: dict,
                 normalized: bool) -> tuple[dict, dict]:
    """(summary, per-record values) of one push from ``before`` to ``sent`` on the victim's
    target records (``victim_sets``: :class:`fl_sim.splits.TargetSets`)."""
    idx = victim_sets.all_indices()
    member = np.r_[victim_sets.known_labels, victim_sets.eval_labels].astype(np.int64)
    x = np.asarray(data.x[idx], dtype=np.float32)
    y = np.asarray(data.y[idx], dtype=np.int64)
    spec, dev = model_spec(cfg, data), resolve_device(cfg.federation.device)
    pre = record_pass(model_from(spec, before).to(dev), x, y, member, normalized)
    post = record_pass(model_from(spec, sent).to(dev), x, y)
    per = {"loss_before": pre["loss"], "loss_after": post["loss"],
           "loss_rise": post["loss"] - pre["loss"],
           "grad_norm_before": pre["grad_norm"], "grad_norm_after": post["grad_norm"],
           "grad_norm_last_before": pre["grad_norm_last"], "grad_norm_last_after": post["grad_norm_last"]}
    gamma = cfg.attack.gamma
    # the trained parameters only: the push moves no buffer (BatchNorm statistics)
    step = _flat(sent, pre["names"]) - _flat(before, pre["names"])
    parts = {g: gamma * pre["parts"][g] for g in GROUPS}
    norm = float(np.linalg.norm(step))
    summary = {
        "push_norm": norm,
        "model_norm": float(np.linalg.norm(_flat(before, pre["names"]))),
        # each group's part of the step, gamma * || sum of its weighted gradients ||
        "step_part_norm": {g: float(np.linalg.norm(parts[g])) for g in GROUPS},
        # || members' part + non-members' part - (sent - before) || / || sent - before ||:
        # small when the measured parts are the step that was sent (float32 rounding remains)
        "step_mismatch": float(np.linalg.norm(parts["members"] + parts["non_members"] - step) / norm)
        if norm > 0 else None,
        **{g: {"records": int((member == (g == "members")).sum()),
               **{q: _summary(per[q][member == (g == "members")]) for q in QUANTITIES}}
           for g in GROUPS},
    }
    records = {"index": [int(i) for i in idx], "member": [int(m) for m in member],
               **{q: _sig(per[q]) for q in QUANTITIES}}
    return summary, records


def measure_pushes(cfg: Config, training: Training, data: Data, split: Split,
                   store: SnapshotStore) -> tuple[dict, list[dict]] | None:
    """(summary for results.json, per-round per-record values for figure_data.json) of
    every push the aggregator made in this federation; None when it made none."""
    if not training.global_ascent:
        return None
    victim = cfg.attack.target_participant
    sets = target_sets(split, [victim])
    initial = initial_arrays(cfg, data)
    rounds, records, notes = [], [], []
    for rnd in cfg.ascent_rounds():
        if rnd > cfg.federation.rounds:
            continue
        what, before = pushed_from(cfg, training, store, rnd, initial)
        sent = _sent(store, rnd, victim)
        if before is None or sent is None:
            notes.append(f"round {rnd}: push not measured, "
                         f"{'the ' + what if before is None else 'the model sent'} is not in the snapshot store")
            continue
        summary, per = measure_push(cfg, data, sets, before, sent, training.normalized)
        rounds.append({"round": rnd, "pushed_from": what, **summary})
        records.append({"round": rnd, **per})
    return ({"rule": "normalized" if training.normalized else "sum", "gamma": cfg.attack.gamma,
             "victim": victim, "rounds": rounds, "notes": notes},
            records)
