"""The Flower ClientApp of every participant: honest, or the malicious local attacker.

``make_client_app(plan_path, attacker_plans)`` returns a ClientApp whose train handler reads
the run plan from disk (Ray workers keep no module state between calls), trains on the
participant's partition, and replies in the shape FedAvg expects. ``attacker_plans`` maps
the malicious participant's id to its own plan file, which no honest participant reads.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.common import load_partition, local_train, record_received, reply
from fl_sim.models import get_arrays, model_from
from fl_sim.plan import ClientPlan, LocalAttackPlan
from fl_sim.records import PARTITION_KEY, record_to_arrays


class InjectedFailure(RuntimeError):
    """Raised on purpose (config ``federation.fail``) to test fault handling."""


def honest_train(plan: ClientPlan, pid: int, round_: int, msg: Message) -> Message:
    received = record_to_arrays(msg.content["arrays"])
    if plan.record_received:
        record_received(plan, pid, round_, received)
    model = model_from(plan.model_spec(), received)
    x, y = load_partition(plan, pid)
    loss, extra = local_train(plan, pid, round_, model, x, y)
    return reply(msg, get_arrays(model), pid, len(y), loss, extra)


def make_client_app(plan_path: str, attacker_plans: dict[int, str] | None = None) -> ClientApp:
    app = ClientApp()
    attackers = dict(attacker_plans or {})

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        plan = ClientPlan.load(plan_path)
        pid = int(context.node_config["partition-id"])
        round_ = int(msg.content["config"]["server-round"])
        if pid in plan.fail.get(str(round_), []):
            raise InjectedFailure(f"participant {pid} fails in round {round_} (federation.fail)")
        if pid in attackers:
            from clients.local_attacker import malicious_reply

            return malicious_reply(plan, LocalAttackPlan.load(attackers[pid]), round_, msg)
        return honest_train(plan, pid, round_, msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        # the aggregator asks who is who (node ids are random per simulation)
        pid = int(context.node_config["partition-id"])
        return Message(content=RecordDict({"metrics": MetricRecord({PARTITION_KEY: pid})}),
                       reply_to=msg)

    return app
