"""The one adapter over Flower's simulation engine (Ray backend).

``run_federation`` starts a Flower ServerApp whose strategy is given by the caller and a
ClientApp per participant, on Ray, and blocks until the rounds are done. Client resources
come from the config; the GPU share is 1/N of a GPU when CUDA exists and 0 otherwise
(asking Ray for GPUs that are not there leaves the server waiting on an empty actor pool).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from clients.participant import make_client_app
from fl_sim.config import ray_address_problem
from fl_sim.errors import FlSimError, SnapshotWriteError
from fl_sim.records import arrays_to_record


class FederationError(RuntimeError):
    """The simulation engine failed (e.g. Ray could not start on an overloaded machine)."""


class RayAddressError(FlSimError):
    """``federation.ray_address`` (or $RAY_ADDRESS) names no Ray cluster this process can
    join in time. Bad input: nothing ran, and a resume cannot change the address."""


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
                   ray_address: str | None = None, ray_connect_timeout_s: float = 30.0) -> None:
    """Run ``rounds`` rounds of federated training through Flower on Ray.

    ``strategy`` sees Flower's round numbers 1..rounds (a wrapper may shift them when
    resuming). ``on_round(r)`` is called after each round (progress reporting).
    ``attacker_plans`` maps a malicious participant's id to its own plan file.
    ``ray_address``: an existing Ray cluster (else ``$RAY_ADDRESS``, else a local Ray on
    loopback), joined within ``ray_connect_timeout_s`` or not at all (RayAddressError).
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
              ray_address, ray_connect_timeout_s)


# The Flower releases whose private pieces _prompt_polling and _actors_kept_for_the_process
# replace (read in flwr 1.42's sources). pyproject.toml pins the same range; with any other
# Flower installed, the simulation runs on Flower's own engine, unpatched (one warning).
PATCHED_FLOWER = ("1.42", "1.43")   # [from, to)
_WARNED: set[str] = set()


def installed_flower() -> str:
    from importlib.metadata import version

    return version("flwr")


def flower_patches_apply(flower_version: str | None = None) -> bool:
    """Whether the installed Flower is one the engine patches were written for."""
    from packaging.version import Version

    v = Version(flower_version or installed_flower())
    return Version(PATCHED_FLOWER[0]) <= Version(v.base_version) < Version(PATCHED_FLOWER[1])


def _patched_engine(flower_version: str | None = None) -> bool:
    """Whether this process's Flower gets the engine patches; when not, one warning per
    process saying what is slower."""
    if flower_patches_apply(flower_version):
        return True
    v = flower_version or installed_flower()
    if v not in _WARNED:
        _WARNED.add(v)
        print(f"fl-sim: warning: Flower {v} is not the release fl-sim's engine speed-ups were written for "
              f"({PATCHED_FLOWER[0]}.x): running Flower's own engine, which starts Ray and its actors again "
              "for every federation (seconds each) and polls for messages every 0.1 s instead of 5 ms",
              file=sys.stderr, flush=True)
    return False


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
    if _KEPT.pop("token_auth", False):
        _reread_ray_auth_settings()  # this process's Ray settings are the user's again


# ---------------------------------------------------------------- joining or starting Ray
#
# A local Ray binds every server (GCS, raylet's node and object managers, the runtime-env
# agent, each worker's and the driver's gRPC server) to the node's IP address. Ray turns a
# node address of 127.0.0.1 into the machine's network address (resolve_ip_for_localhost)
# unless it believes clusters are off, and then its C++ servers listen on every interface;
# with the node on 127.0.0.1 they listen on loopback only. Token authentication (Ray >=
# 2.52) is read from RAY_AUTH_MODE / RAY_AUTH_TOKEN in the environment of every Ray process.


def _token_auth_supported() -> bool:
    try:
        from ray._raylet import AuthenticationTokenLoader, Config  # noqa: F401  (Ray >= 2.52)
    except ImportError:
        return False
    return True


def _reread_ray_auth_settings() -> None:
    """Make this process's Ray read RAY_AUTH_* again: it reads them once and caches the token."""
    if _token_auth_supported():
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def _environ(values: dict[str, str]):
    """``values`` in os.environ for the block only: the Ray processes started inside inherit
    them, the rest of the process and later subprocesses do not see them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _node_on_loopback():
    """Let Ray keep 127.0.0.1 as this node's address (see above); Ray reads the switch
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER) once at import, so the module's copy is set."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _init_args(quiet: bool) -> dict:
    # what Flower's RayBackend.init_ray passes: the workers import this process's modules
    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    return {"logging_level": logging.ERROR, "log_to_driver": not quiet, "include_dashboard": False,
            "runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}}}


def _start_local_ray(quiet: bool) -> None:
    """A Ray of this process's own: every server on loopback and, where Ray has it, token
    authentication with a fresh token that lives only in the environment of the Ray
    processes started here (no token file is written; a user's ~/.ray/auth_token and
    RAY_AUTH_* settings are left as they were, and restored in this process afterwards)."""
    import ray

    auth = _token_auth_supported()
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)} if auth else {}
    with _environ(env), _node_on_loopback():
        _reread_ray_auth_settings()
        _KEPT["token_auth"] = auth
        # "local", not None: None would join a `ray start` cluster Ray finds on the machine
        ray.init(address="local", _node_ip_address="127.0.0.1", **_init_args(quiet))


def _where(address: str, from_env: bool) -> str:
    return f"{'RAY_ADDRESS' if from_env else 'federation.ray_address'}={address}"


def _address(ray_address: str | None) -> tuple[str | None, bool]:
    """(the cluster to join, None for a Ray of this process's own; whether $RAY_ADDRESS named it)."""
    address, from_env = ray_address, False
    if address is None and os.environ.get("RAY_ADDRESS"):
        address, from_env = os.environ["RAY_ADDRESS"], True
    if address is not None and (problem := ray_address_problem(address)):
        raise RayAddressError(f"{'RAY_ADDRESS' if from_env else 'federation.ray_address'}: {problem}")
    return (None if address == "local" else address), from_env


def cluster_address(ray_address: str | None) -> str | None:
    """The Ray cluster the federations run on (``ray_address``, else $RAY_ADDRESS); None:
    a Ray of this process's own."""
    return _address(ray_address)[0]


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    return host.strip("[]"), int(port)


def _tcp_problem(host: str, port: int, timeout_s: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.timeout:
        return f"no answer within {timeout_s:g} s"
    except socket.gaierror as e:
        return f"unknown host: {e.strerror}"
    except OSError as e:
        return (e.strerror or str(e)).lower()


def _check_reachable(address: str, from_env: bool, timeout_s: float) -> None:
    problem = _tcp_problem(*_host_port(address), timeout_s)
    if problem is not None:
        raise RayAddressError(f"{_where(address, from_env)}: no Ray cluster to join there ({problem}); "
                              "start its head or fix the address")


def _head_on_loopback_only(port: int, timeout_s: float) -> bool:
    """Whether a head answering on 127.0.0.1:``port`` is not there on the machine's own
    address, which is where Ray would look for it (it rewrites a loopback address)."""
    import ray

    try:
        node_ip = ray.util.get_node_ip_address()
    except Exception:
        return True
    return node_ip not in ("127.0.0.1", "::1") and _tcp_problem(node_ip, port, timeout_s) is not None


class _TokenRefused(Exception):
    pass


def _check_token(gcs_address: str) -> None:
    """Raise _TokenRefused at once when the GCS refuses this process's token (or its lack of
    one): ray.init would retry that 20 times, a second apart, before a vague ConnectionError."""
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # a Ray without token authentication
        return
    try:
        GcsClient(address=gcs_address, cluster_id=None)
    except AuthenticationError as e:
        raise _TokenRefused(str(e).split(". ")[0]) from None
    except Exception:  # anything else: ray.init's own report says more
        pass


@contextmanager
def _stderr_hidden():
    """Send file descriptor 2 to /dev/null: Ray's C++ code logs each failed try of a join
    there, and the user gets the one line fl-sim prints instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _join_cluster(address: str, from_env: bool, timeout_s: float, quiet: bool) -> None:
    """``ray.init(address)`` within ``timeout_s``. Ray retries a GCS that does not answer,
    or that refuses this process's token, for minutes inside C++ calls that hold off
    signals; here it runs in a helper thread while this one waits with a timeout, taking
    signals (SIGTERM included) meanwhile. A join given up on is left to end on its own."""
    import ray

    deadline = time.monotonic() + timeout_s
    loopback = False
    if address != "auto":
        _check_reachable(address, from_env, timeout_s)
        host, port = _host_port(address)
        if not address.startswith("ray://") and host in ("127.0.0.1", "localhost", "::1"):
            loopback = _head_on_loopback_only(port, max(0.1, min(2.0, deadline - time.monotonic())))
    outcome: dict = {}
    done = threading.Event()

    def join() -> None:
        try:
            _reread_ray_auth_settings()  # the user's RAY_AUTH_* as they are now
            if address != "auto" and not address.startswith("ray://"):
                _check_token(address)
            with _node_on_loopback() if loopback else nullcontext():
                ray.init(address=address, **_init_args(quiet))
        except BaseException as e:  # handed to the waiting thread
            outcome["error"] = e
        finally:
            done.set()

    worker_log = logging.getLogger("ray._private.worker")
    level = worker_log.level
    worker_log.setLevel(logging.ERROR)  # "SIGTERM handler is not set ... not the main thread"
    try:
        with _stderr_hidden():
            threading.Thread(target=join, name="fl-sim-ray-join", daemon=True).start()
            finished = done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        worker_log.setLevel(level)
    where = _where(address, from_env)
    token_hint = "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, docs/ray-cluster.md"
    if not finished:
        raise RayAddressError(f"{where}: the Ray cluster did not let this process join within {timeout_s:g} s "
                              "(federation.ray_connect_timeout_s): is it a Ray head's GCS port, and does it "
                              f"want a token ({token_hint})?")
    e = outcome.get("error")
    if isinstance(e, _TokenRefused):
        raise RayAddressError(f"{where}: the Ray cluster refused this process's token ({e}); give this "
                              f"process the cluster's token ({token_hint})")
    if e is not None:
        first = (str(e).strip().splitlines() or [""])[0]
        raise RayAddressError(f"{where}: could not join the Ray cluster: {type(e).__name__}: {first}")


def join_ray_cluster(ray_address: str | None, timeout_s: float) -> None:
    """Join the cluster ``ray_address`` (else $RAY_ADDRESS) names, unless this process is
    there already, so that one that is not there fails now, with one line: a malformed
    address and a closed port at once, a silent host or a refusing cluster after
    ``timeout_s``. The federations then run on it. Nothing to do for a Ray of this
    process's own, which the first federation starts."""
    if _address(ray_address)[0] is not None:
        _ensure_ray(ray_address, timeout_s, quiet=True)


def _ensure_ray(ray_address: str | None, timeout_s: float, quiet: bool) -> str | None:
    """Join ``ray_address``'s cluster, or start a Ray of this process's own, unless the kept
    session (or one the caller started) serves; returns the address (None: local)."""
    import ray

    address, from_env = _address(ray_address)
    if _KEPT.get("address", address) != address:  # the kept session is on another cluster
        shutdown_ray()
    if ray.is_initialized():
        return address
    _KEPT["address"] = address  # also when a join given up on succeeds later, in its thread
    if address is not None:
        _join_cluster(address, from_env, timeout_s, quiet)
        return address
    try:
        _start_local_ray(quiet)
    except Exception as e:
        shutdown_ray()
        raise FederationError(f"Ray did not start: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}; "
                              "the rounds done so far are saved, continue with fl-sim run --resume RUN_DIR"
                              ) from e
    return None


def _simulate(server_app, client_app, participants: int, num_cpus: float, num_gpus: float | None,
              quiet: bool, ray_address: str | None = None, ray_connect_timeout_s: float = 30.0) -> None:
    from flwr.simulation import run_simulation  # deprecated, but the one in-process entry

    resources = client_resources(num_cpus, num_gpus, participants)
    # Ray reads these at start-up; its workers inherit them
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # before Flower's engine starts: it would call ray.init itself, unbounded, in this thread
    address = _ensure_ray(ray_address, ray_connect_timeout_s, quiet)
    backend_config = {"client_resources": resources}
    patched = _patched_engine()
    if not patched:
        # Flower's own backend builds a pool of its own: the kept actors would hold the CPUs
        # it asks for, and it would wait on them for ever
        _drop_kept_pool()
    try:
        with (quiet_flwr(quiet), _actors_kept_for_the_process() if patched else nullcontext(),
              _prompt_polling(POLL_INTERVAL_S) if patched else nullcontext()):
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=participants, backend_config=backend_config,
                           verbose_logging=False)
        _KEPT["address"] = address
        if not patched:  # Flower's own backend shut Ray down: forget it too
            shutdown_ray()
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
                          ray_address: str | None = None, ray_connect_timeout_s: float = 30.0) -> None:
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
              num_gpus, quiet, ray_address, ray_connect_timeout_s)
