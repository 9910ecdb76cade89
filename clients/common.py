"""What honest and malicious participants share: loading the plan's data, local training,
and the reply shape FedAvg requires (one ArrayRecord, one MetricRecord with num-examples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from flwr.app import Message, MetricRecord, RecordDict

from fl_sim.plan import ClientPlan
from fl_sim.records import PARTITION_KEY, arrays_to_record
from fl_sim.runtime import client_seed
from fl_sim.snapshots import SnapshotStore
from fl_sim.training import resolve_device, train_epochs


def load_records(plan: ClientPlan, idx) -> tuple[np.ndarray, np.ndarray]:
    """Records ``idx`` of the plan's dataset, memory-mapped (the parse happened once, in the
    runner) and copied out as float32 / int64."""
    x = np.load(plan.x_path, mmap_mode="r")
    y = np.load(plan.y_path, mmap_mode="r")
    idx = np.asarray(idx, dtype=np.int64)
    return np.asarray(x[idx], dtype=np.float32), np.asarray(y[idx], dtype=np.int64)


def load_partition(plan: ClientPlan, pid: int) -> tuple[np.ndarray, np.ndarray]:
    return load_records(plan, plan.train[pid])


def record_received(plan: ClientPlan, pid: int, round_: int,
                    arrays: dict[str, np.ndarray]) -> None:
    """Write what this participant received into the training's snapshot store (to disk:
    Ray may run the next round in another worker process)."""
    SnapshotStore(Path(plan.store_dir), writer=f"p{pid}",
                  keep_rounds=plan.keep_rounds).put(round_, pid, "received", arrays)


def local_train(plan: ClientPlan, pid: int, round_: int, model: torch.nn.Module,
                x: np.ndarray, y: np.ndarray, proximal_mu: float = 0.0) -> tuple[float, dict]:
    """Honest local training: ``local_epochs`` of SGD (or DP-SGD) on the participant's data,
    on ``plan.device``; the model stays there (``get_arrays`` copies back to the CPU)."""
    torch.set_num_threads(max(1, plan.threads))
    seed = client_seed(plan.seed, round_, pid)
    torch.manual_seed(seed)
    model.to(resolve_device(plan.device))
    if plan.dp:
        from clients.dp import dp_train

        return dp_train(plan, pid, round_, model, x, y, seed)
    loss = train_epochs(model, x, y, epochs=plan.local_epochs, batch_size=plan.batch_size,
                        lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay,
                        seed=seed, proximal_mu=proximal_mu)
    return loss, {}


def reply(msg: Message, arrays: dict[str, np.ndarray], pid: int, num_examples: int,
          loss: float, extra: dict | None = None) -> Message:
    metrics = {"num-examples": int(num_examples), PARTITION_KEY: int(pid),
               "train-loss": float(loss)}
    metrics.update(extra or {})
    content = RecordDict({"arrays": arrays_to_record(arrays), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
