"""The active attacker's gradient-ascent step, pure torch (used by the server strategy and
the malicious client alike).

Nasr et al. (Sec. V-B): before sharing parameters, push them *up* the loss of a target
record x, W <- W + gamma * grad_W L(W; x). With many targets every record contributes its
own step of that size, so the step is on the *summed* loss: gamma is per target record.
A participant that owns a target record will sharply reduce that record's loss in its next
local step; for a non-member nobody does, so its loss stays high. That contrast is what the attack model then reads.
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
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not isinstance(y, torch.Tensor):
        y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = x.to(params[0].device), y.to(params[0].device)
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
