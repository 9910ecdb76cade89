"""Flower's record types <-> the project's ``name -> numpy array`` snapshots, and the keys
of the messages our participants send (shared by the strategies and the clients, which
must not import each other)."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

PARTITION_KEY = "partition-id"   # every reply's metrics say which participant sent it
QUERY_KEY = "query"              # the aggregator's who-are-you question
# in every train message of the Flower-runtime apps (fl_sim.flower_app): where the clients
# find their plan, ``<run dir>/plans/<plan name>.json`` (fl_sim.plan.plan_files)
RUN_DIR_KEY = "fl-sim.run-dir"
PLAN_KEY = "fl-sim.plan"


def record_to_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def arrays_to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
