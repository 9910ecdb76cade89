"""Model registry: shapes, options, determinism, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fl_sim.errors import ConfigError
from fl_sim.models import MODELS, build_model, model_names

SMALL = {
    "fc": {"widths": [32, 16]},
    "alexnet": {"width_mult": 0.125},
    "densenet": {"depth": 10, "growth_rate": 4},
    "resnet": {"depth": 8, "width": 4},
}


def test_registry_names():
    assert model_names() == sorted(MODELS) == ["alexnet", "densenet", "fc", "resnet"]


@pytest.mark.parametrize("name", ["alexnet", "densenet", "resnet"])
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_conv_models_forward(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10, **SMALL[name])
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    last_linear = [m for _, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    assert last_linear.out_features == 10


def test_fc_forward_and_flatten():
    torch.manual_seed(0)
    model = build_model("fc", (600,), 100)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [1024, 512, 256, 128, 100]
    assert all(isinstance(m, nn.Tanh) for m in model.hidden[1::2])
    assert model(torch.randn(2, 600)).shape == (2, 100)
    small = build_model("fc", (2, 5), 3, widths=[4])
    assert small(torch.randn(2, 2, 5)).shape == (2, 3)


def test_paper_sizes_build():
    # Parameter counts of the paper's configurations (build only, no forward: fast).
    assert sum(p.numel() for p in build_model("densenet", (3, 32, 32), 100).parameters()) == 800_032
    alex = build_model("alexnet", (3, 32, 32), 100)
    assert [m.out_channels for m in alex.modules() if isinstance(m, nn.Conv2d)] == [64, 192, 384, 256, 256]
    resnet = build_model("resnet", (3, 32, 32), 100)
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in resnet.modules()) == 19


def test_group_norm_option():
    model = build_model("resnet", (3, 16, 16), 5, depth=8, width=4, norm="group")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_weights(name):
    shape = (12,) if name == "fc" else (3, 32, 32)
    torch.manual_seed(7)
    a = build_model(name, shape, 5, **SMALL[name])
    torch.manual_seed(7)
    b = build_model(name, shape, 5, **SMALL[name])
    torch.manual_seed(8)
    c = build_model(name, shape, 5, **SMALL[name])
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        build_model("vgg", (3, 32, 32), 10)
    msg = str(err.value)
    assert "\n" not in msg and all(n in msg for n in model_names())


@pytest.mark.parametrize("name, shape, options", [
    ("fc", (10,), {"width_mult": 2}),
    ("alexnet", (32, 32), {}),
    ("densenet", (3, 32, 32), {"depth": 11}),
    ("resnet", (3, 32, 32), {"depth": 21}),
    ("resnet", (3, 32, 32), {"norm": "layer"}),
    ("alexnet", (3, 32, 32), {"width_mult": 0}),
])
def test_bad_options_raise_config_error(name, shape, options):
    with pytest.raises(ConfigError):
        build_model(name, shape, 10, **options)
