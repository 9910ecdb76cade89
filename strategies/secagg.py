"""The aggregator under SecAgg+: a legacy Flower strategy wrapper (Flower 1.42 runs secure
aggregation only on the legacy workflow path: ``SecAggPlusWorkflow`` + ``LegacyContext``).

``SecAggObserver(inner=FedAvg(...))`` is what a curious aggregator can still do when the
protocol hides every individual upload: record each round's aggregate, and, as an active
attacker, push the model it sends to everyone up the target records' loss (gradient ascent;
isolation is impossible: it needs the victim's own upload). ``SecAggPlusWorkflow`` hands
``aggregate_fit`` one ``FitRes`` per participant, each carrying the same unmasked weighted
mean; ``held`` records, per round, how many distinct parameter sets the strategy was given,
so that a run can show it never held an individual upload. The replies' metrics (partition
id, training loss) are not masked by the protocol and are read for bookkeeping only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import Strategy

from fl_sim.records import PARTITION_KEY
from fl_sim.snapshots import SnapshotStore
from strategies.attacker import AttackerSettings


class SecAggObserver(Strategy):
    """Wrap a legacy ``inner`` strategy (FedAvg) run under SecAgg+; record each aggregate
    into ``store`` (role ``global``) and, with ``settings.ascent``, push what is sent.

    ``keys``: the parameter names, in the legacy list order. ``round_offset`` shifts Flower's
    round numbers when a killed run resumes; ``on_round(r)`` is told after every round.
    """

    def __init__(self, inner: Strategy, store: SnapshotStore, participants: int, keys: list[str],
                 initial: dict[str, np.ndarray], settings: AttackerSettings | None = None,
                 round_offset: int = 0, on_round_end: Callable[[int, dict], None] | None = None):
        self.inner, self.store, self.participants, self.keys = inner, store, participants, list(keys)
        self.initial = initial
        self.settings = settings or AttackerSettings()
        self.round_offset = round_offset
        self.on_round_end = on_round_end
        self.on_round: Callable[[int], None] | None = None
        self.failures: list[dict] = []
        self.held: list[dict] = []   # per round: replies handed to the strategy, distinct parameter sets

    def _arrays(self, parameters: Parameters) -> dict[str, np.ndarray]:
        return dict(zip(self.keys, parameters_to_ndarrays(parameters), strict=True))

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return ndarrays_to_parameters([self.initial[k] for k in self.keys])

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        rnd = server_round + self.round_offset
        pairs = self.inner.configure_fit(rnd, parameters, client_manager)
        s = self.settings
        if not (s.ascent and rnd in s.ascent_rounds and s.ascent_fn is not None):
            return pairs
        pushed = s.ascent_fn(self._arrays(parameters))
        self.store.put(rnd, None, "sent", pushed)   # the same pushed model goes to everyone
        return [(proxy, FitIns(ndarrays_to_parameters([pushed[k] for k in self.keys]), dict(ins.config)))
                for proxy, ins in pairs]

    def aggregate_fit(self, server_round: int, results, failures):
        rnd = server_round + self.round_offset
        held = [parameters_to_ndarrays(res.parameters) for _, res in results]
        distinct = [h for i, h in enumerate(held)
                    if not any(all(np.array_equal(a, b) for a, b in zip(h, o)) for o in held[:i])]
        self.held.append({"round": rnd, "replies": len(held), "distinct_parameter_sets": len(distinct)})
        seen = {int(res.metrics[PARTITION_KEY]) for _, res in results if PARTITION_KEY in res.metrics}
        for pid in sorted(set(range(self.participants)) - seen):
            self.failures.append({"round": rnd, "participant": pid, "reason": "dropped from the SecAgg+ round"})
        agg, metrics = self.inner.aggregate_fit(rnd, results, failures)
        if agg is not None:
            arrays = self._arrays(agg)
            self.store.put(rnd, None, "global", arrays, force=True)
            self.store.roll(rnd - 1)
            if self.on_round_end is not None:
                self.on_round_end(rnd, arrays)
        return agg, metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        return []   # no federated evaluation: the target is measured from the snapshots

    def aggregate_evaluate(self, server_round: int, results, failures):
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters):
        if server_round > 0 and self.on_round is not None:
            self.on_round(server_round)
        return None
