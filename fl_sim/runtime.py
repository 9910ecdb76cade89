"""Threads and seeds: the one place that decides how many torch threads a piece of work
gets and how every random stream is derived from the config's seed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def threads_for(num_cpus: float) -> int:
    """torch intra-op threads for a CPU share (``federation.num_cpus``): small FC batches on
    more threads than free cores spin-wait badly (measured 40x slower on 2 loaded cores)."""
    return max(1, int(num_cpus))


@contextlib.contextmanager
def use_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads, restoring the previous count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (``cfg.seed`` first), via numpy's SeedSequence: distinct
    tags give independent streams."""
    state = np.random.SeedSequence([int(p) & 0xFFFF_FFFF for p in parts]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def client_seed(seed: int, round_: int, participant: int) -> int:
    """Seed of one participant's local training in one round: independent of scheduling."""
    return (int(seed) * 1_000_003 + round_ * 1009 + participant) % (2**31 - 1)
