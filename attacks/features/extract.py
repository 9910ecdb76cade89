"""Batched white-box feature extraction: outputs, loss, label and per-example gradients.

One chunk costs one forward pass plus one backward pass that stops at the earliest chosen
layer: forward hooks keep each chosen layer's input and output, ``torch.autograd.grad``
returns dLoss_sum/d(output) for those outputs only, and a per-layer-type sampler (a
batched product) turns (input, output-gradient) into per-example weight/bias gradients.
Because the loss is summed and the model is in eval mode (BatchNorm uses running
statistics, dropout off), row i of the output-gradient depends on record i alone, so these
are exact per-example gradients, equal to n separate backward passes.

The model is left as found: modes, ``requires_grad`` flags and device are restored after
every chunk (also when the caller abandons the iterator), parameters are never written,
and no ``.grad`` is accumulated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attacks.features.featureset import FeatureSet
from attacks.features.layers import gradient_layers, sampler_for
from fl_sim.errors import ConfigError


def iter_features(model: nn.Module, x, y, *, layers: str | Sequence[str] = "last",
                  output_layers: Sequence[str] = (), chunk_size: int = 256,
                  device: str | torch.device | None = None) -> Iterator[FeatureSet]:
    """Yield one FeatureSet per chunk of ``chunk_size`` records, in order.

    x: (n, *input_shape) float array/tensor; y: (n,) integer class labels.
    layers: gradient layers, see :func:`gradient_layers` (``()`` or ``[]`` for none).
    output_layers: module names whose outputs (flattened to (n, d)) are also returned;
        a module called several times in one forward contributes its last call.
    device: where to compute; None = the device of the model's parameters. The model
        is moved there for each chunk and moved back afterwards.
    Memory is bounded by one chunk: the model's activations plus its gradients.
    """
    plan = _Plan(model, x, y, layers, output_layers, chunk_size, device)
    for xb, yb in plan.chunks():
        yield plan.features(xb, yb)


def extract_features(model: nn.Module, x, y, *, layers: str | Sequence[str] = "last",
                     output_layers: Sequence[str] = (), chunk_size: int = 256,
                     device: str | torch.device | None = None) -> FeatureSet:
    """All features of records (x, y) as one FeatureSet; same arguments and result as
    concatenating :func:`iter_features`.

    Arrays for all n records are allocated once, after the first chunk, and later chunks'
    gradients are written into them directly: peak memory is the result plus one chunk's
    activations, and large gradients skip a fresh allocation (page faults) per chunk.
    """
    plan = _Plan(model, x, y, layers, output_layers, chunk_size, device)
    result: FeatureSet | None = None
    start = 0
    for xb, yb in plan.chunks():
        rows = slice(start, start + len(xb))
        sink = {k: v[rows] for k, v in result.grads.items()} if result is not None else None
        part = plan.features(xb, yb, sink=sink)
        if result is None:
            result = _allocate_like(part, plan.n)
        for key, arr in part.outputs.items():
            result.outputs[key][rows] = arr
        for key, arr in part.grads.items():
            if not np.may_share_memory(arr, result.grads[key]):  # not already written in place
                result.grads[key][rows] = arr
        result.loss[rows] = part.loss
        result.label[rows] = part.label
        start += len(xb)
    if result is None:
        raise ValueError("extract_features: no records (x is empty)")
    return result


def _empty_grads(modules, grad_names, n: int) -> dict[str, np.ndarray]:
    """Uninitialised float32 arrays for every chosen parameter's per-example gradient."""
    sink = {}
    for name in grad_names:
        prefix = f"{name}." if name else ""
        for k, p in modules[name].named_parameters(recurse=False):
            shape = (n, p.shape[0], p[0].numel()) if k == "weight" else (n, *p.shape)
            sink[prefix + k] = np.empty(shape, dtype=np.float32)
    return sink


def _allocate_like(part: FeatureSet, n: int) -> FeatureSet:
    def empty(a: np.ndarray) -> np.ndarray:
        return np.empty((n, *a.shape[1:]), dtype=np.float32)
    return FeatureSet(outputs={k: empty(v) for k, v in part.outputs.items()}, loss=empty(part.loss),
                      label=empty(part.label), grads={k: empty(v) for k, v in part.grads.items()})


class _Plan:
    """Validated arguments of one extraction, and the per-chunk computation."""

    def __init__(self, model, x, y, layers, output_layers, chunk_size, device):
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.n = len(x)
        if len(y) != self.n:
            raise ConfigError(f"x has {self.n} records but y has {len(y)} labels")
        self.model, self.x, self.y, self.chunk_size, self.device = model, x, y, chunk_size, device
        self.grad_names = gradient_layers(model, layers) if (isinstance(layers, str) or len(layers)) else []
        self.modules = dict(model.named_modules())
        self.output_names = tuple(output_layers)
        for name in self.output_names:
            if name not in self.modules:
                raise ConfigError(f"output layer {name!r} is not a module of the model")

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for s in range(0, self.n, self.chunk_size):
            yield (_as_tensor(self.x[s:s + self.chunk_size]),
                   _as_tensor(self.y[s:s + self.chunk_size]).long())

    def features(self, xb: torch.Tensor, yb: torch.Tensor,
                 sink: dict[str, np.ndarray] | None = None) -> FeatureSet:
        """Features of one chunk; all model state changes are undone before returning.

        sink: optional float32 arrays ``"<param>" -> (len(xb), ...)`` that the gradients
        are written into (then returned as those same arrays).
        """
        model, modules, grad_names = self.model, self.modules, self.grad_names
        # inference_mode(False): a caller's inference_mode would make tensors unusable by autograd.
        with torch.inference_mode(False), _prepared(model, [modules[k] for k in grad_names],
                                                    self.device) as (dev, dtype):
            xb = _normal(xb.detach().to(dev, dtype))
            yb = _normal(yb.to(dev))
            if yb.numel() and int(yb.min()) < 0:
                raise ConfigError(f"labels must be >= 0, got {int(yb.min())}")
            capture = _Capture(modules, grad_names, self.output_names)
            with capture, torch.set_grad_enabled(bool(grad_names)):
                logits = model(xb)
                capture.check_unmodified()
                num_classes = logits.shape[1]
                if yb.numel() and int(yb.max()) >= num_classes:
                    raise ConfigError(f"labels must lie in [0, {num_classes}), got max {int(yb.max())}")
                loss = F.cross_entropy(logits, yb, reduction="none")
                if dev.type != "cpu" or dtype != torch.float32:
                    sink = None  # the arrays are CPU float32 numpy: compute elsewhere, copy after
                elif sink is None:
                    # numpy asks the kernel for huge pages on large arrays (torch's allocator
                    # does not), so filling a fresh numpy buffer page-faults far less.
                    sink = _empty_grads(modules, grad_names, len(xb))
                grads = _per_example_grads(modules, grad_names, capture, loss, sink) if grad_names else {}
            outputs = {"logits": _np(logits)}
            outputs.update({k: _np(capture.kept[k].reshape(len(xb), -1)) for k in self.output_names})
            return FeatureSet(outputs=outputs, loss=_np(loss), label=_np(F.one_hot(yb, num_classes)),
                              grads={k: _np(v) for k, v in grads.items()})


class _Capture:
    """Forward hooks: chosen layers' inputs and outputs, and requested layer outputs."""

    def __init__(self, modules, grad_names, output_names):
        self.modules, self.grad_names, self.output_names = modules, grad_names, output_names
        self.inputs: dict[str, list[torch.Tensor]] = {k: [] for k in grad_names}
        self.outs: dict[str, list[torch.Tensor]] = {k: [] for k in grad_names}
        self.kept: dict[str, torch.Tensor] = {}
        self._versions: list[tuple[str, int, torch.Tensor]] = []
        self._handles = []

    def __enter__(self):
        for name in self.grad_names:
            self._handles.append(self.modules[name].register_forward_hook(self._grad_hook(name)))
        for name in self.output_names:
            self._handles.append(self.modules[name].register_forward_hook(self._out_hook(name)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _grad_hook(self, name):
        def hook(_module, args, output):
            self.inputs[name].append(args[0].detach())
            self._versions.append((name, args[0]._version, args[0]))
            self.outs[name].append(output)
            # Hand downstream a copy, so an in-place op after this layer (e.g.
            # ReLU(inplace=True)) cannot rewrite the output we differentiate against.
            return output.clone()
        return hook

    def _out_hook(self, name):
        def hook(_module, _args, output):
            # clone: an in-place op later in the forward must not change what we keep
            self.kept[name] = output.detach().clone()
        return hook

    def check_unmodified(self):
        """A layer input changed in place after the layer ran would corrupt its gradient."""
        for name, version, t in self._versions:
            if t._version != version:
                raise RuntimeError(f"the input of layer {name!r} was modified in place during the "
                                   f"forward pass; per-example gradients would be wrong")


def _per_example_grads(modules, grad_names, capture: _Capture, loss,
                       sink: dict[str, np.ndarray] | None) -> dict[str, torch.Tensor]:
    """Backprop the summed loss to the chosen layers' outputs, then sample per example."""
    flat_outs = [o for name in grad_names for o in capture.outs[name]]
    # Sum-reduction: dsum/d(out_i) = dL_i/d(out_i), independent of the batch size.
    backprops = torch.autograd.grad(loss.sum(), flat_outs, allow_unused=True)
    grads: dict[str, torch.Tensor] = {}
    pos = 0
    n = len(loss)
    for name in grad_names:
        module = modules[name]
        sampler = sampler_for(module)
        prefix = f"{name}." if name else ""
        buffers = None
        if sink is not None:
            buffers = {k: torch.from_numpy(sink[prefix + k]) for k, _ in module.named_parameters(recurse=False)}
        total: dict[str, torch.Tensor] = {}
        # A module called several times (shared weights) gets the sum over its calls.
        for call, (act, out) in enumerate(zip(capture.inputs[name], capture.outs[name])):
            bp = backprops[pos]
            pos += 1
            if bp is None:  # this call's output does not reach the loss
                bp = torch.zeros_like(out)
            for key, g in sampler(module, act, bp.detach(), out=buffers if call == 0 else None).items():
                if key in total:
                    total[key] += g  # in place: keeps writing into the sink buffer
                else:
                    total[key] = g
        if not total:  # layer never called in forward: its gradient is zero
            for k, p in module.named_parameters(recurse=False):
                shape = (n, p.shape[0], p[0].numel()) if k == "weight" else (n, *p.shape)
                total[k] = torch.zeros(shape, dtype=p.dtype, device=p.device)
        for key, g in total.items():
            grads[prefix + key] = g
    return grads


@contextmanager
def _prepared(model: nn.Module, grad_modules: list[nn.Module], device):
    """Eval mode; only chosen layers' parameters require grad (so autograd records no
    graph before the earliest chosen layer); model on ``device``. Everything restored."""
    params = list(model.parameters())
    first = params[0] if params else None
    home = first.device if first is not None else torch.device("cpu")
    dev = torch.device(device) if device is not None else home
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in params]
    chosen = {id(p) for m in grad_modules for p in m.parameters(recurse=False)}
    moved = dev != home
    try:
        if moved:
            model.to(dev)
        model.eval()
        for p in params:
            p.requires_grad_(id(p) in chosen)
        yield dev, dtype
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
        if moved:
            model.to(home)


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))


def _normal(t: torch.Tensor) -> torch.Tensor:
    """A tensor autograd may use: inference-mode tensors are copied out."""
    return t.clone() if t.is_inference() else t


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()
