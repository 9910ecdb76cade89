"""Batched white-box feature extraction: outputs, loss, label and per-example gradients.

One chunk costs one forward pass plus one backward pass that stops at the earliest chosen
layer: forward hooks keep each chosen layer's input and output, ``torch.autograd.grad``
returns dLoss_sum/d(output) for those outputs only, and a per-layer-type sampler (einsum)
turns (input, output-gradient) into per-example weight/bias gradients. Because the loss
is summed and the model is in eval mode (BatchNorm uses running statistics, dropout off),
row i of the output-gradient depends on record i alone, so these are exact per-example
gradients, equal to n separate backward passes.

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


def extract_features(model: nn.Module, x, y, *, layers: str | Sequence[str] = "last",
                     output_layers: Sequence[str] = (), chunk_size: int = 256,
                     device: str | torch.device | None = None) -> FeatureSet:
    """All features of records (x, y) as one FeatureSet (the concatenation of :func:`iter_features`).

    Chunks are copied into arrays allocated once for all n records, so peak memory is
    the result plus one chunk (a list + concatenate would hold the result twice).
    """
    n = len(x)
    result: FeatureSet | None = None
    start = 0
    for part in iter_features(model, x, y, layers=layers, output_layers=output_layers,
                              chunk_size=chunk_size, device=device):
        if result is None:
            result = _allocate_like(part, n)
        rows = slice(start, start + len(part))
        for key, arr in part.outputs.items():
            result.outputs[key][rows] = arr
        for key, arr in part.grads.items():
            result.grads[key][rows] = arr
        result.loss[rows] = part.loss
        result.label[rows] = part.label
        start += len(part)
    if result is None:
        raise ValueError("extract_features: no records (x is empty)")
    return result


def _allocate_like(part: FeatureSet, n: int) -> FeatureSet:
    def empty(a: np.ndarray) -> np.ndarray:
        return np.empty((n, *a.shape[1:]), dtype=np.float32)
    return FeatureSet(outputs={k: empty(v) for k, v in part.outputs.items()}, loss=empty(part.loss),
                      label=empty(part.label), grads={k: empty(v) for k, v in part.grads.items()})


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
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    n = len(x)
    if len(y) != n:
        raise ConfigError(f"x has {n} records but y has {len(y)} labels")
    grad_names = gradient_layers(model, layers) if (isinstance(layers, str) or len(layers)) else []
    modules = dict(model.named_modules())
    for name in output_layers:
        if name not in modules:
            raise ConfigError(f"output layer {name!r} is not a module of the model")
    for start in range(0, n, chunk_size):
        xb = _as_tensor(x[start:start + chunk_size])
        yb = _as_tensor(y[start:start + chunk_size]).long()
        yield _chunk_features(model, modules, xb, yb, grad_names, tuple(output_layers), device)


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))


def _chunk_features(model, modules, xb, yb, grad_names, output_names, device) -> FeatureSet:
    """Features of one chunk; all model state changes are undone before returning."""
    # inference_mode(False): a caller's inference_mode would make tensors unusable by autograd.
    with torch.inference_mode(False), _prepared(model, [modules[k] for k in grad_names], device) as (dev, dtype):
        xb = _normal(xb.detach().to(dev, dtype))
        yb = _normal(yb.to(dev))
        inputs: dict[str, list[torch.Tensor]] = {k: [] for k in grad_names}
        outs: dict[str, list[torch.Tensor]] = {k: [] for k in grad_names}
        kept: dict[str, torch.Tensor] = {}
        versions: list[tuple[str, int, torch.Tensor]] = []
        handles = []

        def grad_hook(name):
            def hook(_module, args, output):
                inputs[name].append(args[0].detach())
                versions.append((name, args[0]._version, args[0]))
                outs[name].append(output)
                # Hand downstream a copy, so an in-place op after this layer (e.g.
                # ReLU(inplace=True)) cannot rewrite the output we differentiate against.
                return output.clone()
            return hook

        def out_hook(name):
            def hook(_module, _args, output):
                # clone: an in-place op later in the forward must not change what we keep
                kept[name] = output.detach().clone()
            return hook

        try:
            for name in grad_names:
                handles.append(modules[name].register_forward_hook(grad_hook(name)))
            for name in output_names:
                handles.append(modules[name].register_forward_hook(out_hook(name)))
            with torch.set_grad_enabled(bool(grad_names)):
                logits = model(xb)
                for name, version, t in versions:
                    if t._version != version:
                        raise RuntimeError(f"the input of layer {name!r} was modified in place during the "
                                           f"forward pass; per-example gradients would be wrong")
                num_classes = logits.shape[1]
                if yb.numel() and (int(yb.min()) < 0 or int(yb.max()) >= num_classes):
                    raise ConfigError(f"labels must lie in [0, {num_classes}), got [{int(yb.min())}, {int(yb.max())}]")
                loss = F.cross_entropy(logits, yb, reduction="none")
                grads = _per_example_grads(modules, grad_names, inputs, outs, loss) if grad_names else {}
        finally:
            for h in handles:
                h.remove()
        label = F.one_hot(yb, num_classes)
        outputs = {"logits": _np(logits)}
        outputs.update({k: _np(kept[k].reshape(len(xb), -1)) for k in output_names})
        return FeatureSet(outputs=outputs, loss=_np(loss), label=_np(label),
                          grads={k: _np(v) for k, v in grads.items()})


def _per_example_grads(modules, grad_names, inputs, outs, loss) -> dict[str, torch.Tensor]:
    """Backprop the summed loss to the chosen layers' outputs, then sample per example."""
    flat_outs = [o for name in grad_names for o in outs[name]]
    # Sum-reduction: dsum/d(out_i) = dL_i/d(out_i), independent of the batch size.
    backprops = torch.autograd.grad(loss.sum(), flat_outs, allow_unused=True)
    grads: dict[str, torch.Tensor] = {}
    pos = 0
    for name in grad_names:
        module = modules[name]
        sampler = sampler_for(module)
        prefix = f"{name}." if name else ""
        total: dict[str, torch.Tensor] = {}
        # A module called several times (shared weights) gets the sum over its calls.
        for act, out in zip(inputs[name], outs[name]):
            bp = backprops[pos]
            pos += 1
            if bp is None:  # the call's output does not reach the loss
                bp = torch.zeros_like(out)
            for key, g in sampler(module, act, bp.detach()).items():
                total[key] = total[key] + g if key in total else g
        if not total:  # layer never called in forward: its gradient is zero
            total = {k: torch.zeros(len(loss), *p.shape, dtype=p.dtype, device=p.device)
                     for k, p in module.named_parameters(recurse=False)}
            total = {k: v.reshape(len(loss), v.shape[1], -1) if k == "weight" else v for k, v in total.items()}
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


def _normal(t: torch.Tensor) -> torch.Tensor:
    """A tensor autograd may use: inference-mode tensors are copied out."""
    return t.clone() if t.is_inference() else t


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()
