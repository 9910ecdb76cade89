"""The gradient-ascent step is the paper's rule: every target record moves the model by
gamma times its own loss gradient (no averaging over the targets)."""

import numpy as np
import torch

from attacks.active import gradient_ascent
from fl_sim.models import build_model, get_arrays


def _grad(model, x, y):
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y),
                                      reduction="sum").backward()
    return {k: p.grad.detach().numpy().copy() for k, p in model.named_parameters()}


def _model():
    torch.manual_seed(0)
    return build_model("fc", (5,), 3, widths=[4])


def test_one_target_moves_the_model_by_gamma_times_its_gradient():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1, 5)).astype(np.float32), np.array([2])
    model = _model()
    before, g = get_arrays(model), _grad(model, x, y)
    gradient_ascent(model, x, y, gamma=0.3)
    after = get_arrays(model)
    for k in g:
        np.testing.assert_allclose(after[k] - before[k], 0.3 * g[k], rtol=1e-5, atol=1e-7)


def test_each_target_contributes_its_own_full_step():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 5)).astype(np.float32), rng.integers(0, 3, 7)
    model = _model()
    before = get_arrays(model)
    per_record = [_grad(_model(), x[i:i + 1], y[i:i + 1]) for i in range(7)]
    gradient_ascent(model, x, y, gamma=0.1, batch_size=3)  # batches must not change the sum
    after = get_arrays(model)
    for k in before:
        expected = 0.1 * sum(g[k] for g in per_record)
        np.testing.assert_allclose(after[k] - before[k], expected, rtol=1e-4, atol=1e-6)
