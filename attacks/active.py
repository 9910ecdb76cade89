"""The active attacker's gradient-ascent step, pure torch (used by the server strategy and
the malicious client alike).

Nasr et al. (Sec. V-B): before sharing parameters, push them *up* the loss of a target
record x, W <- W + gamma * grad_W L(W; x). With many targets every record contributes its
own step of that size, so the step is on the *summed* loss: gamma is per target record.
A participant that owns a target record will sharply reduce that record's loss in its next
local step; for a non-member nobody does, so its loss stays high. That contrast is what the attack model then reads.

Beyond the paper, :func:`normalized_gradient_ascent` gives every target record the same
weight (its gradient scaled to unit norm before the sum), and :func:`per_record_gradients`
measures what either step does to each record.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def gradient_ascent(model: nn.Module, x, y, gamma: float, batch_size: int = 1024) -> nn.Module:
    """Apply one ascent step in place: W <- W + gamma * sum_i grad L(W; x_i, y_i).

    x: (n, *input_shape) float32, y: (n,) int64. Only parameters move (not BatchNorm buffers).
    The model is evaluated in eval mode so the step does not update running statistics.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = _tensors(x, y, params[0].device)
    was_training = model.training
    model.eval()
    grads = [torch.zeros_like(p) for p in params]
    for s in range(0, len(y), batch_size):
        loss = nn.functional.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size],
                                           reduction="sum")
        for g, gi in zip(grads, torch.autograd.grad(loss, params)):
            g += gi
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(gamma * g)
    model.train(was_training)
    return model


def _tensors(x, y, device) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not isinstance(y, torch.Tensor):
        y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return x.to(device), y.to(device)


def last_layer(model: nn.Module) -> list[str]:
    """The parameter names of the model's last ``nn.Linear`` (the classifier): the layer
    the white-box attack reads by default (``attack.layers: last``)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return []
    prefix = f"{linears[-1]}." if linears[-1] else ""
    return [k for k, p in model.named_parameters() if p.requires_grad and k.startswith(prefix)
            and "." not in k[len(prefix):]]


def _chunk_for(params: dict[str, torch.Tensor], budget_floats: int = 1 << 26) -> int:
    # the per-record gradients of one chunk are all in memory at once: bound them (256 MB)
    return max(1, budget_floats // max(1, sum(p.numel() for p in params.values())))


def per_record_gradients(model: nn.Module, x, y, chunk: int | None = None):
    """Yield ``(start, losses, grads)`` over chunks of the records: each record's own loss
    and loss gradient (``grads[name]`` of shape (chunk, *param.shape)), computed in one
    batched pass per chunk (torch.func vmap over grad), in eval mode, without touching the
    model's parameters or buffers."""
    from torch.func import functional_call, grad_and_value, vmap

    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    x, y = _tensors(x, y, next(iter(params.values())).device)
    chunk = chunk or _chunk_for(params)

    def loss_of(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    per_record = vmap(grad_and_value(loss_of), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(y), chunk):
            grads, losses = per_record(params, x[s:s + chunk], y[s:s + chunk])
            yield s, losses.detach(), grads
    finally:
        model.train(was_training)


def record_norms(grads: dict[str, torch.Tensor], names=None) -> torch.Tensor:
    """(chunk,) L2 norm of each record's gradient over ``names`` (default: every parameter);
    per parameter in float32 (the gradients' own precision), summed in float64."""
    keys = list(grads) if names is None else list(names)
    first = grads[keys[0]]
    total = torch.zeros(first.shape[0], dtype=torch.float64, device=first.device)
    for k in keys:
        total += torch.linalg.vector_norm(grads[k].reshape(first.shape[0], -1), dim=1).double().square()
    return total.sqrt()


def weighted_gradient(model: nn.Module, x, y, weights, batch_size: int = 1024) -> list[torch.Tensor]:
    """sum_i weights_i * grad L(W; x_i, y_i) over the trained parameters, in eval mode: one
    backward pass per batch of the loss weighted per record (weights held constant)."""
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = _tensors(x, y, params[0].device)
    w = torch.as_tensor(weights, device=params[0].device).to(torch.float32)
    was_training = model.training
    model.eval()
    grads = [torch.zeros_like(p) for p in params]
    for s in range(0, len(y), batch_size):
        losses = nn.functional.cross_entropy(model(x[s:s + batch_size]), y[s:s + batch_size], reduction="none")
        for g, gi in zip(grads, torch.autograd.grad((w[s:s + batch_size] * losses).sum(), params)):
            g += gi
    model.train(was_training)
    return grads


def unit_weights(norms: torch.Tensor) -> torch.Tensor:
    """1 / ||g_x|| per record; 0 for a record whose gradient is exactly zero (nothing to
    push along: a zero vector has no direction, and dividing by its norm would give NaN)."""
    return torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, torch.ones_like(norms)),
                       torch.zeros_like(norms))


def normalized_gradient_ascent(model: nn.Module, x, y, gamma: float,
                               chunk: int | None = None) -> nn.Module:
    """Apply one normalised ascent step in place: W <- W + gamma * sum_i g_i / ||g_i||, with
    g_i = grad L(W; x_i, y_i) and ||g_i|| its L2 norm over all trained parameters.

    Beyond the paper. Under the sum rule (:func:`gradient_ascent`) each record pushes in
    proportion to its loss gradient, so a fitted member (loss near zero) hardly moves the
    model and the step is driven by the non-member targets; here every target record moves
    it by exactly gamma along its own direction. Records with a zero gradient add nothing.
    The norms come from one batched per-record pass; the step is then the gradient of the
    loss weighted by 1 / ||g_i|| (no per-record gradient is summed by hand).
    """
    norms = torch.cat([record_norms(g) for _, _, g in per_record_gradients(model, x, y, chunk)])
    grads = weighted_gradient(model, x, y, unit_weights(norms))
    with torch.no_grad():
        for p, g in zip((p for p in model.parameters() if p.requires_grad), grads):
            p.add_(gamma * g)
    return model
