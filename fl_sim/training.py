"""Local training and evaluation, shared by Flower clients and stand-alone runs.

Everything that is random here (batch order) is drawn from a seed passed in, so a client
that runs in any Ray worker, in any order, produces the same parameters.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from fl_sim.errors import ConfigError


def cuda_available() -> bool:
    """Whether torch sees a CUDA device in this process (the one place the rule asks)."""
    return torch.cuda.is_available()


def resolve_device(setting: str = "auto") -> torch.device:
    """``federation.device`` in the process that computes: ``cpu``; ``cuda`` (an error when
    torch sees no CUDA device); ``auto``: CUDA when available, else the CPU. On CUDA, torch's
    deterministic algorithms are switched on (a warning, not an error, where an op has none)
    and cuDNN autotuning off, so that a seed repeats; atomics-based ops without a
    deterministic variant can still differ in the last bits between runs."""
    if setting == "cpu" or (setting == "auto" and not cuda_available()):
        return torch.device("cpu")
    if not cuda_available():
        raise ConfigError("federation.device=cuda, but torch sees no CUDA device here")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device("cuda")


def model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def as_tensors(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """numpy (possibly memory-mapped) or torch → contiguous float32 / int64 tensors."""
    # np.array copies: inputs may be read-only memory maps, which torch will not wrap
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.array(x, dtype=np.float32))
    if not isinstance(y, torch.Tensor):
        y = torch.from_numpy(np.array(y, dtype=np.int64))
    return x.float(), y.long()


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def train_epochs(model: nn.Module, x, y, *, epochs: int, batch_size: int, lr: float,
                 seed: int, momentum: float = 0.0, weight_decay: float = 0.0,
                 optimizer: torch.optim.Optimizer | None = None, proximal_mu: float = 0.0) -> float:
    """Mini-batch SGD for ``epochs`` passes over (x, y); returns the mean cross-entropy of the
    last pass (the proximal term left out).

    x: (n, *input_shape) float32; y: (n,) int64. Batch order comes from ``seed`` only.
    ``proximal_mu`` > 0 adds FedProx's mu/2 ||w - w_start||^2 to each batch's loss, w_start
    being the parameters the model came in with (the global model, in a federation).
    """
    dev = model_device(model)
    x, y = (t.to(dev) for t in as_tensors(x, y))
    n = len(y)
    opt = optimizer or make_optimizer(model, lr, momentum, weight_decay)
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    loss_fn = nn.CrossEntropyLoss()
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    model.train()
    last = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            objective = loss
            if anchor is not None:
                objective = loss + proximal_mu / 2 * sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor))
            objective.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        last = total / max(count, 1)
    return last


@torch.no_grad()
def evaluate(model: nn.Module, x, y, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy (fraction) of ``model`` on (x, y)."""
    dev = model_device(model)
    x, y = (t.to(dev) for t in as_tensors(x, y))
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        out = model(x[start:start + batch_size])
        yy = y[start:start + batch_size]
        loss_sum += nn.functional.cross_entropy(out, yy, reduction="sum").item()
        correct += (out.argmax(1) == yy).sum().item()
    model.train(was_training)
    n = max(len(y), 1)
    return loss_sum / n, correct / n


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch_size: int = 512) -> torch.Tensor:
    """Final-layer outputs in eval mode, (n, num_classes) float32 tensor on the CPU."""
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.array(x, dtype=np.float32))
    dev = model_device(model)
    model.eval()
    return torch.cat([model(x[s:s + batch_size].to(dev)).cpu() for s in range(0, len(x), batch_size)])


def predict_proba(model: nn.Module, x, batch_size: int = 512) -> np.ndarray:
    """Softmax outputs, (n, num_classes) float32."""
    return torch.softmax(predict_logits(model, x, batch_size), 1).numpy().astype(np.float32)
