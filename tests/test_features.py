"""Batched white-box features agree with a naive one-backward-per-example loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks.features import FeatureSet, extract_features, gradient_layers, iter_features
from fl_sim.errors import ConfigError
from fl_sim.models import build_model

TOL = 1e-5


def naive_features(model: nn.Module, x: np.ndarray, y: np.ndarray, layer_names: list[str]):
    """Reference: one forward + backward per record; returns (logits, loss, grads)."""
    was_training = model.training
    model.eval()
    modules = dict(model.named_modules())
    logits, losses, grads = [], [], {}
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        out = model(torch.from_numpy(x[i:i + 1]).to(next(model.parameters()).dtype))
        loss = F.cross_entropy(out, torch.from_numpy(y[i:i + 1]))
        loss.backward()
        logits.append(out.detach().numpy()[0])
        losses.append(loss.item())
        for name in layer_names:
            for pname, p in modules[name].named_parameters(recurse=False):
                g = p.grad.detach().numpy()
                g = g.reshape(g.shape[0], -1) if pname == "weight" else g
                grads.setdefault(f"{name}.{pname}", []).append(g.copy())
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return np.stack(logits), np.array(losses), {k: np.stack(v) for k, v in grads.items()}


def assert_matches_naive(model, x, y, layers, **kw):
    names = gradient_layers(model, layers)
    modes = [m.training for m in model.modules()]
    feats = extract_features(model, x, y, layers=layers, **kw)
    assert [m.training for m in model.modules()] == modes
    ref_logits, ref_loss, ref_grads = naive_features(model, x, y, names)
    assert np.abs(feats.outputs["logits"] - ref_logits).max() < TOL
    assert np.abs(feats.loss - ref_loss).max() < TOL
    assert feats.grads.keys() == ref_grads.keys()
    for k, ref in ref_grads.items():
        assert feats.grads[k].shape == ref.shape, k
        assert feats.grads[k].dtype == np.float32
        diff = np.abs(feats.grads[k] - ref).max()
        # absolute bound from the brief, plus a relative one: init-time grads are small
        assert diff < TOL and diff <= 1e-4 * np.abs(ref).max() + 1e-8, (k, diff)
    np.testing.assert_array_equal(feats.label, np.eye(ref_logits.shape[1], dtype=np.float32)[y])
    return feats


def data(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n).astype(np.int64)


@pytest.fixture
def fc():
    torch.manual_seed(0)
    return build_model("fc", (20,), 5, widths=[16, 8])


@pytest.fixture
def alexnet():
    torch.manual_seed(0)
    return build_model("alexnet", (1, 28, 28), 7, width_mult=0.125)


def test_fc_all_layers_match_naive(fc):
    x, y = data(13, (20,), 5)
    feats = assert_matches_naive(fc, x, y, "all", chunk_size=5, output_layers=["hidden.1"])
    assert feats.grads["classifier.weight"].shape == (13, 5, 8)
    assert feats.grads["hidden.0.bias"].shape == (13, 16)
    assert feats.outputs["hidden.1"].shape == (13, 16)


def test_alexnet_conv_layers_match_naive(alexnet):
    x, y = data(9, (1, 28, 28), 7)
    feats = assert_matches_naive(alexnet, x, y, "all", chunk_size=4)
    assert feats.grads["features.0.weight"].shape == (9, 8, 1 * 11 * 11)


def test_alexnet_cifar_shape_last2(alexnet):
    torch.manual_seed(1)
    model = build_model("alexnet", (3, 32, 32), 10, width_mult=0.125)
    x, y = data(6, (3, 32, 32), 10)
    feats = assert_matches_naive(model, x, y, "last2")
    assert set(feats.grads) == {"features.10.weight", "features.10.bias", "classifier.weight", "classifier.bias"}


def test_resnet_batchnorm_no_bias_strided_shortcut():
    torch.manual_seed(0)
    model = build_model("resnet", (3, 16, 16), 4, depth=8, width=4)
    model.train()
    x, y = data(5, (3, 16, 16), 4)
    # fill BN running stats with non-trivial values so eval mode matters
    with torch.no_grad():
        model(torch.from_numpy(x) * 3 + 1)
    names = ["conv1", "layer2.0.shortcut.0", "layer3.0.conv1", "fc"]
    assert_matches_naive(model, x, y, names, chunk_size=2)
    assert model.training and all(m.training for m in model.modules())


class OddConvs(nn.Module):
    """Grouped, dilated, 'same'-padded, reflect-padded, strided convs, in-place ReLU, a
    Linear on a 3-d input and a Linear called twice (shared weights)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 6, 3, groups=2, dilation=2, padding="same")
        self.c2 = nn.Conv2d(6, 5, (3, 2), stride=2, padding=1, padding_mode="reflect")
        self.relu = nn.ReLU(inplace=True)
        self.seq = nn.Linear(5, 5)
        self.shared = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = self.relu(self.c2(self.relu(self.c1(x))))      # (n, 5, H', W')
        h = self.seq(h.flatten(2).transpose(1, 2)).mean(1)  # Linear over positions
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(h)))))


def test_unusual_layers_match_naive():
    torch.manual_seed(0)
    model = OddConvs()
    x, y = data(7, (4, 9, 10), 3)
    assert_matches_naive(model, x, y, "all", chunk_size=3)


def test_chunked_equals_unchunked_and_model_untouched(alexnet):
    x, y = data(11, (1, 28, 28), 7, seed=3)
    alexnet.train()
    before = {k: v.clone() for k, v in alexnet.state_dict().items()}
    flags = [p.requires_grad for p in alexnet.parameters()]
    whole = extract_features(alexnet, x, y, layers="all", chunk_size=64, output_layers=["features.7"])
    parts = list(iter_features(alexnet, x, y, layers="all", chunk_size=4, output_layers=["features.7"]))
    assert [len(p) for p in parts] == [4, 4, 3]
    # extract_features writes later chunks into preallocated arrays: a separate code path
    stored = extract_features(alexnet, x, y, layers="all", chunk_size=4, output_layers=["features.7"])
    for chunked in (FeatureSet.concat(parts), stored):
        assert chunked.grads.keys() == whole.grads.keys() and chunked.outputs.keys() == whole.outputs.keys()
        for k in whole.grads:
            np.testing.assert_allclose(chunked.grads[k], whole.grads[k], rtol=0, atol=1e-6)
        for k in whole.outputs:
            np.testing.assert_allclose(chunked.outputs[k], whole.outputs[k], rtol=0, atol=1e-6)
        np.testing.assert_allclose(chunked.loss, whole.loss, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(chunked.label, whole.label)
    after = alexnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in alexnet.parameters())
    assert [p.requires_grad for p in alexnet.parameters()] == flags
    assert alexnet.training


def test_float64_model_uses_the_copy_path(fc):
    # gradients are computed in float64 and copied into float32 arrays afterwards
    x, y = data(7, (20,), 5)
    assert_matches_naive(fc.double(), x, y, "all", chunk_size=3)
    assert all(p.dtype == torch.float64 for p in fc.parameters())


def test_works_under_no_grad_and_with_tensors(fc):
    x, y = data(4, (20,), 5)
    with torch.no_grad():
        feats = extract_features(fc, torch.from_numpy(x), torch.from_numpy(y))
    assert feats.grads["classifier.weight"].shape == (4, 5, 8)
    assert np.abs(feats.grads["classifier.weight"]).sum() > 0
    with torch.inference_mode():
        again = extract_features(fc, x, y, device="cpu")
    np.testing.assert_array_equal(again.grads["classifier.weight"], feats.grads["classifier.weight"])


def test_no_gradient_layers(fc):
    x, y = data(4, (20,), 5)
    feats = extract_features(fc, x, y, layers=[])
    assert feats.grads == {} and feats.loss.shape == (4,)


def test_gradient_layer_specs(fc, alexnet):
    assert gradient_layers(fc, "last") == ["classifier"]
    assert gradient_layers(fc, "last2") == ["hidden.2", "classifier"]
    assert gradient_layers(fc, "all") == ["hidden.0", "hidden.2", "classifier"]
    assert gradient_layers(alexnet, "last2") == ["features.10", "classifier"]
    assert gradient_layers(alexnet, ["features.0"]) == ["features.0"]
    for bad in ("first", ["nope"], ["hidden.1"]):
        with pytest.raises(ConfigError):
            gradient_layers(fc, bad)


def test_bad_input(fc):
    x, y = data(4, (20,), 5)
    with pytest.raises(ConfigError):
        extract_features(fc, x, y[:3])
    with pytest.raises(ConfigError):
        extract_features(fc, x, y + 10)
    with pytest.raises(ConfigError):
        extract_features(fc, x, y, chunk_size=0)


def test_featureset_helpers(fc):
    x, y = data(6, (20,), 5)
    feats = extract_features(fc, x, y, layers="last2")
    norms = feats.grad_norms()
    ref = np.linalg.norm(feats.grads["classifier.weight"].reshape(6, -1), axis=1)
    np.testing.assert_allclose(norms["classifier.weight"], ref, rtol=1e-5)
    sub = feats.subset([4, 1])
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.grads["hidden.2.weight"][0], feats.grads["hidden.2.weight"][4])
    assert len(feats.subset(feats.loss > np.median(feats.loss))) == 3
    assert len(feats.subset(2)) == 1
    back = FeatureSet.concat([feats.subset(slice(0, 2)), feats.subset(slice(2, 6))])
    np.testing.assert_array_equal(back.outputs["logits"], feats.outputs["logits"])


class ModifiesInputInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        h = x * 2
        out = self.lin(h)
        h.mul_(3)  # rewrites the activation the weight gradient depends on
        return out + h.sum(1, keepdim=True)


def test_in_place_change_of_layer_input_is_refused():
    x, y = data(3, (4,), 3)
    with pytest.raises(RuntimeError, match="modified in place"):
        extract_features(ModifiesInputInPlace(), x, y)
