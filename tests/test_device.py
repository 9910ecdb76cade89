"""The device rule (``federation.device``): CUDA only where asked for or, with ``auto``, where
torch sees it; with ``cpu`` every tensor of local training, DP-SGD, gradient ascent, feature
extraction and the attack model stays on the CPU, even on a machine that has CUDA."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fl_sim import catalog
from fl_sim.errors import ConfigError
from fl_sim.training import resolve_device
from tests.conftest import tiny_config

REAL_CUDA = torch.cuda.is_available()


class DevicesSeen(TorchDispatchMode):
    """Records the device of every tensor an aten op produces."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen |= {t.device.type for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
        return out


@pytest.fixture
def cuda_claimed(monkeypatch):
    """The device rule sees a CUDA device (there is none here): code that follows ``auto``
    fails when it moves a tensor. Restores the determinism switches resolve_device sets."""
    import fl_sim.training

    monkeypatch.setattr(fl_sim.training, "cuda_available", lambda: True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    bench, det = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, det


def test_the_rule_picks_cuda_when_available_and_only_then(cuda_claimed, monkeypatch):
    import fl_sim.training

    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(fl_sim.training, "cuda_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="federation.device=cuda") as e:
        resolve_device("cuda")
    assert "\n" not in str(e.value)


def _plan(tmp_path, **over):
    from fl_sim.federated import write_plans
    from fl_sim.plan import ClientPlan
    from fl_sim.target import load_data, make_run_split

    cfg = tiny_config(**over)
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path, _ = write_plans(cfg, catalog.TRAININGS["passive"], data, split, tmp_path, "passive")
    return cfg, data, split, ClientPlan.load(path)


def test_auto_moves_local_training_to_cuda_when_torch_sees_it(cuda_claimed, tmp_path):
    from clients.common import load_partition, local_train

    _, _, _, plan = _plan(tmp_path)   # federation.device: auto
    model = plan.model_spec().build()
    if REAL_CUDA:
        local_train(plan, 0, 1, model, *load_partition(plan, 0))
        assert next(model.parameters()).is_cuda
        return
    with pytest.raises((AssertionError, RuntimeError), match="CUDA|NVIDIA"):   # it tried
        local_train(plan, 0, 1, model, *load_partition(plan, 0))


def test_device_cpu_keeps_every_tensor_on_the_cpu(cuda_claimed, tmp_path):
    from attacks.active import gradient_ascent
    from clients.common import load_partition, local_train
    from fl_sim.federated import ascent_step
    from fl_sim.models import get_arrays
    from fl_sim.scenarios.common import features_of, make_attack

    cfg, data, split, plan = _plan(tmp_path, federation__device="cpu",
                                   attack__epochs_attack_model=2)
    _, _, _, dp_plan = _plan(tmp_path / "dp", federation__device="cpu", defense__name="dp_sgd")
    x, y = load_partition(plan, 0)
    watch = DevicesSeen()
    with watch:
        model = plan.model_spec().build()
        local_train(plan, 0, 1, model, x, y)                       # SGD
        local_train(dp_plan, 0, 1, dp_plan.model_spec().build(), x, y)   # Opacus DP-SGD
        gradient_ascent(model, x[:5], y[:5], 1e-3)                  # the local attacker's push
        arrays = ascent_step(cfg, data, split)(get_arrays(model))   # the aggregator's
        members, others = np.asarray(split.train[0][:12]), np.asarray(split.test[:12])
        known, = features_of(cfg, data, arrays, np.r_[members, others])
        attack = make_attack(cfg, "nasr", 0)
        attack.fit(known, np.r_[np.ones(12), np.zeros(12)])
        attack.score_samples(known)
    assert watch.seen == {"cpu"}
