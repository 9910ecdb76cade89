"""Per-example gradients of an nn.Linear from its input and the loss gradient at its output.

For y = x W^T + b and per-example loss L_i, dL_i/dW = sum_t g_{i,t} x_{i,t}^T and
dL_i/db = sum_t g_{i,t}, with t running over any extra (sequence) axes. One batched
product for the whole batch replaces n backward passes.
"""

from __future__ import annotations

import torch
from torch import nn


def linear_grad_sample(module: nn.Linear, activation: torch.Tensor, backprop: torch.Tensor,
                       out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """activation (n, ..., in), backprop (n, ..., out) -> {"weight": (n, out, in), "bias": (n, out)}.

    ``backprop`` must be the gradient of the *sum* of per-example losses w.r.t. the
    module's output, so row i depends only on record i. ``out`` optionally holds
    preallocated contiguous tensors of those shapes to write into (saves a fresh,
    page-faulting allocation per chunk when gradients are large).
    """
    out = out or {}
    n = activation.shape[0]
    a = activation.reshape(n, -1, activation.shape[-1])
    g = backprop.reshape(n, -1, backprop.shape[-1])
    if a.shape[1] == 1:
        # Plain (n, features) input: a batched outer product.
        weight = torch.mul(g[:, 0, :, None], a[:, 0, None, :], out=out.get("weight"))
    else:
        weight = torch.bmm(g.transpose(1, 2), a, out=out.get("weight"))
    result = {"weight": weight}
    if module.bias is not None:
        result["bias"] = torch.sum(g, 1, out=out.get("bias"))
    return result
