"""The run plan: everything a Flower client needs, as one JSON file in the run directory.

Clients run in Ray worker processes that may change between rounds, and module globals do
not survive there; a file does. The plan names memory-mapped ``.npy`` arrays rather than
carrying data, so a client call costs a JSON read and an mmap, not a parse.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ClientPlan:
    store_dir: str                   # the setting's snapshot store: clients write into it
    x_path: str
    y_path: str
    input_shape: list[int]
    num_classes: int
    model_name: str
    model_options: dict
    train: list[list[int]]           # participant -> record indices
    local_epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    seed: int
    threads: int
    fail: dict[str, list[int]] = field(default_factory=dict)   # "round" -> participants that raise
    # local attacker (a malicious participant); None when no local attack runs
    local_attacker: int | None = None
    local_active: bool = False
    local_targets: list[int] = field(default_factory=list)      # records it pushes up the loss of
    ascent_rounds: list[int] = field(default_factory=list)
    gamma: float = 0.0
    keep_rounds: list[int] | None = None
    record_received: bool = False    # every participant records what it receives (audits)
    # defense: DP-SGD via Opacus on every honest participant
    dp: dict | None = None

    def save(self, path: Path) -> None:
        from fl_sim.snapshots import atomic_write_bytes

        atomic_write_bytes(Path(path), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, path: str | Path) -> "ClientPlan":
        return cls(**json.loads(Path(path).read_text()))


def client_seed(seed: int, round_: int, participant: int) -> int:
    """Seed of one participant's local training in one round: independent of scheduling."""
    return (int(seed) * 1_000_003 + round_ * 1009 + participant) % (2**31 - 1)
