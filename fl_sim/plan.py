"""The run plan: everything a Flower client needs, as JSON files in the run directory.

Clients run in Ray worker processes that may change between rounds, and module globals do
not survive there; a file does. The plan names memory-mapped ``.npy`` arrays rather than
carrying data, so a client call costs a JSON read and an mmap, not a parse.

Honest participants read only :class:`ClientPlan`; the malicious participant (the local
attacker) also reads its own :class:`LocalAttackPlan`, a separate file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fl_sim.io import atomic_write_bytes
from fl_sim.models import ModelSpec


def plan_files(run_dir: str | Path, name: str) -> tuple[Path, Path]:
    """The plan files of training ``name`` in ``run_dir``: the participants' plan and the
    local attacker's own (which exists only when the federation has one)."""
    plans = Path(run_dir) / "plans"
    return plans / f"{name}.json", plans / f"{name}.local-attacker.json"


@dataclass
class ClientPlan:
    store_dir: str                   # the training's snapshot store: clients write into it
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
    device: str = "auto"             # federation.device, resolved in the worker that trains
    fail: dict[str, list[int]] = field(default_factory=dict)   # "round" -> participants that raise
    keep_rounds: list[int] | None = None
    record_received: bool = False    # every participant records what it receives (audits)
    dp: dict | None = None           # defense: DP-SGD via Opacus on every participant
    # client-side defenses applied to every reply by Flower mods (clients.participant.defense_mods):
    # "clip" (fixedclipping_mod), "adaptive_clip" (adaptiveclipping_mod), "local_dp" (LocalDpMod
    # with ``local_dp``'s parameters), "secagg" (secaggplus_mod; the legacy client path)
    mods: list[str] = field(default_factory=list)
    local_dp: dict | None = None     # clipping_norm, sensitivity, epsilon, delta
    array_keys: list[str] = field(default_factory=list)  # legacy (SecAgg+) parameter order

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model_name, tuple(self.input_shape), self.num_classes,
                         dict(self.model_options))

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, path: str | Path) -> "ClientPlan":
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class LocalAttackPlan:
    """What only the malicious participant knows: the records it pushes up the loss of, and
    when, with which step."""
    participant: int
    active: bool = False
    targets: list[int] = field(default_factory=list)
    ascent_rounds: list[int] = field(default_factory=list)
    gamma: float = 0.0
    boost: float = 1.0               # the ascent's change to the upload is scaled by this

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), json.dumps(asdict(self)).encode())

    @classmethod
    def load(cls, path: str | Path) -> "LocalAttackPlan":
        return cls(**json.loads(Path(path).read_text()))
