"""The Nasr et al. (2019) white-box attack network, and the inputs it reads.

Input contract: an attack observes one or more model snapshots of the same ``n`` records;
its input is ``list[FeatureSet]`` (see ``attacks.features``), one per snapshot, all in
the same record order. :func:`collect_inputs` turns that list into a flat dict of named
numpy arrays, and :class:`NasrAttackNet` has one component per named array:

- fully connected (d -> 128 -> 64) for every layer output, the loss and the label;
- convolutional for every gradient *matrix* (rows, cols): a ``Conv2d`` whose kernel
  spans one whole row, ``(1, cols)``, ReLU, dropout, flatten, then FC -> 128 -> 64;
- fully connected for every bias gradient (out,).

All component outputs, of all snapshots, are concatenated into one encoder
(256 -> 128 -> 64 -> 1). The network returns the pre-sigmoid logit; callers apply the
sigmoid (``BCEWithLogitsLoss`` during training is the numerically stable equivalent).

Inputs are rescaled inside the network (statistics fitted on the attacker's training
knowledge only, stored as buffers so they travel with the weights): outputs, loss and
label per element standardized; gradients by default asinh(g / median|g|), because raw
gradients are orders of magnitude below outputs and members' and non-members' gradients
differ by decades (see :class:`Standardize`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LOSS_EPS = 1e-6  # keeps log(loss) finite when a member's float32 loss underflows to 0
# how per-example gradients enter the network: whole matrices (the paper) or their norms
GRAD_INPUTS = ("matrix", "norm")


def as_snapshots(features) -> list:
    """Normalize the attack input to a non-empty list of FeatureSets of equal length."""
    snaps = list(features) if isinstance(features, (list, tuple)) else [features]
    if not snaps:
        raise ValueError("an attack needs at least one snapshot's features")
    n = len(snaps[0])
    if any(len(s) != n for s in snaps):
        raise ValueError(f"snapshots cover different numbers of records: {[len(s) for s in snaps]}")
    return snaps


def _selected(name: str, layers: Sequence[str] | None) -> bool:
    """A parameter ``fc3.weight`` is selected by ``fc3``, ``fc3.weight`` or ``None``."""
    if layers is None:
        return True
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def select_grad_names(snapshot, layers: Sequence[str] | None) -> list[str]:
    """Gradient keys of ``snapshot`` chosen by ``layers`` (module or parameter names)."""
    names = [k for k in snapshot.grads if _selected(k, layers)]
    if layers is not None:
        missing = [layer for layer in layers if not any(_selected(k, [layer]) for k in snapshot.grads)]
        if missing:
            raise ValueError(f"no gradients for layers {missing}; have {sorted(snapshot.grads)}")
    return names


def select_output_names(snapshot, output_layers: Sequence[str] | None) -> list[str]:
    """Output keys of ``snapshot`` chosen by ``output_layers`` (None = all present)."""
    if output_layers is None:
        return list(snapshot.outputs)
    missing = [layer for layer in output_layers if layer not in snapshot.outputs]
    if missing:
        raise ValueError(f"no outputs for layers {missing}; have {sorted(snapshot.outputs)}")
    return list(output_layers)


def log_loss(loss: np.ndarray) -> np.ndarray:
    """log(loss + eps): members' losses span decades near zero, non-members' sit near
    log(C); the log spreads the informative low end instead of squashing it."""
    return np.log(np.asarray(loss, dtype=np.float64) + LOSS_EPS).astype(np.float32)


def reference_gap(loss: np.ndarray, reference_loss: np.ndarray) -> np.ndarray:
    """(n, 2) float32: the true class's probability exp(-loss) under the observed model,
    and its excess over the mean probability under the references (n, R).

    Probability rather than log loss: members and confidently-right non-members both sit
    near p = 1, where log(loss) spreads them over decades of noise; the gap to models
    that never saw the record is what separates them."""
    p = np.exp(-np.asarray(loss, dtype=np.float64))
    ref = np.exp(-np.asarray(reference_loss, dtype=np.float64)).mean(axis=1)
    return np.stack([p, p - ref], axis=1).astype(np.float32)


def collect_inputs(
    features,
    *,
    layers: Sequence[str] | None = None,
    output_layers: Sequence[str] | None = None,
    use_outputs: bool = True,
    use_loss: bool = True,
    use_label: bool = True,
    use_grads: bool = True,
    use_reference: bool = True,
    grad_input: str = "matrix",
) -> dict[str, np.ndarray]:
    """Flatten snapshots into named float32 arrays, row i = record i.

    Keys: ``s{k}|out|{layer}`` (n, d), ``s{k}|loss`` (n, 1) as log(loss + 1e-6),
    ``label`` (n, C) once (the label does not change between snapshots),
    ``s{k}|grad|{param}`` (n, rows, cols) for weight gradients (trailing dims of conv
    kernels folded into cols) or (n, out) for bias gradients -- with ``grad_input="norm"``
    instead ``s{k}|gradnorm|{param}`` (n, 1), log of each gradient's L2 norm (the
    quantity of the paper's Figs. 3-4) -- and ``s{k}|ref`` (n, 2) (:func:`reference_gap`)
    for snapshots that carry reference losses (``use_reference``). The key order is
    deterministic, so fit-time and score-time inputs line up.
    """
    if grad_input not in GRAD_INPUTS:
        raise ValueError(f"grad_input must be one of {GRAD_INPUTS}, not {grad_input!r}")
    snaps = as_snapshots(features)
    arrays: dict[str, np.ndarray] = {}
    for k, fs in enumerate(snaps):
        if use_outputs:
            for name in select_output_names(fs, output_layers):
                a = np.asarray(fs.outputs[name], dtype=np.float32)
                arrays[f"s{k}|out|{name}"] = a.reshape(a.shape[0], -1)
        if use_loss:
            arrays[f"s{k}|loss"] = log_loss(fs.loss).reshape(-1, 1)
        if use_reference and fs.reference_loss is not None:
            arrays[f"s{k}|ref"] = reference_gap(fs.loss, fs.reference_loss)
        if use_grads and grad_input == "norm":
            norms = fs.grad_norms()
            for name in select_grad_names(fs, layers):
                arrays[f"s{k}|gradnorm|{name}"] = np.log(norms[name].astype(np.float64) + 1e-12) \
                    .astype(np.float32).reshape(-1, 1)
        elif use_grads:
            for name in select_grad_names(fs, layers):
                g = np.asarray(fs.grads[name], dtype=np.float32)
                if g.ndim > 3:  # conv kernel (n, out, in, kh, kw): one row per out channel
                    g = g.reshape(g.shape[0], g.shape[1], -1)
                arrays[f"s{k}|grad|{name}"] = g
    if use_label:
        arrays["label"] = np.asarray(snaps[0].label, dtype=np.float32).reshape(len(snaps[0]), -1)
    if not arrays:
        raise ValueError("no attack features selected (all use_* flags are off?)")
    return arrays


@dataclass(frozen=True)
class InputSpec:
    """One named input of the attack network: ``kind`` "fc" (shape (d,)) or "conv"
    (shape (rows, cols))."""

    key: str
    kind: str
    shape: tuple[int, ...]


def specs_for(arrays: dict[str, np.ndarray]) -> list[InputSpec]:
    """Specs (one per array) from :func:`collect_inputs` output."""
    specs = []
    for key, a in arrays.items():
        shape = tuple(int(d) for d in a.shape[1:])
        if len(shape) == 1:
            specs.append(InputSpec(key, "fc", shape))
        elif len(shape) == 2:
            specs.append(InputSpec(key, "conv", shape))
        else:
            raise ValueError(f"input {key!r} has per-record shape {shape}; expected 1-D or 2-D")
    return specs


def check_specs(expected: list[InputSpec], arrays: dict[str, np.ndarray]) -> None:
    """Fail clearly when score-time features differ from fit-time ones."""
    got = specs_for(arrays)
    if got != expected:
        raise ValueError(
            "features differ from those the attack was fitted on: "
            f"expected {[(s.key, s.shape) for s in expected]}, got {[(s.key, s.shape) for s in got]}"
        )


def _mlp(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear+ReLU stack through ``sizes`` (first entry = input width)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


SCALINGS = ("element", "scalar", "asinh")


class Standardize(nn.Module):
    """Input scaling with statistics stored as buffers (fitted on training data only).

    mode "element": (x - mean) / std per element, then clipped to [-clip, clip].
    mode "scalar": x / rms over all elements (keeps the geometry, e.g. the norm of a
        gradient matrix, comparable across records), then clipped.
    mode "asinh": asinh(x / s), s = median |x| over all training elements: linear for
        typical values, logarithmic for large ones, so magnitudes spanning decades
        (members' near-zero gradients vs non-members') stay distinguishable.
    """

    def __init__(self, shape: tuple[int, ...], clip: float, mode: str = "element"):
        super().__init__()
        if mode not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, not {mode!r}")
        self.clip, self.mode = clip, mode
        stat_shape = shape if mode == "element" else ()
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))

    @torch.no_grad()
    def fit(self, a: np.ndarray) -> None:
        a64 = np.asarray(a, dtype=np.float64)
        if self.mode == "element":
            mean, std = a64.mean(axis=0), a64.std(axis=0)
            # Floor relative to the array's typical spread: an element that was (nearly)
            # constant in training must not blow up a slightly different test value.
            rms = float(np.sqrt(np.mean(std**2)))
            std = np.maximum(std, 1e-3 * rms if rms > 0 else 1.0)
        elif self.mode == "scalar":
            mean, std = np.zeros(()), np.sqrt(np.mean(a64**2))
        else:
            nz = np.abs(a64[a64 != 0])
            mean, std = np.zeros(()), np.median(nz) if nz.size else 1.0
        if not np.all(std > 0):
            std = np.where(std > 0, std, 1.0)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        if self.mode == "asinh":
            return torch.asinh(z)
        # Heavy tails: a few huge values would otherwise dominate a batch.
        return z.clamp(-self.clip, self.clip) if self.clip else z


class FCComponent(nn.Module):
    """(b, d) -> (b, out): standardize, then Linear/ReLU d -> 128 -> 64."""

    def __init__(self, d: int, sizes: Sequence[int], clip: float, scaling: str = "element"):
        super().__init__()
        self.norm = Standardize((d,), clip, scaling)
        self.net = _mlp([d, *sizes])
        self.out_dim = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class ConvComponent(nn.Module):
    """(b, rows, cols) -> (b, out): a row-spanning convolution over a gradient matrix.

    Conv2d(1, filters, kernel=(1, cols)) maps each row (one output unit's gradient) to
    ``filters`` numbers with shared weights, then ReLU, dropout, flatten
    (filters * rows) and FC -> 128 -> 64.
    """

    def __init__(self, rows: int, cols: int, filters: int, sizes: Sequence[int], dropout: float, clip: float,
                 scaling: str = "element"):
        super().__init__()
        self.norm = Standardize((rows, cols), clip, scaling)
        self.conv = nn.Conv2d(1, filters, kernel_size=(1, cols))
        self.drop = nn.Dropout(dropout)
        self.fc = _mlp([filters * rows, *sizes])
        self.out_dim = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A (1, cols) kernel over a one-channel (rows, cols) image is exactly a linear map
        # of each row; computing it as one matmul is faster than Conv2d on CPU and GPU.
        # Output (b, rows, filters) -> flatten, same numbers as conv's (b, filters, rows).
        w = self.conv.weight.flatten(1)  # (filters, cols)
        h = torch.nn.functional.linear(self.norm(x), w, self.conv.bias)
        h = self.drop(torch.relu(h)).transpose(1, 2).flatten(1)
        return self.fc(h)


class NasrAttackNet(nn.Module):
    """The attack network over any number of snapshots and inputs.

    specs: one :class:`InputSpec` per input array (see :func:`specs_for`).
    fc_sizes: widths of every component (paper 128, 64).
    conv_filters: filters of each gradient convolution (paper 1000).
    encoder_sizes: hidden widths of the encoder before its scalar output (paper 256,
    128, 64). grad_scaling: :class:`Standardize` mode for gradient inputs.
    ``forward`` returns (b,) logits; sigmoid(logit) = P(member).
    """

    def __init__(
        self,
        specs: Sequence[InputSpec],
        *,
        fc_sizes: Sequence[int] = (128, 64),
        conv_filters: int = 1000,
        conv_dropout: float = 0.2,
        encoder_sizes: Sequence[int] = (256, 128, 64),
        encoder_dropout: float = 0.0,
        clip: float = 10.0,
        grad_scaling: str = "asinh",
    ):
        super().__init__()
        self.specs = list(specs)
        comps = []
        for s in self.specs:
            scaling = grad_scaling if "|grad|" in s.key else "element"
            if s.kind == "fc":
                comps.append(FCComponent(s.shape[0], fc_sizes, clip, scaling))
            else:
                comps.append(ConvComponent(*s.shape, conv_filters, fc_sizes, conv_dropout, clip, scaling))
        self.components = nn.ModuleList(comps)
        width = sum(c.out_dim for c in comps)
        self.encoder = nn.Sequential(_mlp([width, *encoder_sizes], encoder_dropout),
                                     nn.Linear(encoder_sizes[-1], 1))

    def fit_normalization(self, arrays: dict[str, np.ndarray]) -> None:
        """Fit every component's standardization on training arrays (never eval data)."""
        for s, c in zip(self.specs, self.components):
            c.norm.fit(arrays[s.key])

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [c(inputs[s.key]) for s, c in zip(self.specs, self.components)]
        return self.encoder(torch.cat(parts, dim=1)).squeeze(1)


# --- small helpers shared by the trainers -------------------------------------------------


def batch_tensors(arrays: dict[str, np.ndarray], idx: np.ndarray, device) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of every array as float32 tensors on ``device``."""
    return {k: torch.from_numpy(np.ascontiguousarray(a[idx])).to(device) for k, a in arrays.items()}


@torch.no_grad()
def predict_logits(net: nn.Module, arrays: dict[str, np.ndarray], batch_size: int, device) -> np.ndarray:
    """(n,) float64 network outputs in eval mode (no dropout), in record order."""
    net.eval()
    n = len(next(iter(arrays.values())))
    out = [net(batch_tensors(arrays, np.arange(i, min(i + batch_size, n)), device)).double().cpu().numpy()
           for i in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


@contextmanager
def seeded_rng(seed: int, device):
    """Fork torch's RNG (CPU, plus the CUDA device if used) and seed it, so an attack's
    weight init and dropout depend on ``seed`` alone and the caller's RNG is left as it was."""
    dev = torch.device(device)
    devices = []
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def train_one_epoch(opt: torch.optim.Optimizer, order: np.ndarray, batch_size: int,
                    batch_loss: Callable[[np.ndarray], torch.Tensor]) -> float:
    """One pass over ``order`` in batches of ``batch_size``: loss of each batch of record
    indices by ``batch_loss(b)``, then one optimizer step. Returns the summed loss
    (each batch's mean loss times its size)."""
    total = 0.0
    for i in range(0, len(order), batch_size):
        b = order[i : i + batch_size]
        loss = batch_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(b)
    return total


def train_early_stopping(net: nn.Module, *, epochs: int, patience: int, train_epoch: Callable[[], float],
                         val_loss: Callable[[], float] | None) -> tuple[list[dict], int]:
    """Up to ``epochs`` calls of ``train_epoch()`` (net in train mode; returns the mean
    training loss). The monitored loss is ``val_loss()`` when given, else the training
    loss; training stops after ``patience`` epochs without an improvement of 1e-4 (only
    with a validation loss), and the best epoch's weights are loaded back.
    Returns (history: one dict per epoch, best epoch)."""
    best, best_state, bad, best_epoch = np.inf, copy.deepcopy(net.state_dict()), 0, 0
    history: list[dict] = []
    for epoch in range(epochs):
        net.train()
        rec = {"epoch": epoch, "train_loss": train_epoch()}
        if val_loss is not None:
            rec["val_loss"] = val_loss()
        history.append(rec)
        monitor = rec.get("val_loss", rec["train_loss"])
        if monitor < best - 1e-4:
            best, best_state, bad, best_epoch = monitor, copy.deepcopy(net.state_dict()), 0, epoch
        else:
            bad += 1
            if val_loss is not None and bad >= patience:
                break
    net.load_state_dict(best_state)
    return history, best_epoch
