"""The local attacker: a participant that trains honestly (so its uploads look normal),
records every global model it receives, and in its active mode pushes its upload up the
loss of the target records (gradient ascent, Nasr et al. Sec. V-B).

It records to disk because Ray may run it in a different worker process every round.
Its reply has exactly the shape of an honest one.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Message

from attacks.active import gradient_ascent
from clients.common import (load_partition, local_train, model_from, record_received,
                            record_to_arrays, reply)
from fl_sim.plan import ClientPlan
from fl_sim.training import get_arrays


def malicious_train(plan: ClientPlan, pid: int, round_: int, msg: Message) -> Message:
    received = record_to_arrays(msg.content["arrays"])
    # what it received at the start of round r is the global model after round r-1
    record_received(plan, pid, round_, received)
    model = model_from(plan, received)
    x, y = load_partition(plan, pid)
    loss, extra = local_train(plan, pid, round_, model, x, y)
    if plan.local_active and round_ in plan.ascent_rounds and plan.local_targets:
        xs = np.load(plan.x_path, mmap_mode="r")
        ys = np.load(plan.y_path, mmap_mode="r")
        idx = np.asarray(plan.local_targets, dtype=np.int64)
        gradient_ascent(model, np.asarray(xs[idx], np.float32), np.asarray(ys[idx], np.int64),
                        plan.gamma)
    return reply(msg, get_arrays(model), pid, len(y), loss, extra)
