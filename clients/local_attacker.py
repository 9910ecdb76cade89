"""The local attacker: a participant that trains honestly (so its uploads look normal),
records every global model it receives, and in its active mode pushes its upload up the
loss of the target records (gradient ascent, Nasr et al. Sec. V-B); boosted, it scales that
push by ``boost`` so that averaging with the honest uploads does not shrink it.

It records to disk because Ray may run it in a different worker process every round.
Its reply has exactly the shape of an honest one.
"""

from __future__ import annotations

from attacks.active import gradient_ascent
from clients.common import load_partition, load_records, local_train, record_received
from fl_sim.models import get_arrays, model_from
from fl_sim.plan import ClientPlan, LocalAttackPlan


def malicious_train(plan: ClientPlan, attack: LocalAttackPlan, round_: int,
                    received: dict, proximal_mu: float = 0.0) -> tuple[dict, int, float, dict]:
    """One round of the local attacker from the model it ``received`` (name -> array);
    returns (upload, num_examples, loss, metrics)."""
    pid = attack.participant
    # what it received at the start of round r is the global model after round r-1
    record_received(plan, pid, round_, received)
    model = model_from(plan.model_spec(), received)
    x, y = load_partition(plan, pid)
    loss, extra = local_train(plan, pid, round_, model, x, y, proximal_mu)
    upload = get_arrays(model)
    if attack.active and round_ in attack.ascent_rounds and attack.targets:
        tx, ty = load_records(plan, attack.targets)
        gradient_ascent(model, tx, ty, attack.gamma)
        upload = boosted(upload, get_arrays(model), attack.boost)
    return upload, len(y), loss, extra


def boosted(before: dict, after: dict, boost: float) -> dict:
    """``before + boost * (after - before)``: the ascent's change scaled, e.g. by N so that
    FedAvg's 1/N weight leaves the whole step in the aggregate (beyond the paper)."""
    if boost == 1.0:
        return after
    return {k: (before[k] + boost * (after[k] - before[k])).astype(after[k].dtype) for k in after}
