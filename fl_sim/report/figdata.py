"""Figure data: what the paper's Figs. 3-6 need from each attack, captured while the
attacks run and saved as ``figure_data.json`` in the run directory, so that
``fl-sim report`` redraws every figure without the snapshots (which
``fl-sim compare --keep-snapshots passive`` deletes) and without retraining.

Layout (version 1)::

    {"version": 1,
     "attacks": {name: {"attack_model": str,        # kind_name of the scenario's attack
                        "training": str,            # the catalog training that produced it
                        "evaluations": [            # one per fitted attack model: a
                            {"labels": [0/1] * n,   #   participant, a victim, the target
                             "scores": [float] * n, # higher = member (unsupervised: the code)
                             "classes": [int] * n,  # true class of each record
                             "entropy": [float] * n,  # prediction entropy (nats), last snapshot
                             "snapshots": [str|int] * k,  # epochs observed, in order
                             "grad_param": str | null,    # the last layer's weight
                             "grad_norm": [[float] * n] * k | null}]}},  # its L2 norm per record
     "pushes": {federation: [                       # optional: aggregators that pushed
                    {"round": int,                  #   one entry per push round measured
                     "index": [int] * m,            #   the victim's target records
                     "member": [0/1] * m,           #   a member of the victim or not
                     "loss_before": [float] * m, "loss_after": [float] * m, "loss_rise": [float] * m,
                     "grad_norm_before": [float] * m, "grad_norm_after": [float] * m,
                     "grad_norm_last_before": [float] * m, "grad_norm_last_after": [float] * m}]}}

``pushes`` (see :mod:`fl_sim.push`): per push round, each target record's loss and loss-
gradient L2 norm (all trained parameters; the last nn.Linear) under the model the push
started from and under the model sent.

Only attacks evaluated through ``fit_and_score`` (the white-box, compact, loss and
unsupervised models) have evaluations; the others have none.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fl_sim import catalog
from fl_sim.config import Config
from fl_sim.io import atomic_write_bytes

FILE = "figure_data.json"
VERSION = 1


def _floats(a) -> list[float]:
    # 6 significant digits: the figures need no more, and the file stays small
    return [float(f"{v:.6g}") for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def _entropy(logits: np.ndarray) -> np.ndarray:
    """(n,) entropy in nats of softmax(logits (n, c))."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


def last_layer_weight(grads: dict) -> str | None:
    """The last ``*.weight`` gradient (features keep the layers in module order)."""
    weights = [k for k in grads if k.endswith("weight")]
    return weights[-1] if weights else None


def evaluation(features, labels, scores) -> dict:
    """One evaluation's figure data from the evaluation records' FeatureSet(s) (one per
    snapshot observed), their 0/1 ``labels`` and the attack's ``scores``."""
    snaps = list(features) if isinstance(features, (list, tuple)) else [features]
    last = snaps[-1]
    param = last_layer_weight(last.grads)
    norms = None
    if param is not None and all(param in fs.grads for fs in snaps):
        norms = [_floats(np.sqrt(np.square(fs.grads[param], dtype=np.float64)
                                 .reshape(len(fs), -1).sum(1))) for fs in snaps]
    return {"labels": [int(v) for v in np.asarray(labels).reshape(-1)],
            "scores": _floats(scores),
            "classes": [int(v) for v in np.argmax(last.label, axis=1)],
            "entropy": _floats(_entropy(last.outputs["logits"])),
            "snapshots": [f"snapshot {j + 1}" for j in range(len(snaps))],
            "grad_param": param, "grad_norm": norms}


def _snapshot_names(result: dict, i: int, k: int) -> list | None:
    """The epochs the ``i``-th evaluation of ``result`` observed, when the result says."""
    used = result.get("epochs_used")
    if isinstance(used, dict):
        vals = list(used.values())
        names = vals[i] if i < len(vals) else None
    else:
        names = used if used is not None else result.get("snapshots")
    return list(names) if names is not None and len(names) == k else None


class Recorder:
    """A watcher for :func:`fl_sim.scenarios.common.watching`: collects the evaluations of
    the running attack; :meth:`finish` files them under the attack's name."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.pending: list[dict] = []
        self.attacks: dict[str, dict] = {}

    def __call__(self, event: str, **info) -> None:
        if event != "scored":
            return
        try:
            self.pending.append(evaluation(info["features"], info["labels"], info["scores"]))
        except Exception as e:  # a figure's data must never cost the attack its numbers
            from fl_sim.report.progress import warn

            warn(f"figure data of an evaluation not recorded ({type(e).__name__}: {e}); "
                 "the report's per-record figures will lack it")

    def finish(self, name: str) -> None:
        from fl_sim.scenarios.common import attack_kind, kind_name  # torch: only where attacks run

        scenario = catalog.get(name)
        self.attacks[name] = {"attack_model": kind_name(attack_kind(self.cfg, scenario)),
                              "training": scenario.training_for(self.cfg.federation.mode).name,
                              "evaluations": self.pending}
        self.pending = []

    def data(self, results: list[dict], pushes: dict | None = None) -> dict:
        """The figure data, each evaluation's snapshots named from the attacks' results;
        ``pushes``: federation name -> per-round per-record push measurements."""
        by_name = {r["name"]: r for r in results}
        for name, entry in self.attacks.items():
            for i, ev in enumerate(entry["evaluations"]):
                names = _snapshot_names(by_name.get(name, {}), i, len(ev["snapshots"]))
                if names is not None:
                    ev["snapshots"] = names
        out = {"version": VERSION, "attacks": self.attacks}
        if pushes:
            out["pushes"] = pushes
        return out


def save(run_dir: Path, data: dict) -> None:
    atomic_write_bytes(Path(run_dir) / FILE, json.dumps(data, separators=(",", ":")).encode())


def load(run_dir: Path) -> dict | None:
    """The run's figure data, or None when the run predates it."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if data.get("version") == VERSION else None
