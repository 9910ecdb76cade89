"""Model registry: name -> builder.

Every builder takes ``(input_shape, num_classes, **options)`` and returns an ``nn.Module``
mapping (n, *input_shape) float32 to logits (n, num_classes). The final layer is an
``nn.Linear``, the last Linear in ``named_modules()`` order. Weights depend only on the
torch RNG state, so ``torch.manual_seed(s)`` before building gives identical models.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from fl_sim.errors import ConfigError
from fl_sim.models.alexnet import build_alexnet
from fl_sim.models.densenet import build_densenet
from fl_sim.models.fc import build_fc
from fl_sim.models.resnet import build_resnet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fc": build_fc,
    "alexnet": build_alexnet,
    "densenet": build_densenet,
    "resnet": build_resnet,
}


def model_names() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(MODELS)


def model_options(name: str) -> list[str]:
    """Option names that the builder of ``name`` accepts."""
    builder = _builder(name)
    params = list(inspect.signature(builder).parameters)
    return params[2:]  # skip input_shape, num_classes


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options) -> nn.Module:
    """Build model ``name`` for inputs (n, *input_shape) and ``num_classes`` outputs.

    Raises ConfigError (one line) for an unknown name, an unknown option, or bad values.
    """
    builder = _builder(name)
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model {name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(allowed) or 'none'}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model {name}: num_classes must be a positive integer, got {num_classes!r}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"model {name}: input_shape must be non-empty positive ints, got {tuple(input_shape)}")
    return builder(shape, num_classes, **options)


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(model_names())}") from None


from fl_sim.models.spec import ModelSpec, get_arrays, model_from, set_arrays  # noqa: E402

__all__ = ["MODELS", "ModelSpec", "build_model", "get_arrays", "model_from", "model_names",
           "model_options", "set_arrays"]
