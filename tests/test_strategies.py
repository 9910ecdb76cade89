"""``federation.strategy``: any of Flower's strategies as the learning algorithm, always
inside the global attacker; FedProx's proximal term honoured by the clients."""

import numpy as np
import pytest
import torch

from fl_sim.config import load_config
from fl_sim.errors import ConfigError
from fl_sim.models import build_model, get_arrays
from fl_sim.training import train_epochs
from tests.conftest import tiny_config


@pytest.mark.parametrize("name, cls, options, attr, value", [
    ("fedavg", "FedAvg", {}, None, None),
    ("fedprox", "FedProx", {"proximal_mu": 0.5}, "proximal_mu", 0.5),
    ("fedavgm", "FedAvgM", {"server_momentum": 0.7}, "server_momentum", 0.7),
    ("fedadam", "FedAdam", {"eta": 0.02}, "eta", 0.02),
    ("fedyogi", "FedYogi", {"tau": 0.01}, "tau", 0.01),
    ("fedadagrad", "FedAdagrad", {}, None, None),
    ("krum", "Krum", {}, "num_malicious_nodes", 1),
    ("multikrum", "MultiKrum", {"num_nodes_to_select": 3}, "num_nodes_to_select", 3),
    ("trimmed_mean", "FedTrimmedAvg", {"beta": 0.25}, "beta", 0.25),
    ("median", "FedMedian", {}, None, None),
])
def test_the_strategy_is_flowers_class_with_its_options(name, cls, options, attr, value):
    from fl_sim.defense import inner_strategy

    cfg = tiny_config(federation__strategy=name, federation__strategy_options=options)
    strategy = inner_strategy(cfg)
    assert type(strategy).__name__ == cls
    if attr:
        assert getattr(strategy, attr) == value


@pytest.mark.parametrize("overrides, fragment", [
    (["federation.strategy=fedprox", "federation.strategy_options={proximal: 1}"], "proximal"),
    (["federation.strategy=adam"], "federation.strategy"),
    (["federation.strategy=fedprox", "defense.name=robust"], "leave the strategy at fedavg"),
    (["federation.strategy=fedadam", "defense.name=secagg"], "leave the strategy at fedavg"),
    (["federation.strategy=fedprox", "defense.name=dp_sgd"], "proximal term"),
])
def test_bad_strategies_are_one_line_errors(overrides, fragment):
    from fl_sim.defense import inner_strategy

    with pytest.raises(ConfigError) as e:
        inner_strategy(load_config(None, overrides))
    assert fragment in str(e.value) and "\n" not in str(e.value)


def _train(mu, x, y):
    torch.manual_seed(0)
    model = build_model("fc", (8,), 3, widths=[16])
    start = get_arrays(model)
    train_epochs(model, x, y, epochs=3, batch_size=8, lr=0.1, seed=1, proximal_mu=mu)
    end = get_arrays(model)
    return float(np.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in start))), end


def test_the_proximal_term_holds_local_training_near_the_global_model():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64)
    free, _ = _train(0.0, x, y)
    held, _ = _train(10.0, x, y)
    assert held < 0.5 * free
    # mu = 0 is plain SGD, unchanged
    torch.manual_seed(0)
    plain = build_model("fc", (8,), 3, widths=[16])
    train_epochs(plain, x, y, epochs=3, batch_size=8, lr=0.1, seed=1)
    _, zero = _train(0.0, x, y)
    assert all(np.array_equal(zero[k], v) for k, v in get_arrays(plain).items())


def test_the_client_app_honours_the_mu_fedprox_sends(tmp_path):
    """The real ClientApp, called with the train message FedProx would send."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

    from clients.participant import make_client_app
    from fl_sim.catalog import TRAININGS
    from fl_sim.federated import write_plans
    from fl_sim.records import record_to_arrays
    from fl_sim.target import initial_arrays, load_data, make_run_split

    cfg = tiny_config(federation__strategy="fedprox")
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    plan_path, _ = write_plans(cfg, TRAININGS["passive"], data, split, tmp_path, "passive")
    app = make_client_app(str(plan_path))
    start = initial_arrays(cfg, data)

    def moved(mu):
        msg = Message(content=RecordDict({
            "arrays": ArrayRecord({k: torch.from_numpy(v) for k, v in start.items()}),
            "config": ConfigRecord({"server-round": 1, "proximal-mu": mu})}),
            metadata=Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                              group_id="1", created_at=0.0, ttl=600.0, message_type="train"))
        ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
        up = record_to_arrays(app(msg, ctx).content["arrays"])
        return float(np.sqrt(sum(((up[k] - start[k]) ** 2).sum() for k in start)))

    assert moved(9.0) < 0.7 * moved(0.0)   # lr 0.1 x mu 9 < 1: held, not overshooting
