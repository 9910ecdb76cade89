"""Which layers to take gradients of, and the per-layer-type sampler for each."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from attacks.features.conv import conv2d_grad_sample
from attacks.features.linear import linear_grad_sample
from fl_sim.errors import ConfigError

GradSampler = Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]

# Layer type -> per-example gradient function (activation, backprop) -> {"weight", "bias"}.
SAMPLERS: dict[type, GradSampler] = {
    nn.Linear: linear_grad_sample,
    nn.Conv2d: conv2d_grad_sample,
}

SPECS = ("last", "last2", "all")


def sampler_for(module: nn.Module) -> GradSampler | None:
    """The sampler for ``module``'s type (subclasses included), or None if unsupported."""
    for cls, fn in SAMPLERS.items():
        if isinstance(module, cls):
            return fn
    return None


def gradient_layers(model: nn.Module, spec: str | Sequence[str] = "last") -> list[str]:
    """Module names whose per-example gradients are extracted, in ``named_modules()`` order.

    spec: ``"last"`` = the last nn.Linear (the classifier); ``"last2"`` = the last two
    supported layers (Linear or Conv2d); ``"all"`` = every supported layer; or an explicit
    list of module names (each must be a Linear or Conv2d). Raises ConfigError otherwise.
    """
    supported = [name for name, m in model.named_modules() if sampler_for(m) is not None]
    if isinstance(spec, str):
        if spec == "last":
            linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise ConfigError("gradient layers 'last': the model has no nn.Linear layer")
            return linears[-1:]
        if spec == "last2":
            return supported[-2:]
        if spec == "all":
            return supported
        raise ConfigError(f"unknown gradient layer spec {spec!r}; valid: {', '.join(SPECS)} or a list of module names")
    names = list(spec)
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise ConfigError(f"gradient layer {name!r} is not a module of the model; "
                              f"supported: {', '.join(supported)}")
        if sampler_for(modules[name]) is None:
            raise ConfigError(f"gradient layer {name!r} is a {type(modules[name]).__name__}; "
                              f"only nn.Linear and nn.Conv2d are supported")
    if len(set(names)) != len(names):
        raise ConfigError(f"gradient layers listed twice: {names}")
    return names
