"""Stand-alone (centralized) settings of Nasr et al. (2019): train one model, attack it.

Two training modes (``federation.mode``), both with the clients' training code
(:func:`fl_sim.training.train_epochs`, same optimizer, batch size and learning rate):

- ``standalone``: train on ``split.train[0]`` for ``federation.rounds`` epochs. Snapshots
  (role ``global``, participant None, round = epoch) of the attack epochs and the last
  epoch go to ``<run>/snapshots/standalone``.
- ``finetune`` (paper Table IX): the training set is shuffled with the seed and cut in
  D (the first ``1 - finetune_fraction``) and D_delta (the rest). The model trains on D for
  ``rounds`` epochs (snapshot round 1, "before"), then is fine-tuned on D_delta for
  ``finetune_epochs`` epochs (snapshot round 2, "after"), in ``<run>/snapshots/finetune``.
  The sets (and their known/eval halves) are saved in ``<run>/finetune_split.json``.

Attacks (``attack.names``; names that do not apply to the mode are skipped with a note on
stderr). The attacker's knowledge is the split's known members / known non-members, and
every attack is judged on the disjoint, balanced evaluation sets:

- ``standalone_whitebox``: the supervised Nasr attack on the snapshots of the attack epochs
  (finetune mode: the final model only); ``standalone_unsupervised`` (fitted on the
  unlabelled evaluation records); ``standalone_compact``; ``loss_threshold`` (loss of the
  final model);
- ``standalone_blackbox_shadow``: Shokri et al. shadow models scoring the final model's
  probability vectors;
- ``calibrated``: LiRA offline with ``attack.reference_models`` reference models;
- finetune mode only: ``finetune_d_vs_delta`` (member = D_delta, the fine-tuning set,
  label 1; non-member = D), ``finetune_d_vs_nonmembers``, ``finetune_delta_vs_nonmembers``:
  the supervised white-box attack with both snapshots (before and after fine-tuning).
  Knowledge/evaluation: each of D and D_delta is cut in halves (known, eval) in its seeded
  order; the balanced sets pair known with known and eval with eval.

The attacker's own data (for shadow and reference models): the split's ``reference`` pool
when it holds at least as many records as the target's training set; otherwise the pool
plus the attacker's known members and known non-members (Shokri et al.: the attacker
trains shadows on data from the same distribution that it holds). It never contains an
evaluation record. Shadow and reference models have the target's architecture, train on
as many records as the target did (fewer when the pool is small: half of it), and train
exactly as long as the target (in finetune mode: the same D / D_delta schedule on their
own data), so that they overfit like it.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from attacks.metrics import choose_threshold, membership_metrics
from fl_sim.audit import features_of, fit_and_score, make_attack
from fl_sim.config import Config
from fl_sim.errors import ConfigError, SnapshotError
from fl_sim.fedrun import Data, build_target_model, initial_arrays, measure
from fl_sim.snapshots import SnapshotStore, atomic_write_bytes
from fl_sim.splits import Split
from fl_sim.training import (as_tensors, get_arrays, make_optimizer, predict_logits, predict_proba,
                             set_arrays, train_epochs)

STANDALONE_ATTACKS = ("standalone_whitebox", "standalone_unsupervised", "standalone_compact",
                      "loss_threshold", "standalone_blackbox_shadow", "calibrated")
FINETUNE_ATTACKS = ("finetune_d_vs_delta", "finetune_d_vs_nonmembers",
                    "finetune_delta_vs_nonmembers")
ATTACKS_OF_MODE = {"standalone": STANDALONE_ATTACKS,
                   "finetune": STANDALONE_ATTACKS + FINETUNE_ATTACKS}
BEFORE, AFTER = 1, 2  # finetune snapshot rounds

# distinct streams for every random choice derived from cfg.seed
_TAG_EPOCH, _TAG_FINETUNE_SPLIT, _TAG_FT_EPOCH, _TAG_SHADOW, _TAG_REFERENCE = 11, 12, 13, 14, 15


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (``cfg.seed`` first), via numpy's SeedSequence."""
    state = np.random.SeedSequence([int(p) & 0xFFFF_FFFF for p in parts]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


@contextmanager
def _threads(cfg: Config):
    """torch intra-op threads = the CPU share of one participant (``federation.num_cpus``,
    as the Flower clients use), restored afterwards. Small FC batches on more threads than
    free cores spin-wait badly (measured 40x slower on 2 loaded cores)."""
    before = torch.get_num_threads()
    # the rule of fl_sim.federation.threads_for (not imported: it pulls in Flower)
    torch.set_num_threads(max(1, int(cfg.federation.num_cpus)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def snapshot_dir(run_dir: Path, mode: str) -> Path:
    return Path(run_dir) / "snapshots" / mode


def finetune_epochs(cfg: Config) -> int:
    fed = cfg.federation
    return fed.finetune_epochs or max(1, fed.rounds // 2)


# ------------------------------------------------------------------ training


def _fit(cfg: Config, model: torch.nn.Module, x, y, epochs: int, seed: int, tag: int,
         on_epoch=None) -> None:
    """``epochs`` passes of the clients' SGD over (x, y), one optimizer throughout (momentum
    carries over), batch order of epoch e from (seed, tag, e)."""
    fed = cfg.federation
    opt = make_optimizer(model, fed.lr, fed.momentum, fed.weight_decay)
    x, y = as_tensors(x, y)
    for e in range(1, epochs + 1):
        train_epochs(model, x, y, epochs=1, batch_size=fed.batch_size, lr=fed.lr,
                     seed=_seed(seed, tag, e), optimizer=opt)
        if on_epoch is not None:
            on_epoch(e, model)


def finetune_sets(cfg: Config, split: Split) -> dict[str, list[int]]:
    """D / D_delta and their known / eval halves, a pure function of (split, seed).

    Every list is in seeded random order, so prefixes (``Split.balanced``) are random
    samples. ``d`` + ``delta`` = ``split.train[0]``.
    """
    train = np.asarray(split.train[0], dtype=np.int64)
    order = np.random.default_rng(_seed(cfg.seed, _TAG_FINETUNE_SPLIT)).permutation(train)
    n_delta = int(round(cfg.federation.finetune_fraction * len(order)))
    n_delta = min(max(n_delta, 1), len(order) - 1)
    d, delta = order[:len(order) - n_delta].tolist(), order[len(order) - n_delta:].tolist()
    out = {"d": d, "delta": delta}
    for name, s in (("d", d), ("delta", delta)):
        half = len(s) // 2
        out[f"{name}_known"], out[f"{name}_eval"] = s[:half], s[half:]
    return out


def _train_finetune(cfg: Config, model, x_d, y_d, x_delta, y_delta, seed: int,
                    after_d=None) -> None:
    _fit(cfg, model, x_d, y_d, cfg.federation.rounds, seed, _TAG_EPOCH)
    if after_d is not None:
        after_d(model)
    _fit(cfg, model, x_delta, y_delta, finetune_epochs(cfg), seed, _TAG_FT_EPOCH)


def run_standalone(cfg: Config, data: Data, split: Split, run_dir: Path) -> dict:
    """Train the stand-alone (or fine-tuned) target; returns its accuracies.

    Keys: ``train_acc`` (all of ``split.train[0]``), ``test_acc`` (``split.test``); finetune
    mode adds ``train_acc_d``, ``train_acc_delta`` and the accuracies before fine-tuning.
    A store that already holds the final snapshot (a resumed run) is not trained again.
    """
    with _threads(cfg):
        return _run_standalone(cfg, data, split, run_dir)


def _run_standalone(cfg: Config, data: Data, split: Split, run_dir: Path) -> dict:
    mode = cfg.federation.mode
    if mode not in ("standalone", "finetune"):
        raise ValueError(f"run_standalone: federation.mode is {mode!r}")
    if cfg.defense.name != "none":
        raise ConfigError(f"defense.name={cfg.defense.name} is applied by the federated "
                          f"clients only; federation.mode={mode} trains without it")
    run_dir = Path(run_dir)
    store = SnapshotStore(snapshot_dir(run_dir, mode))
    train = list(split.train[0])
    model = build_target_model(cfg, data)

    if mode == "standalone":
        final_round = cfg.federation.rounds
        if store.find(final_round, None, "global") is None:
            keep = set(cfg.attack_epochs()) | {final_round}
            set_arrays(model, initial_arrays(cfg, data))
            idx = np.asarray(train, dtype=np.int64)

            def on_epoch(e, m):
                if e in keep:
                    store.put(e, None, "global", get_arrays(m))

            _fit(cfg, model, data.x[idx], data.y[idx], cfg.federation.rounds, cfg.seed,
                 _TAG_EPOCH, on_epoch)
        return measure(cfg, data, split, store.get(final_round, None, "global"), train)

    sets = finetune_sets(cfg, split)
    atomic_write_bytes(run_dir / "finetune_split.json", json.dumps({
        "d": sets["d"], "delta": sets["delta"],
        "d_known": sets["d_known"], "d_eval": sets["d_eval"],
        "delta_known": sets["delta_known"], "delta_eval": sets["delta_eval"],
        "finetune_fraction": cfg.federation.finetune_fraction,
        "epochs_d": cfg.federation.rounds, "epochs_delta": finetune_epochs(cfg),
        "note": "D is trained on first (snapshot round 1), then the model is fine-tuned on "
                "D_delta (snapshot round 2)"}).encode())
    if store.find(AFTER, None, "global") is None:
        set_arrays(model, initial_arrays(cfg, data))
        d = np.asarray(sets["d"], dtype=np.int64)
        dd = np.asarray(sets["delta"], dtype=np.int64)
        _train_finetune(cfg, model, data.x[d], data.y[d], data.x[dd], data.y[dd], cfg.seed,
                        after_d=lambda m: store.put(BEFORE, None, "global", get_arrays(m)))
        store.put(AFTER, None, "global", get_arrays(model))
    before, after = store.get(BEFORE, None, "global"), store.get(AFTER, None, "global")
    out = measure(cfg, data, split, after, train)
    out["train_acc_d"] = measure(cfg, data, split, after, sets["d"])["train_acc"]
    out["train_acc_delta"] = measure(cfg, data, split, after, sets["delta"])["train_acc"]
    pre = measure(cfg, data, split, before, sets["d"])
    out["before_finetune"] = {"train_acc_d": pre["train_acc"], "test_acc": pre["test_acc"]}
    return out


# ------------------------------------------------------------------ attacks


class _Target:
    """The attacked run: snapshots, sets, and a cache of white-box features per
    (snapshot round, record set)."""

    def __init__(self, cfg: Config, data: Data, split: Split, run_dir: Path):
        self.cfg, self.data, self.split, self.run_dir = cfg, data, split, Path(run_dir)
        self.mode = cfg.federation.mode
        self.store = SnapshotStore(snapshot_dir(self.run_dir, self.mode))
        self.final = AFTER if self.mode == "finetune" else cfg.federation.rounds
        if self.store.find(self.final, None, "global") is None:
            raise SnapshotError(f"no final snapshot (round {self.final}) in {self.store.dir}; "
                                    "train the target first")
        self._feats: dict = {}
        self._arrays: dict = {}
        self.known = split.balanced(split.known_members[0], split.known_nonmembers)
        self.eval = split.balanced(split.eval_members[0], split.eval_nonmembers)
        self.seed = cfg.seed + cfg.attack.seed_offset

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
        m = build_target_model(self.cfg, self.data)
        set_arrays(m, self.arrays(rnd))
        return m


def _kind(cfg: Config) -> str:
    return "unsupervised" if cfg.attack.unsupervised else "nasr"


def whitebox_attack(t: _Target, rounds: list[int], kind: str, known, evals, seed: int) -> dict:
    """One white-box attack (``make_attack`` kind) on the snapshots ``rounds``: fitted on
    ``known`` = (indices, 0/1 labels), measured on ``evals``. Exposed for controls."""
    (k_idx, k_lab), (e_idx, e_lab) = known, evals
    kf = [t.features(r, k_idx) for r in rounds]
    ef = [t.features(r, e_idx) for r in rounds]
    return fit_and_score(make_attack(t.cfg, kind, seed), kf, np.asarray(k_lab), ef,
                         np.asarray(e_lab), supervised=kind != "unsupervised")


def attacker_pool(split: Split) -> tuple[list[int], str]:
    """The attacker's own records for shadow / reference models (never eval records)."""
    ref = list(split.reference)
    if len(ref) >= len(split.train[0]):
        return ref, "reference pool"
    return ref + list(split.known_members[0]) + list(split.known_nonmembers), \
        "reference pool + known members + known non-members" if ref else \
        "known members + known non-members"


def _train_like_target(cfg: Config, data: Data, x, y, seed: int) -> torch.nn.Module:
    """A fresh model of the target's architecture trained on (x, y) the way the target was
    trained (finetune mode: the first 1 - finetune_fraction, then the rest)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed & 0x7FFF_FFFF)
        model = build_target_model(cfg, data)
    if cfg.federation.mode == "finetune":
        n_delta = min(max(int(round(cfg.federation.finetune_fraction * len(y))), 1), len(y) - 1)
        cut = len(y) - n_delta
        _train_finetune(cfg, model, x[:cut], y[:cut], x[cut:], y[cut:], seed)
    else:
        _fit(cfg, model, x, y, cfg.federation.rounds, seed, _TAG_EPOCH)
    return model


def _shadow_attack(t: _Target, notes: list[str]) -> dict:
    from attacks.blackbox import ShadowModelAttack

    cfg, data = t.cfg, t.data
    pool, source = attacker_pool(t.split)
    # each shadow trains on a random half of what it is given: give it twice the target's size
    n_train = len(t.split.train[0])
    pool = np.random.default_rng(_seed(t.seed, _TAG_SHADOW, 1)).permutation(
        np.asarray(pool, dtype=np.int64))[:2 * n_train]
    atk = ShadowModelAttack(lambda x, y, seed: _train_like_target(cfg, data, x, y, seed),
                            predict_proba, n_shadows=cfg.attack.reference_models,
                            seed=_seed(t.seed, _TAG_SHADOW) & 0x7FFF_FFFF)
    atk.fit(data.x[pool], data.y[pool])
    target = t.model(t.final)
    (k_idx, k_lab), (e_idx, e_lab) = t.known, t.eval
    ks = atk.score_target(predict_proba(target, data.x[k_idx]), data.y[k_idx])
    es = atk.score_target(predict_proba(target, data.x[e_idx]), data.y[e_idx])
    # the attacker also knows some target members: it places its threshold there
    res = membership_metrics(es, e_lab, choose_threshold(ks, k_lab))
    return {**res, "shadow_models": cfg.attack.reference_models,
            "shadow_data": f"{source}; {len(pool) // 2} records per shadow (random halves of "
                           f"{len(pool)})",
            "threshold_from": "known members / non-members, scored on the target"}


def _calibrated_attack(t: _Target, notes: list[str]) -> dict:
    """LiRA offline: every reference model is OUT for every evaluation record (references
    train on random subsets, at most half, of the attacker's pool, which excludes them).
    Known records that fall into a reference's subset are scored against the references
    they were OUT of (the threshold is chosen on the known records)."""
    from attacks.calibrated import LiRAOffline, logit_confidence

    cfg, data = t.cfg, t.data
    pool, source = attacker_pool(t.split)
    pool = np.asarray(pool, dtype=np.int64)
    (k_idx, k_lab), (e_idx, e_lab) = t.known, t.eval
    n_ref = cfg.attack.reference_models
    size = min(len(pool) // 2, len(t.split.train[0]))
    ref_k = np.full((len(k_idx), n_ref), np.nan)
    ref_e = np.empty((len(e_idx), n_ref))
    for r in range(n_ref):
        rng = np.random.default_rng(_seed(t.seed, _TAG_REFERENCE, r))
        half = rng.permutation(pool)[:size]
        model = _train_like_target(cfg, data, data.x[half], data.y[half],
                                   _seed(t.seed, _TAG_REFERENCE, r, 1))
        ref_e[:, r] = logit_confidence(predict_logits(model, data.x[e_idx]), data.y[e_idx])
        out = ~np.isin(k_idx, half)
        ref_k[out, r] = logit_confidence(predict_logits(model, data.x[k_idx[out]]), data.y[k_idx[out]])
    target = t.model(t.final)
    tk = logit_confidence(predict_logits(target, data.x[k_idx]), data.y[k_idx])
    te = logit_confidence(predict_logits(target, data.x[e_idx]), data.y[e_idx])
    lira = LiRAOffline().fit(ref_e)  # pooled OUT variance (eval records: all references OUT)
    es = lira.score(te, ref_e)
    ok = ~np.all(np.isnan(ref_k), axis=1)
    if not ok.all():
        notes.append(f"{int((~ok).sum())} known records were IN every reference model; "
                     "the threshold is chosen without them")
    ks = lira.score(tk[ok], np.nanmean(ref_k[ok], axis=1)[:, None])
    res = membership_metrics(es, e_lab, choose_threshold(ks, np.asarray(k_lab)[ok]))
    return {**res, "reference_models": n_ref,
            "reference_data": f"{source}; {size} random records of {len(pool)} per reference "
                              "(every reference is OUT for every evaluation record)",
            "method": "LiRA offline (Carlini et al. 2022), pooled variance"}


def finetune_attack(t: _Target, name: str, seed: int, kind: str = "nasr") -> dict:
    """One of the three Table IX attacks, white-box on the snapshots before and after
    fine-tuning."""
    sets = finetune_sets(t.cfg, t.split)
    sp = t.split
    if name == "finetune_d_vs_delta":
        known = sp.balanced(sets["delta_known"], sets["d_known"])
        evals = sp.balanced(sets["delta_eval"], sets["d_eval"])
        what = "member (label 1) = D_delta (the fine-tuning set); non-member (0) = D"
    elif name == "finetune_d_vs_nonmembers":
        known = sp.balanced(sets["d_known"], sp.known_nonmembers)
        evals = sp.balanced(sets["d_eval"], sp.eval_nonmembers)
        what = "member (label 1) = D; non-member (0) = records never trained on"
    elif name == "finetune_delta_vs_nonmembers":
        known = sp.balanced(sets["delta_known"], sp.known_nonmembers)
        evals = sp.balanced(sets["delta_eval"], sp.eval_nonmembers)
        what = "member (label 1) = D_delta; non-member (0) = records never trained on"
    else:
        raise ValueError(name)
    res = whitebox_attack(t, [BEFORE, AFTER], kind, known, evals, seed)
    return {**res, "sets": what, "snapshots": ["before fine-tuning", "after fine-tuning"]}


def _run_one(t: _Target, name: str) -> dict:
    cfg = t.cfg
    notes: list[str] = []
    if name in FINETUNE_ATTACKS:
        return {"name": name, **finetune_attack(t, name, t.seed, _kind(cfg)),
                "attack_model": _kind(cfg), "notes": notes}
    if name in ("standalone_whitebox", "standalone_unsupervised", "standalone_compact"):
        kind = {"standalone_whitebox": _kind(cfg), "standalone_unsupervised": "unsupervised",
                "standalone_compact": "compact"}[name]
        rounds = t.attack_rounds(notes)
        res = whitebox_attack(t, rounds, kind, t.known, t.eval, t.seed)
        return {"name": name, **res, "epochs_used": rounds if t.mode == "standalone" else
                ["after fine-tuning"], "attack_model": kind, "notes": notes}
    if name == "loss_threshold":
        res = whitebox_attack(t, [t.final], "loss", t.known, t.eval, t.seed)
        return {"name": name, **res, "notes": notes, "model": "final"}
    if name == "standalone_blackbox_shadow":
        return {"name": name, **_shadow_attack(t, notes), "notes": notes}
    if name == "calibrated":
        return {"name": name, **_calibrated_attack(t, notes), "notes": notes}
    raise ValueError(name)


def run_standalone_attacks(cfg: Config, data: Data, split: Split, run_dir: Path,
                           echo=print) -> list[dict]:
    """Run every attack of ``attack.names`` that applies to the mode; one dict per attack:
    ``{"name", **membership_metrics(...), "time_s", "notes", ...}``."""
    with _threads(cfg):
        return _run_attacks(cfg, data, split, run_dir, echo)


def _run_attacks(cfg, data, split, run_dir, echo) -> list[dict]:
    valid = ATTACKS_OF_MODE.get(cfg.federation.mode, ())
    t = None
    results = []
    for name in cfg.attack.names:
        if name not in valid:
            print(f"fl-sim: note: attack {name} does not apply to federation.mode="
                  f"{cfg.federation.mode}; skipped", file=sys.stderr)
            continue
        if t is None:
            torch.manual_seed(cfg.seed)
            t = _Target(cfg, data, split, run_dir)
        t0 = time.time()
        res = _run_one(t, name)
        res["time_s"] = time.time() - t0
        results.append(res)
        if echo is not None:
            echo(f"  {name}: accuracy {100 * res['accuracy']:.1f}%, AUC {res['auc']:.3f} "
                 f"({res['time_s']:.0f} s)")
    return results
