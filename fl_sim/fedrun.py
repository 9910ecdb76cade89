"""One federated training run of one attack setting (passive, gradient ascent, isolation...).

Builds the client plan, wraps FedAvg in the global attacker, runs Flower on Ray, and
measures the final global model. Snapshots land in ``<run>/snapshots/<setting>/``.
Resuming picks up after the last round whose aggregate was stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fl_sim.config import Config
from fl_sim.plan import ClientPlan
from fl_sim.rundir import read_json, write_json
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import Split
from fl_sim.training import evaluate, get_arrays, set_arrays


@dataclass(frozen=True)
class Setting:
    """How the federation is attacked while it trains."""
    name: str
    isolate: bool = False
    global_ascent: bool = False
    local_ascent: bool = False


SETTINGS = {
    "passive": Setting("passive"),
    "global_gradient_ascent": Setting("global_gradient_ascent", global_ascent=True),
    "global_isolating": Setting("global_isolating", isolate=True),
    "global_isolating_gradient_ascent": Setting("global_isolating_gradient_ascent",
                                                isolate=True, global_ascent=True),
    "local_gradient_ascent": Setting("local_gradient_ascent", local_ascent=True),
}

# attack name -> the federated setting whose snapshots it reads
SETTING_OF_ATTACK = {
    "global_passive": "passive", "local_passive": "passive", "global_calibrated": "passive",
    "global_compact": "passive", "global_unsupervised": "passive",
    "global_gradient_ascent": "global_gradient_ascent",
    "global_isolating": "global_isolating",
    "global_isolating_gradient_ascent": "global_isolating_gradient_ascent",
    "local_gradient_ascent": "local_gradient_ascent",
}


@dataclass
class Data:
    """The dataset as the runner sees it: memory-mappable arrays plus metadata."""
    name: str
    display_name: str
    x: np.ndarray
    y: np.ndarray
    x_path: str
    y_path: str
    num_classes: int
    input_shape: tuple[int, ...]


def local_attacker_of(cfg: Config) -> int:
    return cfg.federation.participants - 1


def global_targets(split: Split, victim: int) -> list[int]:
    """The records the global attacker infers membership of for ``victim`` (both sets)."""
    idx_k, _ = split.balanced(split.known_members[victim], split.known_nonmembers)
    idx_e, _ = split.balanced(split.eval_members[victim], split.eval_nonmembers)
    return idx_k.tolist() + idx_e.tolist()


def local_targets(split: Split, attacker: int) -> list[int]:
    """Records the local attacker infers: the other participants' data and non-members."""
    others = [p for p in range(split.participants) if p != attacker]
    km = [i for p in others for i in split.known_members[p]]
    em = [i for p in others for i in split.eval_members[p]]
    idx_k, _ = split.balanced(km, split.known_nonmembers)
    idx_e, _ = split.balanced(em, split.eval_nonmembers)
    return idx_k.tolist() + idx_e.tolist()


def build_target_model(cfg: Config, data: Data) -> torch.nn.Module:
    from fl_sim.models import build_model

    return build_model(cfg.model.name, tuple(data.input_shape), data.num_classes,
                       **cfg.model.options)


def initial_arrays(cfg: Config, data: Data) -> dict[str, np.ndarray]:
    torch.manual_seed(cfg.seed)
    return get_arrays(build_target_model(cfg, data))


def measure(cfg: Config, data: Data, split: Split, arrays: dict[str, np.ndarray],
            train_idx: list[int]) -> dict:
    model = build_target_model(cfg, data)
    set_arrays(model, arrays)
    tr = np.asarray(sorted(train_idx), dtype=np.int64)
    te = np.asarray(sorted(split.test), dtype=np.int64)
    _, train_acc = evaluate(model, data.x[tr], data.y[tr])
    _, test_acc = evaluate(model, data.x[te], data.y[te])
    return {"train_acc": float(train_acc), "test_acc": float(test_acc)}


def keep_rounds(cfg: Config) -> list[int] | None:
    kr = cfg.federation.keep_rounds
    if kr == "all":
        return None
    if kr == "attack":
        epochs = set(cfg.attack_epochs())
        return sorted(epochs | {e - 1 for e in epochs if e > 1} | {e + 1 for e in epochs})
    return sorted(kr)


def run_setting(cfg: Config, setting: Setting, data: Data, split: Split, run_dir: Path,
                progress=None) -> dict:
    """Train the federation under ``setting``; returns target accuracy and failures."""
    from flwr.serverapp.strategy import FedAvg

    from attacks.active import gradient_ascent
    from fl_sim.federation import quiet_flwr, run_federation, threads_for
    from strategies.attacker import AttackerSettings, GlobalAttacker

    fed, att = cfg.federation, cfg.attack
    n = fed.participants
    snap_dir = run_dir / "snapshots" / setting.name
    kept = keep_rounds(cfg)
    store = SnapshotStore(snap_dir, keep_rounds=kept)
    failures_path = snap_dir / "failures.json"
    attacker = local_attacker_of(cfg)
    epochs = cfg.attack_epochs()
    plan = ClientPlan(
        store_dir=str(snap_dir),
        x_path=data.x_path, y_path=data.y_path, input_shape=list(data.input_shape),
        num_classes=data.num_classes, model_name=cfg.model.name,
        model_options=dict(cfg.model.options), train=split.train,
        local_epochs=fed.local_epochs, batch_size=fed.batch_size, lr=fed.lr,
        momentum=fed.momentum, weight_decay=fed.weight_decay, seed=cfg.seed,
        threads=threads_for(fed.num_cpus), fail={str(k): v for k, v in fed.fail.items()},
        local_attacker=attacker if n > 1 else None, local_active=setting.local_ascent,
        local_targets=local_targets(split, attacker) if setting.local_ascent else [],
        # the others react in the round after the push, so push one round before each epoch
        ascent_rounds=sorted({e - 1 for e in epochs if e > 1}) if setting.local_ascent else [],
        gamma=att.gamma, keep_rounds=kept, record_received=fed.record_received,
        dp=({"noise_multiplier": cfg.defense.noise_multiplier,
             "max_grad_norm": cfg.defense.max_grad_norm} if cfg.defense.name == "dp_sgd" else None),
    )
    plan_path = run_dir / "plans" / f"{setting.name}.json"
    plan_path.parent.mkdir(exist_ok=True)
    plan.save(plan_path)

    done = store.rounds("global")
    start = max(done) if done else 0
    failures = read_json(failures_path) if failures_path.exists() else []
    failures = [f for f in failures if f["round"] <= start]
    previous_uploads = {}
    if start:
        store.drop_after(start)
        init = store.get(start, None, "global")
        if store.find(start, att.target_participant, "upload"):
            previous_uploads[att.target_participant] = store.get(start, att.target_participant,
                                                                 "upload")
    else:
        init = initial_arrays(cfg, data)

    ascent_fn = None
    if setting.global_ascent:
        targets = np.asarray(global_targets(split, att.target_participant), dtype=np.int64)
        tx, ty = data.x[targets], data.y[targets]

        def ascent_fn(arrays):
            model = build_target_model(cfg, data)
            set_arrays(model, arrays)
            gradient_ascent(model, tx, ty, att.gamma)
            return get_arrays(model)

    settings = AttackerSettings(isolate=setting.isolate, ascent=setting.global_ascent,
                                victim=att.target_participant, ascent_rounds=set(epochs),
                                ascent_fn=ascent_fn)
    # every participant trains every round (the paper's setting); failures are tolerated.
    # FedAvg warns that client-side evaluation is off: it is meant to be.
    with quiet_flwr():
        inner = FedAvg(fraction_evaluate=0.0, min_available_nodes=n, min_train_nodes=n)

    def on_round_end(rnd: int, _arrays) -> None:
        write_json(failures_path, failures + strategy.failures)

    strategy = GlobalAttacker(inner, store, n, settings, round_offset=start,
                              previous_uploads=previous_uploads, on_round_end=on_round_end)
    remaining = fed.rounds - start
    if remaining > 0:
        run_federation(strategy=strategy, plan_path=str(plan_path), participants=n,
                       rounds=remaining, initial_arrays=init, num_cpus=fed.num_cpus,
                       num_gpus=fed.num_gpus, round_timeout_s=fed.round_timeout_s,
                       on_round=(lambda r: progress(setting.name, r + start))
                       if progress else None)
    final_round = max(store.rounds("global"), default=0)
    if final_round < fed.rounds:
        raise RuntimeError(f"federation {setting.name} stopped after round {final_round} "
                           f"of {fed.rounds}")
    final = store.get(final_round, None, "global")
    all_train = [i for part in split.train for i in part]
    out = measure(cfg, data, split, final, all_train)
    out["failures"] = read_json(failures_path) if failures_path.exists() else []
    out["snapshot_bytes"] = store.size_bytes()
    if plan.dp:
        from clients.dp import cumulative_epsilon

        out["dp_epsilon"] = {str(p): cumulative_epsilon(snap_dir, p) for p in range(n)}
    return out
