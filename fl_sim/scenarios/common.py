"""What every scenario evaluator shares: white-box features of a snapshot, the attack
model a scenario names, fit-on-knowledge / judge-on-evaluation, and the mean over
participants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attacks.metrics import average_roc, membership_metrics
from fl_sim.catalog import Scenario
from fl_sim.config import Config
from fl_sim.models import model_from
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import Split
from fl_sim.target import Data, model_spec
from fl_sim.training import resolve_device


@dataclass
class AttackContext:
    """Everything an evaluator reads: the config, the data, the split and the run."""
    cfg: Config
    data: Data
    split: Split
    run_dir: Path

    @property
    def seed(self) -> int:
        return self.cfg.seed + self.cfg.attack.seed_offset

    def store(self, scenario: Scenario, name: str | None = None) -> SnapshotStore:
        """The snapshots of the scenario's training (or of its federation ``name``)."""
        name = name or scenario.training_for(self.cfg.federation.mode).name
        return SnapshotStore(Path(self.run_dir) / "snapshots" / name, within=self.run_dir)


# Watchers of the evaluations (progress bars, the report's figure data) are told here
# rather than through the evaluators' signatures, which stay the same for every scenario.
_WATCHERS: list[Callable[..., None]] = []


@contextmanager
def watching(watcher: Callable[..., None]) -> Iterator[None]:
    """Within the block ``watcher(event, **info)`` hears of every snapshot's features
    (``"features"``, ``n``: records) and every fitted attack (``"scored"``, ``features``:
    the evaluation records' FeatureSet(s), ``labels``: (n,) 0/1, ``scores``: (n,) higher =
    member)."""
    _WATCHERS.append(watcher)
    try:
        yield
    finally:
        _WATCHERS.remove(watcher)


def _tell(event: str, **info) -> None:
    for w in list(_WATCHERS):
        w(event, **info)


def features_of(cfg: Config, data: Data, arrays: dict, *idx_sets: np.ndarray) -> list:
    """White-box features of each index set under one snapshot (one model built for all)."""
    from attacks.features import extract_features

    model = model_from(model_spec(cfg, data), arrays)
    dev = resolve_device(cfg.federation.device)
    out = [extract_features(model, data.x[idx], data.y[idx], layers=cfg.attack.layers,
                            output_layers=tuple(cfg.attack.output_layers), device=dev)
           for idx in idx_sets]
    _tell("features", n=sum(len(i) for i in idx_sets))
    return out


def losses_of(cfg: Config, data: Data, arrays: dict, idx: np.ndarray) -> np.ndarray:
    """(n,) float32 cross-entropy (nats) of records ``idx`` under one snapshot."""
    import torch

    from fl_sim.training import predict_logits

    with torch.no_grad():
        logits = predict_logits(model_from(model_spec(cfg, data), arrays), data.x[idx])
        y = torch.as_tensor(np.asarray(data.y[idx]), dtype=torch.long)
        return torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy().astype(np.float32)


def logit_confidence_of(model, data: Data, idx) -> np.ndarray:
    """(n,) logit-scaled confidence of the true class of records ``idx`` under ``model``."""
    from attacks.calibrated import logit_confidence
    from fl_sim.training import predict_logits

    return logit_confidence(predict_logits(model, data.x[idx]), data.y[idx])


def attack_kind(cfg: Config, scenario: Scenario) -> str | Callable:
    """The scenario's attack model, with ``whitebox`` resolved by ``attack.unsupervised``."""
    if scenario.attack == "whitebox":
        return "unsupervised" if cfg.attack.unsupervised else "nasr"
    return scenario.attack


def make_attack(cfg: Config, kind: str | Callable, seed: int):
    """An unfitted attack model: a kind (``nasr``, ``compact``, ``unsupervised``, ``loss``)
    or a factory ``(cfg, seed) -> MembershipAttack`` from the catalog."""
    if callable(kind):
        return kind(cfg, seed)
    if kind == "nasr":
        from attacks.supervised import NasrAttack

        use = set(cfg.attack.network_inputs)
        return NasrAttack(conv_filters=cfg.attack.conv_filters, lr=cfg.attack.lr_attack_model,
                          epochs=cfg.attack.epochs_attack_model, grad_input=cfg.attack.gradients,
                          use_outputs="outputs" in use, use_loss="loss" in use, use_label="label" in use,
                          use_grads="gradients" in use, use_reference="references" in use, seed=seed,
                          device=str(resolve_device(cfg.federation.device)))
    if kind in ("compact", "compact_references"):
        from attacks.compact import CompactWhiteBox

        return CompactWhiteBox(seed=seed, references=kind == "compact_references")
    if kind == "unsupervised":
        from attacks.unsupervised import UnsupervisedAttack

        return UnsupervisedAttack(seed=seed, device=str(resolve_device(cfg.federation.device)))
    if kind == "loss":
        from attacks.loss_threshold import LossThreshold

        return LossThreshold()
    raise ValueError(f"unknown attack model kind {kind!r}")


def kind_name(kind: str | Callable) -> str:
    return kind if isinstance(kind, str) else getattr(kind, "__name__", "custom")


def fit_and_score(attack, known_feats, known_lab, eval_feats, eval_lab) -> dict:
    """Fit on the attacker's knowledge (an unsupervised attack: on the unlabelled target
    records), threshold from the fit, metrics on the evaluation records."""
    if attack.needs_labels:
        attack.fit(known_feats, known_lab)
    else:
        attack.fit(eval_feats)
    scores = attack.score_samples(eval_feats)
    _tell("scored", features=eval_feats, labels=eval_lab, scores=scores)
    return membership_metrics(scores, eval_lab, attack.threshold_)


SCORING_MEAN = ("mean over participants of per-participant metrics (the paper's report); "
                "ROC = vertical average of the per-participant ROC curves, so TPR at FPR "
                "reads off it; accuracy at thresholds chosen on the attacker's known records")


def mean_result(per: dict[int, dict], victims: list[int] | None = None) -> dict:
    """Metrics averaged over participants (the paper's report), counts summed, the ROC
    averaged vertically. With ``victims`` (an attack on every participant): ``on_victim``,
    the same averages over the victims' own results, comparable with the active attacks,
    which are judged on the victims' records alone."""
    vals = list(per.values())
    out = _mean(vals)
    out["roc"] = average_roc([v["roc"] for v in vals])
    out["scoring"] = SCORING_MEAN if len(vals) > 1 else "one participant's metrics"
    out["per_participant"] = {str(p): {k: v[k] for k in ("accuracy", "auc", "tpr_at_fpr")}
                              for p, v in per.items()}
    if victims is not None and len(per) > 1 and all(v in per for v in victims):
        out["on_victim"] = {"participants": list(victims), **_mean([per[v] for v in victims])}
    return out


def _mean(vals: list[dict]) -> dict:
    out = {k: float(np.mean([v[k] for v in vals])) for k in ("accuracy", "auc")}
    out["tpr_at_fpr"] = {f: float(np.mean([v["tpr_at_fpr"][f] for v in vals]))
                         for f in vals[0]["tpr_at_fpr"]}
    out["n_members"] = int(sum(v["n_members"] for v in vals))
    out["n_nonmembers"] = int(sum(v["n_nonmembers"] for v in vals))
    return out
