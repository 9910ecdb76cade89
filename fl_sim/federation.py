"""The one adapter over Flower's simulation engine (Ray backend).

``run_federation`` starts a Flower ServerApp whose strategy is given by the caller and a
ClientApp per participant, on Ray, and blocks until the rounds are done. Client resources
come from the config; the GPU share is 1/N of a GPU when CUDA exists and 0 otherwise
(asking Ray for GPUs that are not there leaves the server waiting on an empty actor pool).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from clients.participant import make_client_app
from fl_sim.records import arrays_to_record


class FederationError(RuntimeError):
    """The simulation engine failed (e.g. Ray could not start on an overloaded machine)."""


@contextmanager
def quiet_flwr(quiet: bool = True):
    """Silence Flower's INFO/WARNING logs and the deprecation warnings around it."""
    logger = logging.getLogger("flwr")
    old_level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old_level)


def client_resources(num_cpus: float, num_gpus: float | None, participants: int) -> dict:
    if num_gpus is None:
        num_gpus = 1.0 / participants if torch.cuda.is_available() else 0.0
    elif num_gpus > 0 and not torch.cuda.is_available():
        num_gpus = 0.0
    return {"num_cpus": float(num_cpus), "num_gpus": float(num_gpus)}


def run_federation(*, strategy: Strategy, plan_path: str, participants: int, rounds: int,
                   initial_arrays: dict[str, np.ndarray],
                   attacker_plans: dict[int, str] | None = None, num_cpus: float = 1.0,
                   num_gpus: float | None = None, round_timeout_s: float = 600.0,
                   on_round: Callable[[int], None] | None = None, quiet: bool = True) -> None:
    """Run ``rounds`` rounds of federated training through Flower on Ray.

    ``strategy`` sees Flower's round numbers 1..rounds (a wrapper may shift them when
    resuming). ``on_round(r)`` is called after each round (progress reporting).
    ``attacker_plans`` maps a malicious participant's id to its own plan file.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        def evaluate_fn(rnd: int, arrays: ArrayRecord):
            if on_round is not None and rnd > 0:
                on_round(rnd)
            return None

        strategy.start(grid=grid, initial_arrays=arrays_to_record(initial_arrays),
                       num_rounds=rounds, timeout=round_timeout_s,
                       train_config=ConfigRecord({}), evaluate_fn=evaluate_fn)

    _simulate(server_app, make_client_app(plan_path, attacker_plans), participants, num_cpus, num_gpus, quiet)


def _simulate(server_app, client_app, participants: int, num_cpus: float, num_gpus: float | None,
              quiet: bool) -> None:
    from flwr.simulation import run_simulation  # deprecated, but the one in-process entry

    resources = client_resources(num_cpus, num_gpus, participants)
    # Ray reads these at start-up; its workers inherit them
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    backend_config = {
        "client_resources": resources,
        "init_args": {"logging_level": logging.ERROR, "log_to_driver": not quiet,
                      "include_dashboard": False},
    }
    try:
        with quiet_flwr(quiet):
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=participants, backend_config=backend_config,
                           verbose_logging=False)
    except Exception as e:
        cause = e.__cause__ or e
        raise FederationError(f"the Flower simulation stopped: {type(cause).__name__}: "
                              f"{str(cause).splitlines()[0] if str(cause) else ''}; the rounds "
                              "done so far are saved, continue with fl-sim run --resume RUN_DIR"
                              ) from e


def run_secagg_federation(*, strategy, plan_path: str, participants: int, rounds: int, secagg: dict,
                          attacker_plans: dict[int, str] | None = None, num_cpus: float = 1.0,
                          num_gpus: float | None = None, round_timeout_s: float = 600.0,
                          on_round: Callable[[int], None] | None = None, quiet: bool = True) -> None:
    """Run ``rounds`` rounds under Flower's SecAgg+ (legacy workflow path, the only one
    Flower 1.42 has for it): ``strategy`` is a legacy strategy (``strategies.secagg``),
    the clients carry ``secaggplus_mod``. ``secagg``: SecAggPlusWorkflow's ``num_shares``,
    ``reconstruction_threshold``, ``clipping_range``, ``quantization_range``, ``max_weight``."""
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from clients.secagg import make_secagg_client_app

    server_app = ServerApp()
    strategy.on_round = on_round

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=rounds, round_timeout=round_timeout_s),
                               strategy=strategy)
        DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(**secagg, timeout=round_timeout_s))(grid, legacy)

    _simulate(server_app, make_secagg_client_app(plan_path, attacker_plans), participants, num_cpus,
              num_gpus, quiet)
