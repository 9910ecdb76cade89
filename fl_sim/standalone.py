"""Stand-alone (centralized) training of Nasr et al. (2019): one model, no federation.

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

Shadow and reference models of the attacks train with :func:`train_like_target`, exactly
as long and in the same schedule as the target, so that they overfit like it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fl_sim.config import Config
from fl_sim.io import atomic_write_bytes
from fl_sim.models import get_arrays, model_from
from fl_sim.runtime import derive_seed, threads_for, use_threads
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import Split
from fl_sim.target import Data, initial_arrays, measure, model_spec
from fl_sim.training import as_tensors, make_optimizer, resolve_device, train_epochs

BEFORE, AFTER = 1, 2  # finetune snapshot rounds

# distinct streams for every random choice derived from cfg.seed
TAG_EPOCH, TAG_FINETUNE_SPLIT, TAG_FT_EPOCH, TAG_SHADOW, TAG_REFERENCE = 11, 12, 13, 14, 15


def snapshot_dir(run_dir: Path, mode: str) -> Path:
    return Path(run_dir) / "snapshots" / mode


def final_round(cfg: Config) -> int:
    """The round number of the trained target's snapshot."""
    return AFTER if cfg.federation.mode == "finetune" else cfg.federation.rounds


def finetune_epochs(cfg: Config) -> int:
    fed = cfg.federation
    return fed.finetune_epochs or max(1, fed.rounds // 2)


def target_threads(cfg: Config):
    """torch threads for stand-alone work: a participant's CPU share, as the clients use."""
    return use_threads(threads_for(cfg.federation.num_cpus))


def fit_epochs(cfg: Config, model: torch.nn.Module, x, y, epochs: int, seed: int, tag: int,
               on_epoch=None) -> None:
    """``epochs`` passes of the clients' SGD over (x, y), one optimizer throughout (momentum
    carries over), batch order of epoch e from (seed, tag, e)."""
    fed = cfg.federation
    dev = resolve_device(fed.device)
    model.to(dev)
    opt = make_optimizer(model, fed.lr, fed.momentum, fed.weight_decay)
    x, y = (t.to(dev) for t in as_tensors(x, y))
    for e in range(1, epochs + 1):
        train_epochs(model, x, y, epochs=1, batch_size=fed.batch_size, lr=fed.lr,
                     seed=derive_seed(seed, tag, e), optimizer=opt)
        if on_epoch is not None:
            on_epoch(e, model)


def finetune_sets(cfg: Config, split: Split) -> dict[str, list[int]]:
    """D / D_delta and their known / eval halves, a pure function of (split, seed).

    Every list is in seeded random order, so prefixes (``Split.balanced``) are random
    samples. ``d`` + ``delta`` = ``split.train[0]``.
    """
    train = np.asarray(split.train[0], dtype=np.int64)
    order = np.random.default_rng(derive_seed(cfg.seed, TAG_FINETUNE_SPLIT)).permutation(train)
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
    fit_epochs(cfg, model, x_d, y_d, cfg.federation.rounds, seed, TAG_EPOCH)
    if after_d is not None:
        after_d(model)
    fit_epochs(cfg, model, x_delta, y_delta, finetune_epochs(cfg), seed, TAG_FT_EPOCH)


def train_like_target(cfg: Config, data: Data, x, y, seed: int) -> torch.nn.Module:
    """A fresh model of the target's architecture trained on (x, y) the way the target was
    trained (finetune mode: the first 1 - finetune_fraction, then the rest)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed & 0x7FFF_FFFF)
        model = model_spec(cfg, data).build()
    if cfg.federation.mode == "finetune":
        n_delta = min(max(int(round(cfg.federation.finetune_fraction * len(y))), 1), len(y) - 1)
        cut = len(y) - n_delta
        _train_finetune(cfg, model, x[:cut], y[:cut], x[cut:], y[cut:], seed)
    else:
        fit_epochs(cfg, model, x, y, cfg.federation.rounds, seed, TAG_EPOCH)
    return model


def _train_standalone(cfg: Config, data: Data, split: Split, store: SnapshotStore) -> dict:
    train = list(split.train[0])
    last = cfg.federation.rounds
    if store.find(last, None, "global") is None:
        keep = set(cfg.attack_epochs()) | {last}
        model = model_from(model_spec(cfg, data), initial_arrays(cfg, data))
        idx = np.asarray(train, dtype=np.int64)

        def on_epoch(e, m):
            if e in keep:
                store.put(e, None, "global", get_arrays(m))

        fit_epochs(cfg, model, data.x[idx], data.y[idx], last, cfg.seed, TAG_EPOCH, on_epoch)
    return measure(cfg, data, split, store.get(last, None, "global"), train)


def _write_finetune_split(cfg: Config, sets: dict, run_dir: Path) -> None:
    atomic_write_bytes(run_dir / "finetune_split.json", json.dumps({
        "d": sets["d"], "delta": sets["delta"],
        "d_known": sets["d_known"], "d_eval": sets["d_eval"],
        "delta_known": sets["delta_known"], "delta_eval": sets["delta_eval"],
        "finetune_fraction": cfg.federation.finetune_fraction,
        "epochs_d": cfg.federation.rounds, "epochs_delta": finetune_epochs(cfg),
        "note": "D is trained on first (snapshot round 1), then the model is fine-tuned on "
                "D_delta (snapshot round 2)"}).encode())


def _train_finetuned(cfg: Config, data: Data, split: Split, store: SnapshotStore,
                     run_dir: Path) -> dict:
    sets = finetune_sets(cfg, split)
    _write_finetune_split(cfg, sets, run_dir)
    if store.find(AFTER, None, "global") is None:
        model = model_from(model_spec(cfg, data), initial_arrays(cfg, data))
        d = np.asarray(sets["d"], dtype=np.int64)
        dd = np.asarray(sets["delta"], dtype=np.int64)
        _train_finetune(cfg, model, data.x[d], data.y[d], data.x[dd], data.y[dd], cfg.seed,
                        after_d=lambda m: store.put(BEFORE, None, "global", get_arrays(m)))
        store.put(AFTER, None, "global", get_arrays(model))
    before, after = store.get(BEFORE, None, "global"), store.get(AFTER, None, "global")
    out = measure(cfg, data, split, after, list(split.train[0]))
    out["train_acc_d"] = measure(cfg, data, split, after, sets["d"])["train_acc"]
    out["train_acc_delta"] = measure(cfg, data, split, after, sets["delta"])["train_acc"]
    pre = measure(cfg, data, split, before, sets["d"])
    out["before_finetune"] = {"train_acc_d": pre["train_acc"], "test_acc": pre["test_acc"]}
    return out


def run_standalone(cfg: Config, data: Data, split: Split, run_dir: Path) -> dict:
    """Train the stand-alone (or fine-tuned) target; returns its accuracies.

    Keys: ``train_acc`` (all of ``split.train[0]``), ``test_acc`` (``split.test``); finetune
    mode adds ``train_acc_d``, ``train_acc_delta`` and the accuracies before fine-tuning.
    A store that already holds the final snapshot (a resumed run) is not trained again.
    """
    mode = cfg.federation.mode
    if mode not in ("standalone", "finetune"):
        raise ValueError(f"run_standalone: federation.mode is {mode!r}")
    store = SnapshotStore(snapshot_dir(run_dir, mode), within=run_dir)
    with target_threads(cfg):
        if mode == "standalone":
            return _train_standalone(cfg, data, split, store)
        return _train_finetuned(cfg, data, split, store, Path(run_dir))
