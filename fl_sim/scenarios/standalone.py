"""Stand-alone and fine-tuning evaluators (Nasr et al. Sec. IV, Table IX).

The attacker's knowledge is the split's known members / known non-members, and every
attack is judged on the disjoint, balanced evaluation sets. White-box attacks read the
snapshots of the attack epochs (finetune mode: the final model; ``final`` scenarios: the
last model); the fine-tuning pairs read the snapshots before and after fine-tuning, with
D and D_delta each cut in halves (known, eval) in their seeded order.

The attacker's own data (for shadow and reference models): the split's ``reference`` pool
when it holds at least as many records as the target's training set; otherwise the pool
plus the attacker's known members and known non-members (Shokri et al.: the attacker
trains shadows on data from the same distribution that it holds). It never contains an
evaluation record. Shadow and reference models have the target's architecture, train on
as many records as the target did (fewer when the pool is small: half of it), and train
exactly as long as the target (:func:`fl_sim.standalone.train_like_target`).
"""

from __future__ import annotations

import numpy as np
import torch

from attacks.metrics import choose_threshold, membership_metrics
from fl_sim.catalog import Scenario
from fl_sim.errors import SnapshotError
from fl_sim.models import model_from
from fl_sim.runtime import derive_seed
from fl_sim.scenarios.common import (
    AttackContext,
    attack_kind,
    features_of,
    fit_and_score,
    kind_name,
    logit_confidence_of,
    make_attack,
)
from fl_sim.snapshots import SnapshotStore
from fl_sim.standalone import (
    AFTER,
    BEFORE,
    TAG_REFERENCE,
    TAG_SHADOW,
    final_round,
    finetune_sets,
    snapshot_dir,
    train_like_target,
)
from fl_sim.target import model_spec
from fl_sim.training import predict_proba


class TargetView:
    """The attacked stand-alone target: its snapshots, the balanced sets, and a cache of
    white-box features per (snapshot round, record set)."""

    def __init__(self, ctx: AttackContext):
        cfg, split = ctx.cfg, ctx.split
        self.ctx, self.cfg, self.data, self.split = ctx, cfg, ctx.data, split
        self.mode = cfg.federation.mode
        self.store = SnapshotStore(snapshot_dir(ctx.run_dir, self.mode), within=ctx.run_dir)
        self.final = final_round(cfg)
        if self.store.find(self.final, None, "global") is None:
            raise SnapshotError(f"no final snapshot (round {self.final}) in {self.store.dir}; "
                                "train the target first")
        self._feats: dict = {}
        self._arrays: dict = {}
        self.known = split.balanced(split.known_members[0], split.known_nonmembers)
        self.eval = split.balanced(split.eval_members[0], split.eval_nonmembers)
        self.seed = ctx.seed

    def arrays(self, rnd: int) -> dict:
        if rnd not in self._arrays:
            self._arrays[rnd] = self.store.get(rnd, None, "global")
        return self._arrays[rnd]

    def features(self, rnd: int, idx: np.ndarray):
        key = (rnd, np.asarray(idx, dtype=np.int64).tobytes())
        if key not in self._feats:
            self._feats[key], = features_of(self.cfg, self.data, self.arrays(rnd), idx)
        return self._feats[key]

    def attack_rounds(self, notes: list[str]) -> list[int]:
        """Snapshots the white-box attacks read: the attack epochs that were stored (or the
        final model alone); in finetune mode the final (fine-tuned) model."""
        if self.mode == "finetune":
            return [self.final]
        wanted = self.cfg.attack_epochs()
        have = [e for e in wanted if self.store.find(e, None, "global") is not None]
        if len(have) < len(wanted):
            notes.append(f"snapshots of epochs {sorted(set(wanted) - set(have))} missing")
        return have or [self.final]

    def model(self, rnd: int) -> torch.nn.Module:
        return model_from(model_spec(self.cfg, self.data), self.arrays(rnd))


def whitebox_attack(t: TargetView, rounds: list[int], kind, known, evals, seed: int) -> dict:
    """One white-box attack (a ``make_attack`` kind) on the snapshots ``rounds``: fitted on
    ``known`` = (indices, 0/1 labels), measured on ``evals``. Exposed for controls."""
    (k_idx, k_lab), (e_idx, e_lab) = known, evals
    kf = [t.features(r, k_idx) for r in rounds]
    ef = [t.features(r, e_idx) for r in rounds]
    return fit_and_score(make_attack(t.cfg, kind, seed), kf, np.asarray(k_lab), ef,
                         np.asarray(e_lab))


FINETUNE_SETS = {  # targets -> (member set, non-member set, description)
    "d_vs_delta": ("delta", "d", "member (label 1) = D_delta (the fine-tuning set); "
                   "non-member (0) = D"),
    "d_vs_nonmembers": ("d", None, "member (label 1) = D; non-member (0) = records never "
                        "trained on"),
    "delta_vs_nonmembers": ("delta", None, "member (label 1) = D_delta; non-member (0) = "
                            "records never trained on"),
}


def _finetune_pair(t: TargetView, targets: str):
    members, nonmembers, what = FINETUNE_SETS[targets]
    sets, sp = finetune_sets(t.cfg, t.split), t.split
    known_non = sets[f"{nonmembers}_known"] if nonmembers else sp.known_nonmembers
    eval_non = sets[f"{nonmembers}_eval"] if nonmembers else sp.eval_nonmembers
    return (sp.balanced(sets[f"{members}_known"], known_non),
            sp.balanced(sets[f"{members}_eval"], eval_non), what)


def evaluate_target(t: TargetView, scenario: Scenario) -> dict:
    """White-box (or loss) attacks on the stand-alone target's snapshots."""
    kind, notes = attack_kind(t.cfg, scenario), []
    if scenario.targets in FINETUNE_SETS:
        known, evals, what = _finetune_pair(t, scenario.targets)
        res = whitebox_attack(t, [BEFORE, AFTER], kind, known, evals, t.seed)
        return {**res, "sets": what, "snapshots": ["before fine-tuning", "after fine-tuning"],
                "attack_model": kind_name(kind), "notes": notes}
    if scenario.snapshots == "final":
        res = whitebox_attack(t, [t.final], kind, t.known, t.eval, t.seed)
        return {**res, "notes": notes, "model": "final"}
    rounds = t.attack_rounds(notes)
    res = whitebox_attack(t, rounds, kind, t.known, t.eval, t.seed)
    return {**res, "epochs_used": rounds if t.mode == "standalone" else ["after fine-tuning"],
            "attack_model": kind_name(kind), "notes": notes}


def attacker_pool(split) -> tuple[list[int], str]:
    """The attacker's own records for shadow / reference models (never eval records)."""
    ref = list(split.reference)
    if len(ref) >= len(split.train[0]):
        return ref, "reference pool"
    return ref + list(split.known_members[0]) + list(split.known_nonmembers), \
        "reference pool + known members + known non-members" if ref else \
        "known members + known non-members"


def evaluate_shadow(t: TargetView, scenario: Scenario) -> dict:
    """Shokri et al. shadow models scoring the final model's probability vectors."""
    from attacks.blackbox import ShadowModelAttack

    cfg, data = t.cfg, t.data
    pool, source = attacker_pool(t.split)
    # each shadow trains on a random half of what it is given: give it twice the target's size
    n_train = len(t.split.train[0])
    pool = np.random.default_rng(derive_seed(t.seed, TAG_SHADOW, 1)).permutation(
        np.asarray(pool, dtype=np.int64))[:2 * n_train]
    atk = ShadowModelAttack(lambda x, y, seed: train_like_target(cfg, data, x, y, seed),
                            predict_proba, data.x[pool], data.y[pool],
                            n_shadows=cfg.attack.reference_models,
                            seed=derive_seed(t.seed, TAG_SHADOW) & 0x7FFF_FFFF)
    target = t.model(t.final)
    (k_idx, k_lab), (e_idx, e_lab) = t.known, t.eval
    known = (predict_proba(target, data.x[k_idx]), data.y[k_idx])
    evals = (predict_proba(target, data.x[e_idx]), data.y[e_idx])
    # the shadows give the scores; the attacker also knows some target members and places
    # its threshold on them
    atk.fit(known, k_lab)
    res = membership_metrics(atk.score_samples(evals), e_lab, atk.threshold_)
    return {**res, "shadow_models": cfg.attack.reference_models,
            "shadow_data": f"{source}; {len(pool) // 2} records per shadow (random halves of "
                           f"{len(pool)})",
            "threshold_from": "known members / non-members, scored on the target", "notes": []}


def _reference_confidences(t: TargetView, pool, size, k_idx, e_idx):
    """(known, eval) logit confidences under each reference model; a known record that
    is IN a reference's training subset gets NaN there."""
    cfg, data, n_ref = t.cfg, t.data, t.cfg.attack.reference_models
    ref_k = np.full((len(k_idx), n_ref), np.nan)
    ref_e = np.empty((len(e_idx), n_ref))
    for r in range(n_ref):
        rng = np.random.default_rng(derive_seed(t.seed, TAG_REFERENCE, r))
        half = rng.permutation(pool)[:size]
        model = train_like_target(cfg, data, data.x[half], data.y[half],
                                  derive_seed(t.seed, TAG_REFERENCE, r, 1))
        ref_e[:, r] = logit_confidence_of(model, data, e_idx)
        out = ~np.isin(k_idx, half)
        ref_k[out, r] = logit_confidence_of(model, data, k_idx[out])
    return ref_k, ref_e


def evaluate_lira(t: TargetView, scenario: Scenario) -> dict:
    """LiRA offline: every reference model is OUT for every evaluation record (references
    train on random subsets, at most half, of the attacker's pool, which excludes them).
    Known records that fall into a reference's subset are scored against the references
    they were OUT of (the threshold is chosen on the known records)."""
    from attacks.calibrated import LiRAOffline, lira_features

    pool, source = attacker_pool(t.split)
    pool = np.asarray(pool, dtype=np.int64)
    (k_idx, k_lab), (e_idx, e_lab) = t.known, t.eval
    size = min(len(pool) // 2, len(t.split.train[0]))
    ref_k, ref_e = _reference_confidences(t, pool, size, k_idx, e_idx)
    target = t.model(t.final)
    tk, te = logit_confidence_of(target, t.data, k_idx), logit_confidence_of(target, t.data, e_idx)
    eval_feats = lira_features(te, ref_e)
    lira = LiRAOffline().fit(eval_feats)  # pooled OUT variance (eval records: all refs OUT)
    ok = ~np.all(np.isnan(ref_k), axis=1)
    notes = [] if ok.all() else [f"{int((~ok).sum())} known records were IN every reference "
                                 "model; the threshold is chosen without them"]
    ks = lira.score_samples(lira_features(tk[ok], np.nanmean(ref_k[ok], axis=1)[:, None]))
    res = membership_metrics(lira.score_samples(eval_feats), e_lab,
                             choose_threshold(ks, np.asarray(k_lab)[ok]))
    return {**res, "reference_models": t.cfg.attack.reference_models,
            "reference_data": f"{source}; {size} random records of {len(pool)} per reference "
                              "(every reference is OUT for every evaluation record)",
            "method": "LiRA offline (Carlini et al. 2022), pooled variance", "notes": notes}
