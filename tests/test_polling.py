"""The simulation engine polls for messages every POLL_INTERVAL_S instead of Flower's 0.1 s."""

import inspect
import threading
from queue import Queue

from flwr.server.superlink.fleet.vce import vce_api
from flwr.superlink.grid import InMemoryGrid

from fl_sim import federation


class _State:
    """Flower's link state as add_messages_to_queue reads it: one message per node, once."""

    def __init__(self, pending):
        self.pending, self.calls = dict(pending), 0

    def get_message_ins(self, node_id, limit):
        self.calls += 1
        return [self.pending.pop(node_id)] if node_id in self.pending else []


class _Factory:
    def state(self):
        return object()


def test_polling_is_prompt_inside_a_simulation_and_flowers_outside():
    flower_add = vce_api.add_messages_to_queue
    # the replacement keeps Flower's loop: an upgrade that changes it must fail here
    assert list(inspect.signature(flower_add).parameters) == ["state", "queue", "nodes_mapping", "f_stop"]
    assert InMemoryGrid(_Factory()).pull_interval == 0.1
    with federation._prompt_polling(0.005):
        assert InMemoryGrid(_Factory()).pull_interval == 0.005
        state, queue, stop = _State({1: "a", 2: "b"}), Queue(), threading.Event()
        t = threading.Thread(target=vce_api.add_messages_to_queue, args=(state, queue, {1: 0, 2: 1}, stop))
        t.start()
        got = sorted([queue.get(timeout=5), queue.get(timeout=5)])
        threading.Event().wait(0.3)
        stop.set()
        t.join(timeout=5)
        assert got == ["a", "b"] and not t.is_alive()
        # 0.3 s at 0.005 s a poll is 60 polls, at Flower's 0.1 s 3 or 4 (room for a busy machine)
        assert state.calls // 2 > 8
    assert vce_api.add_messages_to_queue is flower_add
    assert InMemoryGrid(_Factory()).pull_interval == 0.1
    with federation._prompt_polling(None):
        assert vce_api.add_messages_to_queue is flower_add
