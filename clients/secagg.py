"""The participants under SecAgg+: Flower 1.42 runs secure aggregation on its legacy path
only (``SecAggPlusWorkflow`` on the server, ``secaggplus_mod`` on the clients), so here the
same participant update (``clients.participant.participant_update``) is served by a legacy
``NumPyClient`` inside a ``ClientApp(client_fn=..., mods=[secaggplus_mod, ...])``.

The mod masks each upload before it leaves and clears the plain arrays from the reply: the
server only ever unmasks the sum. Legacy parameters are a list of arrays, in the order of
``ClientPlan.array_keys`` on both sides. Local DP composes through Flower's legacy
``LocalDpMod``, inside the SecAgg+ mod (noise first, then masking).
"""

from __future__ import annotations

import numpy as np
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from clients.participant import participant_update
from fl_sim.plan import ClientPlan
from fl_sim.records import PARTITION_KEY

ROUND_KEY = "server-round"   # the legacy strategy's fit config names the round (offset applied)


class SecAggParticipant(NumPyClient):
    """One participant on the legacy path; ``fit`` trains like the Message-API client."""

    def __init__(self, plan_path: str, pid: int, attackers: dict[int, str]):
        self.plan_path, self.pid, self.attackers = plan_path, pid, attackers

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        plan = ClientPlan.load(self.plan_path)
        received = dict(zip(plan.array_keys, parameters, strict=True))
        upload, n, loss, extra = participant_update(plan, self.pid, int(config[ROUND_KEY]), received,
                                                    self.attackers)
        metrics = {PARTITION_KEY: self.pid, "train-loss": float(loss)}
        metrics.update({k: float(v) for k, v in extra.items() if v is not None})
        return [upload[k] for k in plan.array_keys], int(n), metrics


def make_secagg_client_app(plan_path: str, attacker_plans: dict[int, str] | None = None) -> ClientApp:
    """A legacy ClientApp with Flower's ``secaggplus_mod`` (and ``LocalDpMod`` when the plan
    asks for local DP) around every participant's ``fit``."""
    from flwr.client.mod import LocalDpMod, secaggplus_mod

    plan = ClientPlan.load(plan_path)
    attackers = dict(attacker_plans or {})
    mods = [secaggplus_mod]
    if "local_dp" in plan.mods:
        mods.append(LocalDpMod(**plan.local_dp))

    def client_fn(context):
        pid = int(context.node_config["partition-id"])
        return SecAggParticipant(plan_path, pid, attackers).to_client()

    return ClientApp(client_fn=client_fn, mods=mods)
