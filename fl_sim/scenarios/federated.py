"""Federated evaluators (Nasr et al. Sec. V, Table X).

- the global attacker (the aggregator) attacks participant p from p's uploads at the
  chosen epochs; ``each_participant`` scenarios report the mean, ``victim`` ones the
  victim (``attack.target_participant``);
- the local attacker (the last participant) attacks the union of the other participants'
  data from the global models it received.
Every attack is trained on the attacker's known members/non-members only, and judged on
the disjoint, balanced evaluation sets of the split (:func:`fl_sim.splits.target_sets`,
the same sets the active attackers push on).
"""

from __future__ import annotations

import numpy as np

from attacks import audit
from fl_sim.catalog import Scenario
from fl_sim.federated import local_attacker_of, others_of, runs_of
from fl_sim.scenarios.common import (
    AttackContext,
    attack_kind,
    features_of,
    losses_of,
    make_attack,
    mean_result,
)
from fl_sim.scenarios.defended import audited_fit
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import TargetSets, target_sets


def upload_jobs(ctx: AttackContext, scenario: Scenario) -> list[tuple[SnapshotStore, int]]:
    """(snapshots, participant attacked) pairs: every participant in the one passive run,
    or each victim in the federation that targeted it (``attack.victims``)."""
    if scenario.targets == "each_participant":
        store = ctx.store(scenario)
        return [(store, p) for p in range(ctx.split.participants)]
    return [(ctx.store(scenario, name), c.attack.target_participant)
            for name, c in runs_of(ctx.cfg, scenario.training_for("federated"))]


def with_references(ctx: AttackContext, store: SnapshotStore, epoch: int, participant: int,
                    feats: list, idx_sets: list[np.ndarray]) -> list:
    """``feats`` (one FeatureSet per index set) carrying the records' losses under the
    other participants' uploads of round ``epoch``: models the aggregator holds anyway,
    trained from the same global model without these records. Unchanged when
    ``attack.network_inputs`` lacks "references" or no other upload of that round exists."""
    refs = [q for q in range(ctx.split.participants)
            if q != participant and store.find(epoch, q, "upload") is not None]
    if "references" not in ctx.cfg.attack.network_inputs or not refs:
        return feats
    idx = np.concatenate(idx_sets)
    losses = np.stack([losses_of(ctx.cfg, ctx.data, store.get(epoch, q, "upload"), idx) for q in refs], 1)
    bounds = np.cumsum([0] + [len(i) for i in idx_sets])
    return [f.with_reference(losses[a:b]) for f, a, b in zip(feats, bounds[:-1], bounds[1:])]


def _upload_features(ctx: AttackContext, store: SnapshotStore, participant: int,
                     sets: TargetSets, notes: list[str], role: str = "upload"):
    """Features of the participant's uploads at the attack epochs; with ``role="global"``
    (SecAgg+: the aggregator holds only the sum) of the aggregates instead."""
    known, evals, used = [], [], []
    who = participant if role == "upload" else None
    for e in ctx.cfg.attack_epochs():
        if store.find(e, who, role) is None:
            notes.append(f"no {role} snapshot of participant {participant} in round {e} "
                         "(failed or not kept)")
            continue
        k, ev = with_references(ctx, store, e, participant,
                                features_of(ctx.cfg, ctx.data, store.get(e, who, role),
                                            sets.known, sets.eval), [sets.known, sets.eval])
        known.append(k)
        evals.append(ev)
        used.append(e)
    return known, evals, used


def evaluate_uploads(ctx: AttackContext, scenario: Scenario) -> dict:
    """The global attacker: one attack per participant on its uploads; the mean."""
    kind = attack_kind(ctx.cfg, scenario)
    per, used_all, notes = {}, {}, []
    jobs = upload_jobs(ctx, scenario)
    role = scenario.observed_role(ctx.cfg.defense.name)
    for store, p in jobs:
        sets = target_sets(ctx.split, [p])
        known, evals, used = _upload_features(ctx, store, p, sets, notes, role)
        if used:
            per[p] = audited_fit(ctx, make_attack(ctx.cfg, kind, ctx.seed + p), known,
                                 sets.known_labels, evals, sets.eval_labels, tests=len(jobs))
            used_all[p] = used
    if not per:
        return {"skipped": "; ".join(notes)}
    passive = scenario.targets == "each_participant"
    out = mean_result(per, ctx.cfg.victims() if passive else None)
    out["empirical_epsilon"] = audit.combine({str(p): v["empirical_epsilon"] for p, v in per.items()})
    if role == "global":
        out["observed"] = "the aggregates: SecAgg+ hides each upload"
    return {**out, "epochs_used": {str(p): u for p, u in used_all.items()}, "notes": notes,
            "target": "mean over participants" if passive else
            f"victims {sorted(per)}, one federation each" if len(per) > 1 else
            f"participant {next(iter(per))}",
            "judged_on": "every participant's records" if passive else "the victims' records"}


def local_observations(store: SnapshotStore, attacker: int, epochs: list[int]):
    """(round, participant, role, epoch) of the global model after each epoch as the local
    attacker saw it: what it received at the start of the next round, or the final model
    (which every participant receives at the end)."""
    last = max(store.rounds("global"), default=0)
    out = []
    for e in epochs:
        if store.find(e + 1, attacker, "received"):
            out.append((e + 1, attacker, "received", e))
        elif e == last:
            out.append((e, None, "global", e))
    return out


def evaluate_received(ctx: AttackContext, scenario: Scenario) -> dict:
    """The local attacker: the union of the others' records, from the models it received."""
    store, epochs = ctx.store(scenario), ctx.cfg.attack_epochs()
    sets = target_sets(ctx.split, others_of(ctx.cfg))
    known, evals, used = [], [], []
    for rnd, who, role, epoch in local_observations(store, local_attacker_of(ctx.cfg), epochs):
        k, ev = features_of(ctx.cfg, ctx.data, store.get(rnd, who, role), sets.known, sets.eval)
        known.append(k)
        evals.append(ev)
        used.append(epoch)
    notes = [] if len(used) == len(epochs) else [f"local attacker observed epochs {used} of {epochs}"]
    if not used:
        return {"skipped": "; ".join(notes)}
    attack = make_attack(ctx.cfg, attack_kind(ctx.cfg, scenario), ctx.seed)
    return {**audited_fit(ctx, attack, known, sets.known_labels, evals, sets.eval_labels),
            "epochs_used": used, "notes": notes, "target": "union of the other participants' data"}
