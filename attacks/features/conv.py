"""Per-example gradients of an nn.Conv2d via im2col (unfold) and one einsum.

A convolution is a matrix product between the weight (out, in/groups*kh*kw) and the
unfolded input patches (in*kh*kw, L) at the L output positions; so the per-example weight
gradient is backprop (out, L) times patches^T, summed over positions.
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
        # 'same' (stride 1): total padding dilation*(k-1), the extra pixel on the right/bottom
        # as torch does.
        pads = []
        for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads), (0, 0)
    if module.padding_mode != "zeros":
        return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), (0, 0)
    return x, tuple(module.padding)


def conv2d_grad_sample(module: nn.Conv2d, activation: torch.Tensor,
                       backprop: torch.Tensor) -> dict[str, torch.Tensor]:
    """activation (n, in, H, W), backprop (n, out, H', W') ->
    {"weight": (n, out, in/groups*kh*kw), "bias": (n, out)}.

    ``backprop`` is the gradient of the summed per-example losses w.r.t. the output.
    """
    n = activation.shape[0]
    groups = module.groups
    out_ch = module.out_channels
    x, padding = _pad_input(module, activation)
    g = backprop.reshape(n, groups, out_ch // groups, -1)  # (n, G, out/G, L)
    cols_per_example = x.shape[1] * module.kernel_size[0] * module.kernel_size[1] * g.shape[-1]
    step = max(1, MAX_UNFOLD_ELEMENTS // max(1, cols_per_example))
    parts = []
    for s in range(0, n, step):
        cols = F.unfold(x[s:s + step], module.kernel_size, dilation=module.dilation,
                        padding=padding, stride=module.stride)  # (m, in*kh*kw, L)
        cols = cols.reshape(cols.shape[0], groups, -1, cols.shape[-1])
        parts.append(torch.einsum("ngol,ngkl->ngok", g[s:s + step], cols))
    weight = torch.cat(parts) if len(parts) > 1 else parts[0]
    out = {"weight": weight.reshape(n, out_ch, -1)}
    if module.bias is not None:
        out["bias"] = backprop.reshape(n, out_ch, -1).sum(-1)
    return out
