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
from fl_sim.errors import SnapshotWriteError
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
                   on_round: Callable[[int], None] | None = None, quiet: bool = True,
                   ray_address: str | None = None) -> None:
    """Run ``rounds`` rounds of federated training through Flower on Ray.

    ``strategy`` sees Flower's round numbers 1..rounds (a wrapper may shift them when
    resuming). ``on_round(r)`` is called after each round (progress reporting).
    ``attacker_plans`` maps a malicious participant's id to its own plan file.
    ``ray_address``: an existing Ray cluster (else ``$RAY_ADDRESS``, else a local Ray).
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

    _simulate(server_app, make_client_app(plan_path, attacker_plans), participants, num_cpus, num_gpus, quiet,
              ray_address)


# How often the simulation engine looks for new messages and for replies (seconds); None
# keeps Flower's 0.1 s. See _prompt_polling.
POLL_INTERVAL_S: float | None = 0.005


@contextmanager
def _prompt_polling(interval: float | None):
    """Poll for messages every ``interval`` seconds instead of Flower's 0.1 s.

    Flower 1.42's simulation engine moves messages by polling, in two places: the Fleet
    thread that hands the server's messages to the actors (``vce_api.add_messages_to_queue``,
    ``f_stop.wait(0.1)``) and the grid that waits for a round's replies
    (``InMemoryGrid.pull_interval``, 0.1 s). Every round waits on both, 0.1 s on average,
    where a Location-30 round trains in about 0.2 s. The loop body is Flower's own; only the
    wait changes. Each poll reads the in-memory link state, so polling 20 times as often costs
    little CPU.
    """
    if interval is None:
        yield
        return
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.superlink.grid import InMemoryGrid

    flower_init, flower_add = InMemoryGrid.__init__, vce_api.add_messages_to_queue

    def grid_init(self, state_factory, pull_interval: float = 0.1) -> None:
        flower_init(self, state_factory, min(pull_interval, interval))

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop) -> None:
        while not f_stop.is_set():
            for node_id in nodes_mapping.keys():
                for msg in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(msg)
            f_stop.wait(interval)

    InMemoryGrid.__init__, vce_api.add_messages_to_queue = grid_init, add_messages_to_queue
    try:
        yield
    finally:
        InMemoryGrid.__init__, vce_api.add_messages_to_queue = flower_init, flower_add


_KEPT: dict = {}  # kept between simulations: the actor "pool" for resources "key", the Ray "address"


@contextmanager
def _actors_kept_for_the_process():
    """Keep Ray and the participants' actors from one simulation to the next.

    Flower's Ray backend shuts Ray down after every simulation, and the next one pays for a
    new Ray session and 4 actors importing torch and Flower: seconds each time, many more on
    a busy machine, while sweeps and the test suite run dozens of federations in one
    process. Flower's actors are generic (each call gets the ClientApp to run) and already
    move between participants and rounds, so the pool is reused when the next simulation
    asks for the same resources. A pool that lost an actor is dropped; a simulation that
    failed drops the Ray session too. Ray shuts itself down when the process exits.
    """
    import ray
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    flower_build, flower_terminate = RayBackend.build, RayBackend.terminate

    def build(self, app_fn) -> None:
        key = repr(sorted(self.client_resources.items()))
        pool = _KEPT.get("pool")
        if pool is not None and _KEPT.get("key") == key and ray.is_initialized():
            self.pool, self.app_fn = pool, app_fn
            return
        _drop_kept_pool()
        flower_build(self, app_fn)
        _KEPT.update(key=key, pool=self.pool)

    def terminate(self) -> None:
        if self.pool is not None and len(self.pool.pool) < self.pool.num_actors:
            _drop_kept_pool()  # an actor is still busy or was lost: start clean next time

    RayBackend.build, RayBackend.terminate = build, terminate
    try:
        yield
    except BaseException:
        shutdown_ray()  # a failed simulation may leave a broken session behind
        raise
    finally:
        RayBackend.build, RayBackend.terminate = flower_build, flower_terminate


def _drop_kept_pool() -> None:
    pool = _KEPT.pop("pool", None)
    _KEPT.pop("key", None)
    if pool is not None:
        pool.terminate_all_actors()


def shutdown_ray() -> None:
    """Stop the kept actors and leave the Ray session (a later federation starts afresh)."""
    import ray

    _drop_kept_pool()
    _KEPT.pop("address", None)
    ray.shutdown()


def _simulate(server_app, client_app, participants: int, num_cpus: float, num_gpus: float | None,
              quiet: bool, ray_address: str | None = None) -> None:
    from flwr.simulation import run_simulation  # deprecated, but the one in-process entry

    resources = client_resources(num_cpus, num_gpus, participants)
    address = ray_address or os.environ.get("RAY_ADDRESS") or None
    if _KEPT.get("address", address) != address:  # the kept session is on another cluster
        shutdown_ray()
    # Ray reads these at start-up; its workers inherit them
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    backend_config = {
        "client_resources": resources,
        "init_args": {"logging_level": logging.ERROR, "log_to_driver": not quiet,
                      **({"address": address} if address else {"include_dashboard": False})},
    }
    try:
        with quiet_flwr(quiet), _actors_kept_for_the_process(), _prompt_polling(POLL_INTERVAL_S):
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=participants, backend_config=backend_config,
                           verbose_logging=False)
        _KEPT["address"] = address
    except Exception as e:
        cause = e.__cause__ or e
        if isinstance(cause, SnapshotWriteError):  # a full disk: its own message says what to do
            raise FederationError(f"the run stopped: {cause}") from e
        raise FederationError(f"the Flower simulation stopped: {type(cause).__name__}: "
                              f"{str(cause).splitlines()[0] if str(cause) else ''}; the rounds "
                              "done so far are saved, continue with fl-sim run --resume RUN_DIR"
                              ) from e


def run_secagg_federation(*, strategy, plan_path: str, participants: int, rounds: int, secagg: dict,
                          attacker_plans: dict[int, str] | None = None, num_cpus: float = 1.0,
                          num_gpus: float | None = None, round_timeout_s: float = 600.0,
                          on_round: Callable[[int], None] | None = None, quiet: bool = True,
                          ray_address: str | None = None) -> None:
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
              num_gpus, quiet, ray_address)
