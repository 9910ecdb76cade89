"""Per-example gradients of an nn.Conv2d via im2col (unfold) and one batched matmul.

A convolution is a matrix product between the weight (out, in/groups*kh*kw) and the
unfolded input patches (in/groups*kh*kw, L) at the L output positions (per group); so
the per-example weight gradient is backprop (out, L) times patches^T, summed over
positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Cap on elements of one unfolded patch tensor (float32: 4 bytes each): bounds peak memory
# for wide convs on large maps (e.g. DenseNet "all" layers) independently of the chunk size.
MAX_UNFOLD_ELEMENTS = 1 << 25


def _pad_input(module: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Apply the module's padding explicitly when unfold cannot ('same', non-zero modes)."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return x, (0, 0)
        # 'same' (stride 1): total padding dilation*(k-1), the odd pixel on the right/bottom,
        # as torch does.
        pads = []
        for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads), (0, 0)
    if module.padding_mode != "zeros":
        return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), (0, 0)
    return x, tuple(module.padding)


def conv2d_grad_sample(module: nn.Conv2d, activation: torch.Tensor, backprop: torch.Tensor,
                       out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """activation (n, in, H, W), backprop (n, out, H', W') ->
    {"weight": (n, out, in/groups*kh*kw), "bias": (n, out)}.

    ``backprop`` is the gradient of the summed per-example losses w.r.t. the output.
    ``out`` optionally holds preallocated contiguous tensors of those shapes to fill.
    """
    out = out or {}
    n = activation.shape[0]
    groups = module.groups
    out_ch = module.out_channels
    x, padding = _pad_input(module, activation)
    g = backprop.reshape(n * groups, out_ch // groups, -1)  # (n*G, out/G, L)
    positions = g.shape[-1]
    k = x.shape[1] // groups * module.kernel_size[0] * module.kernel_size[1]
    weight = out.get("weight")
    if weight is None:
        weight = torch.empty(n, out_ch, k, dtype=g.dtype, device=g.device)
    weight_g = weight.view(n * groups, out_ch // groups, k)
    step = max(1, MAX_UNFOLD_ELEMENTS // max(1, k * groups * positions))
    for s in range(0, n, step):
        m = min(step, n - s)
        cols = F.unfold(x[s:s + m], module.kernel_size, dilation=module.dilation,
                        padding=padding, stride=module.stride)  # (m, in*kh*kw, L)
        cols = cols.reshape(m * groups, k, positions)
        rows = slice(s * groups, (s + m) * groups)
        torch.bmm(g[rows], cols.transpose(1, 2), out=weight_g[rows])
    result = {"weight": weight}
    if module.bias is not None:
        result["bias"] = torch.sum(backprop.reshape(n, out_ch, -1), -1, out=out.get("bias"))
    return result
