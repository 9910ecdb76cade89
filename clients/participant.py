"""The Flower ClientApp of every participant: honest, or the malicious local attacker.

``make_client_app(plan_path, attacker_plans)`` returns a ClientApp whose train handler reads
the run plan from disk (Ray workers keep no module state between calls), trains on the
participant's partition, and replies in the shape FedAvg expects. ``attacker_plans`` maps
the malicious participant's id to its own plan file, which no honest participant reads.
``runtime_client_app()`` is the same handler for Flower's own runtime (``flwr run``,
SuperNodes: ``fl_sim.flower_app:clientapp``), where the train message names the plan.

Client-side defenses are Flower's own mods around the train handler (``defense_mods``):
``fixedclipping_mod`` or ``adaptiveclipping_mod`` (central DP with client-side clipping) and ``LocalDpMod`` (local DP).
They draw their noise from numpy's global generator, which the handler seeds from the run
seed, the round and the participant, so a run's numbers repeat.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.common import load_partition, local_train, record_received, reply
from fl_sim.models import get_arrays, model_from
from fl_sim.plan import ClientPlan, LocalAttackPlan, message_run_dir, plan_files
from fl_sim.records import PARTITION_KEY, PLAN_KEY, RUN_DIR_KEY, record_to_arrays
from fl_sim.runtime import client_seed


class InjectedFailure(RuntimeError):
    """Raised on purpose (config ``federation.fail``) to test fault handling."""


def honest_update(plan: ClientPlan, pid: int, round_: int, received: dict,
                  proximal_mu: float = 0.0) -> tuple[dict, int, float, dict]:
    """One round of an honest participant from the model it ``received``; returns
    (upload, num_examples, loss, metrics)."""
    if plan.record_received:
        record_received(plan, pid, round_, received)
    model = model_from(plan.model_spec(), received)
    x, y = load_partition(plan, pid)
    loss, extra = local_train(plan, pid, round_, model, x, y, proximal_mu)
    return get_arrays(model), len(y), loss, extra


def participant_update(plan: ClientPlan, pid: int, round_: int, received: dict,
                       attackers: dict[int, str], proximal_mu: float = 0.0) -> tuple[dict, int, float, dict]:
    """What participant ``pid`` uploads in ``round_`` (honest, or the local attacker's),
    before any client-side defense mod acts on it."""
    if pid in plan.fail.get(str(round_), []):
        raise InjectedFailure(f"participant {pid} fails in round {round_} (federation.fail)")
    # Flower's DP mods draw from numpy's global generator after this handler returns
    np.random.seed(client_seed(plan.seed, round_, pid) % 2**32)
    if pid in attackers:
        from clients.local_attacker import malicious_train

        return malicious_train(plan, LocalAttackPlan.load(attackers[pid]), round_, received, proximal_mu)
    return honest_update(plan, pid, round_, received, proximal_mu)


def defense_mods(plan: ClientPlan) -> list:
    """Flower's client mods for the plan's client-side defenses (Message API), outermost first."""
    from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod

    mods = []
    if "clip" in plan.mods:
        mods.append(fixedclipping_mod)
    if "adaptive_clip" in plan.mods:
        mods.append(adaptiveclipping_mod)
    if "local_dp" in plan.mods:
        mods.append(LocalDpMod(**plan.local_dp))
    return mods


def train_reply(msg: Message, context: Context, plan_path: str | Path,
                attackers: dict[int, str]) -> Message:
    """The one train handler (before the defense mods): participant ``partition-id`` of the
    node trains on what it received and replies in the shape FedAvg expects."""
    plan = ClientPlan.load(plan_path)
    pid = partition_of(context)
    round_ = int(msg.content["config"]["server-round"])
    received = record_to_arrays(msg.content["arrays"])
    # Flower's FedProx sends its mu; the clients honour it
    mu = float(msg.content["config"].get("proximal-mu", 0.0))
    upload, n, loss, extra = participant_update(plan, pid, round_, received, attackers, mu)
    return reply(msg, upload, pid, n, loss, extra)


def query_reply(msg: Message, context: Context) -> Message:
    """The aggregator asks who is who (node ids are random per run)."""
    return Message(content=RecordDict({"metrics": MetricRecord({PARTITION_KEY: partition_of(context)})}),
                   reply_to=msg)


def partition_of(context: Context) -> int:
    """This node's participant: ``partition-id`` of its node config (Flower's simulation
    engine sets it; a SuperNode gets it from ``--node-config``)."""
    try:
        return int(context.node_config["partition-id"])
    except KeyError:
        raise ValueError("the node has no partition-id: start the SuperNode with "
                         "--node-config 'partition-id=I num-partitions=N'") from None


def make_client_app(plan_path: str, attacker_plans: dict[int, str] | None = None) -> ClientApp:
    """The ClientApp of one federation whose plan files are known when it is built (the
    simulation engine's, ``fl_sim.federation``)."""
    app = ClientApp()
    attackers = dict(attacker_plans or {})

    # the mods act on train replies only (the query below has no arrays to clip)
    @app.train(mods=defense_mods(ClientPlan.load(plan_path)))
    def train(msg: Message, context: Context) -> Message:
        return train_reply(msg, context, plan_path, attackers)

    app.query()(query_reply)
    return app


def plan_of_message(msg: Message, context: Context) -> tuple[Path, dict[int, str]]:
    """Where a Flower-runtime participant finds its plan: the train message names the run
    directory and the plan (``RUN_DIR_KEY``, ``PLAN_KEY``: one ServerApp may run several
    federations, e.g. one per victim); the local attacker's own plan is read only by the
    participant it names.

    The message is the server's word: the run directory must be an fl-sim run directory
    (inside the node's ``run-root`` when its node config has one), the plan a plain name, and
    every file the plans name must stay inside that directory (``fl_sim.plan``)."""
    config = msg.content["config"]
    try:
        run_dir, name = str(config[RUN_DIR_KEY]), str(config[PLAN_KEY])
    except KeyError:
        raise ValueError(f"the train message carries no {RUN_DIR_KEY} / {PLAN_KEY}: the ServerApp "
                         "is not fl-sim's (fl_sim.flower_app:serverapp)") from None
    root = context.node_config.get("run-root")
    run_dir = message_run_dir(run_dir, None if root is None else str(root))
    plan_path, attack_path = plan_files(run_dir, name)
    ClientPlan.load(plan_path, run_dir)  # checked here, before any handler reads it
    attackers = {}
    if attack_path.is_file() and LocalAttackPlan.load(attack_path, run_dir).participant == partition_of(context):
        attackers[partition_of(context)] = str(attack_path)
    return plan_path, attackers


def runtime_client_app() -> ClientApp:
    """The ClientApp for Flower's own runtime (``flwr run``, SuperNodes): nothing is fixed
    when it is built; each train message says which plan applies (``plan_of_message``) and
    the plan's client-side defense mods are applied around that one call."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        plan_path, attackers = plan_of_message(msg, context)

        def handler(m: Message, c: Context) -> Message:
            return train_reply(m, c, plan_path, attackers)

        return with_mods(handler, defense_mods(ClientPlan.load(plan_path)))(msg, context)

    app.query()(query_reply)
    return app


def with_mods(handler, mods: list):
    """``handler`` inside Flower mods (``mod(msg, context, call_next)``), outermost first,
    as ``@app.train(mods=...)`` composes them."""
    for mod in reversed(mods):
        handler = functools.partial(_call_mod, mod, handler)
    return handler


def _call_mod(mod, call_next, msg: Message, context: Context) -> Message:
    return mod(msg, context, call_next)
