"""DP-SGD local training (Opacus) as the clients run it, without Ray."""

import numpy as np
import torch

from clients.common import local_train
from fl_sim.models import build_model, get_arrays
from fl_sim.plan import ClientPlan


def _plan(tmp_path, noise):
    return ClientPlan(store_dir=str(tmp_path), x_path="", y_path="", input_shape=[8],
                      num_classes=3, model_name="fc", model_options={"widths": [8]},
                      train=[[0]], local_epochs=1, batch_size=8, lr=0.1, momentum=0.0,
                      weight_decay=0.0, seed=0, threads=1,
                      dp={"noise_multiplier": noise, "max_grad_norm": 1.0})


def test_dp_sgd_trains_and_accumulates_epsilon_across_rounds(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64).astype(np.int64)
    plan = _plan(tmp_path, noise=1.0)
    torch.manual_seed(0)
    model = build_model("fc", (8,), 3, widths=[8])
    before = get_arrays(model)
    _, m1 = local_train(plan, 0, 1, model, x, y)
    after = get_arrays(model)
    assert any(not np.allclose(before[k], after[k]) for k in before)  # the caller's model moved
    _, m2 = local_train(plan, 0, 2, model, x, y)
    assert 0 < m1["dp-epsilon"] < m2["dp-epsilon"]  # cumulative, not reset each round
    _, again = local_train(plan, 0, 2, model, x, y)  # a resumed round does not count twice
    assert abs(again["dp-epsilon"] - m2["dp-epsilon"]) < 1e-9
