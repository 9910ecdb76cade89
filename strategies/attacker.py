"""The global attacker: a Flower strategy that wraps any other strategy.

Like Flower's DP wrappers, ``GlobalAttacker(inner=FedAvg(...), ...)`` delegates the learning
algorithm to ``inner`` and adds what a curious or malicious aggregator can do:

- passive: record every participant's upload and the aggregate, each round; change nothing;
- gradient ascent: at chosen rounds, before sending, move the parameters up the loss of the
  target records, W <- W + gamma * grad L(W; targets), and send that to every participant;
- isolating: in the isolation rounds, send the victim only its own previous upload (in
  round 1, the initial model, which is all anyone has), so the victim trains as if alone;
  outside them it gets the aggregate like everyone. The other participants keep
  receiving the inner strategy's aggregate of *all* replies, the victim's included: the
  victim is cut off from the federation, the federation is not cut off from the victim;
- isolating + gradient ascent: the victim's own previous upload, pushed up the loss.

Whatever is sent that differs from the plain aggregate is recorded with role ``sent``.
Replies are sorted by participant before aggregation so that a run's numbers do not depend
on the order in which Ray workers answered. The record keys (arrays, config, the example
count) are read from the wrapped strategy where Flower exposes them (FedAvg and its
descendants do); a failed reply is recorded as a failure and handed on to the inner
strategy, which decides what an error means for its aggregate.

Defenses on the server compose around the learning algorithm, inside this wrapper, in the
order a real aggregator has them: ``GlobalAttacker(DifferentialPrivacyServerSideFixedClipping(
Krum(...)))``. The attacker records each reply as it arrives (under server-side clipping the
raw upload; under client-side clipping or local DP what the client's mods let out), then hands
the replies on. With ``record_clipped``, it also records what the inner wrapper aggregated
after clipping them in place (role ``clipped``). Flower's DP wrappers draw their noise from
numpy's global generator: with ``noise_seed`` it is seeded per round, so runs repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl_sim.records import PARTITION_KEY, QUERY_KEY, arrays_to_record, record_to_arrays
from fl_sim.snapshots import SnapshotStore


@dataclass
class AttackerSettings:
    isolate: bool = False
    ascent: bool = False
    victim: int = 0
    ascent_rounds: set[int] = field(default_factory=set)
    isolate_rounds: set[int] | None = None   # None: every round
    # (arrays) -> arrays pushed up the target records' loss; None when no ascent is configured
    ascent_fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    record_clipped: bool = False   # also record the replies as the inner strategy left them
    noise_seed: int | None = None  # seed numpy's global generator before each aggregation


class GlobalAttacker(Strategy):
    """Wrap ``inner``; record uploads/aggregates into ``store``; optionally act.

    ``round_offset`` shifts Flower's round numbers (which restart at 1) when a killed run is
    resumed from round ``round_offset``.
    """

    def __init__(self, inner: Strategy, store: SnapshotStore, participants: int,
                 settings: AttackerSettings | None = None, round_offset: int = 0,
                 previous_uploads: dict[int, dict[str, np.ndarray]] | None = None,
                 on_round_end: Callable[[int, dict[str, np.ndarray]], None] | None = None):
        self.inner = inner
        self.store = store
        self.participants = participants
        self.settings = settings or AttackerSettings()
        self.round_offset = round_offset
        self.node_of: dict[int, int] = {}       # partition id -> Flower node id
        self.last_upload: dict[int, dict[str, np.ndarray]] = dict(previous_uploads or {})
        self.failures: list[dict] = []
        self.on_round_end = on_round_end
        self.discovery_timeout_s = 120.0
        self._discovered = False  # once per simulation: node ids change with each one
        algorithm = innermost(inner)
        self.array_key = getattr(algorithm, "arrayrecord_key", "arrays")
        self.config_key = getattr(algorithm, "configrecord_key", "config")
        self.weight_key = getattr(algorithm, "weighted_by_key", "num-examples")

    def summary(self) -> None:
        self.inner.summary()

    # ---------------------------------------------------------------- train
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        rnd = server_round + self.round_offset
        messages = list(self.inner.configure_train(rnd, arrays, config, grid))
        s = self.settings
        if (s.isolate or s.ascent) and not self._discovered:
            self._discover(grid)
        ascend = s.ascent and rnd in s.ascent_rounds and s.ascent_fn is not None
        isolating = s.isolate and (s.isolate_rounds is None or rnd in s.isolate_rounds)
        if not (ascend or isolating):
            return messages
        global_arrays = record_to_arrays(arrays)
        victim_node = self.node_of.get(s.victim)
        out = []
        for msg in messages:
            is_victim = victim_node is not None and msg.metadata.dst_node_id == victim_node
            if isolating and is_victim and s.victim in self.last_upload:
                payload = self.last_upload[s.victim]
            elif ascend and (not isolating or is_victim or victim_node is None):
                payload = global_arrays
            else:
                out.append(msg)
                continue
            if ascend:
                payload = s.ascent_fn(payload)
            pid = s.victim if is_victim else self._partition_of(msg.metadata.dst_node_id)
            if pid is not None:
                self.store.put(rnd, pid, "sent", payload)
            out.append(self._fresh_message(msg, payload))
        return out

    def _discover(self, grid: Grid) -> None:
        """Ask every node which participant it is (an aggregator knows its participants).

        Node ids are random per simulation, so after a resume the victim would otherwise stay
        unknown until it first replies, and one isolated round would be lost."""
        self._discovered = True
        question = RecordDict({"config": ConfigRecord({QUERY_KEY: PARTITION_KEY})})
        msgs = [Message(content=question, message_type=MessageType.QUERY, dst_node_id=node)
                for node in grid.get_node_ids()]
        for reply in grid.send_and_receive(msgs, timeout=self.discovery_timeout_s):
            if not reply.has_error():
                self.node_of[_partition(reply)] = reply.metadata.src_node_id

    def _fresh_message(self, msg: Message, payload: dict[str, np.ndarray]) -> Message:
        # FedAvg shares one RecordDict across all messages: never edit it, build a new one.
        content = RecordDict({self.array_key: arrays_to_record(payload),
                              self.config_key: ConfigRecord(dict(msg.content[self.config_key]))})
        return Message(content=content, message_type=msg.metadata.message_type,
                       dst_node_id=msg.metadata.dst_node_id)

    def _partition_of(self, node_id: int) -> int | None:
        for pid, nid in self.node_of.items():
            if nid == node_id:
                return pid
        return None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = server_round + self.round_offset
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        ok.sort(key=_partition)
        seen = set()
        for m in ok:
            pid = _partition(m)
            seen.add(pid)
            self.node_of[pid] = m.metadata.src_node_id
            upload = record_to_arrays(m.content[self.array_key])
            self.last_upload[pid] = upload
            # an isolated victim's uploads are always kept: a resumed run needs the last one
            self.store.put(rnd, pid, "upload", upload,
                           num_examples=int(_metrics(m)[self.weight_key]),
                           force=self.settings.isolate and pid == self.settings.victim)
        for pid in range(self.participants):
            if pid not in seen:
                reason = next((m.error.reason for m in replies if m.has_error()
                               and self.node_of.get(pid) == m.metadata.src_node_id), None)
                self.failures.append({"round": rnd, "participant": pid,
                                      "reason": (reason or "no reply").splitlines()[-1][:300]})
        if self.settings.noise_seed is not None:
            np.random.seed((self.settings.noise_seed * 1009 + rnd) % 2**32)
        agg, metrics = self.inner.aggregate_train(rnd, ok + [m for m in replies if m.has_error()])
        if self.settings.record_clipped:
            for m in ok:  # Flower's server-side DP wrapper replaced each reply's arrays in place
                self.store.put(rnd, _partition(m), "clipped", record_to_arrays(m.content[self.array_key]))
        if agg is not None:
            global_arrays = record_to_arrays(agg)
            self.store.put(rnd, None, "global", global_arrays, force=True)
            self.store.roll(rnd - 1)
            if self.on_round_end is not None:
                self.on_round_end(rnd, global_arrays)
        return agg, metrics

    # ---------------------------------------------------------------- evaluate
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round + self.round_offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round + self.round_offset, replies)


def innermost(strategy: Strategy) -> Strategy:
    """The learning algorithm under any wrappers (Flower's DP wrappers keep it in
    ``.strategy``, ours in ``.inner``)."""
    while True:
        nxt = getattr(strategy, "strategy", None) or getattr(strategy, "inner", None)
        if not isinstance(nxt, Strategy):
            return strategy
        strategy = nxt


def _metrics(msg: Message) -> MetricRecord:
    """The reply's one MetricRecord (FedAvg requires exactly one), whatever its key."""
    return next(iter(msg.content.metric_records.values()))


def _partition(msg: Message) -> int:
    return int(_metrics(msg)[PARTITION_KEY])
