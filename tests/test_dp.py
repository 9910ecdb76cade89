"""DP-SGD local training (Opacus) as the clients run it, without Ray."""

import numpy as np
import pytest
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


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64)


def test_dp_sgd_trains_and_accumulates_epsilon_across_rounds(tmp_path):
    x, y = _data(0, 64)
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


def test_ghost_clipping_takes_the_step_per_sample_hooks_take(tmp_path):
    """dp_train uses Opacus's ghost clipping for speed; its step must be the per-sample
    (hooks) DP-SGD step, same clipping, same noise, to float rounding."""
    import warnings

    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from fl_sim.runtime import client_seed

    x, y = _data(1, 48)
    plan = _plan(tmp_path, noise=0.7)
    torch.manual_seed(0)
    ghost = build_model("fc", (8,), 3, widths=[8])
    start = get_arrays(ghost)
    local_train(plan, 0, 1, ghost, x, y)

    seed = client_seed(plan.seed, 1, 0)   # what local_train seeds, rebuilt with per-sample hooks
    torch.manual_seed(seed)
    hooks = build_model("fc", (8,), 3, widths=[8])
    hooks.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, loader = PrivacyEngine(accountant="rdp").make_private(
            module=hooks, optimizer=torch.optim.SGD(hooks.parameters(), lr=0.1), data_loader=loader,
            noise_multiplier=0.7, max_grad_norm=1.0, noise_generator=torch.Generator().manual_seed(seed + 1))
    for xb, yb in loader:
        if len(yb):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    a, b = get_arrays(ghost), get_arrays(hooks)
    assert any(not np.allclose(a[k], start[k]) for k in a)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_merged_accountant_history_gives_the_per_round_epsilon():
    """The accountant's history is merged by (noise, sample rate) before Opacus composes it:
    the same epsilon as one entry a round, including when a round used other parameters."""
    from opacus.accountants import RDPAccountant

    from clients.dp import merged_history

    history = [[1.0, 0.05, 19, r] for r in range(1, 21)] + [[0.7, 0.1, 10, 21], [1.0, 0.05, 19, 22]]
    merged = merged_history(history)
    assert sorted(merged) == [(0.7, 0.1, 10), (1.0, 0.05, 399)]
    per_round, together = RDPAccountant(), RDPAccountant()
    per_round.history = [tuple(h[:3]) for h in history]
    together.history = merged
    assert together.get_epsilon(1e-5) == pytest.approx(per_round.get_epsilon(1e-5), rel=1e-9)
