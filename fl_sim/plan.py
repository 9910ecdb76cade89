"""The run plan: everything a Flower client needs, as JSON files in the run directory.

Clients run in Ray worker processes that may change between rounds, and module globals do
not survive there; a file does. The plan names memory-mapped ``.npy`` arrays rather than
carrying data, so a client call costs a JSON read and an mmap, not a parse.

Honest participants read only :class:`ClientPlan`; the malicious participant (the local
attacker) also reads its own :class:`LocalAttackPlan`, a separate file.

A participant of Flower's own runtime learns the run directory and the plan's name from the
server's message, so a plan is checked before anything it names is touched: the plan file, the
snapshot directory the participant writes into and the data arrays it memory-maps (``.npy``,
never unpickled) must all resolve (``..`` and links followed) inside the run directory. The
arrays are parsed once per machine into the data cache; :func:`place_in_run` puts them in the
run directory as hard links (no space, the same pages), or as copies when the cache is on
another file system.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fl_sim.errors import RunDirError
from fl_sim.io import atomic_path, atomic_write_bytes, resolves_inside
from fl_sim.models import ModelSpec

_PLAN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+=-]*(?:\.[A-Za-z0-9_+=-]+)*")   # no "..", no "/"


def plan_files(run_dir: str | Path, name: str) -> tuple[Path, Path]:
    """The plan files of training ``name`` in ``run_dir``: the participants' plan and the
    local attacker's own (which exists only when the federation has one). ``name`` is a
    plain name: it may come from a message."""
    if not isinstance(name, str) or len(name) > 200 or not _PLAN_NAME.fullmatch(name):
        raise RunDirError(f"plan name {name!r:.80}: not a plain name (letters, digits, _ - . and no '..' or '/')")
    plans = Path(run_dir) / "plans"
    return plans / f"{name}.json", plans / f"{name}.local-attacker.json"


def place_in_run(run_dir: str | Path, path: str | Path) -> str:
    """The data array ``path`` (a file of the parse-once cache) as a file in ``run_dir/data/``:
    a hard link, or a copy across file systems. Cache files are named by their content's key
    and only ever replaced, never written in place, so an existing one is the same."""
    src = Path(path)
    if resolves_inside(src, run_dir):
        return str(src)
    dest = Path(run_dir) / "data" / f"{src.parent.name}-{src.name}"
    if not dest.is_file():
        with atomic_path(dest) as tmp:
            tmp.unlink()
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
    return str(dest)


def message_run_dir(run_dir: str, root: str | None = None) -> Path:
    """The run directory a train message names, once it is one: an absolute path with the
    plans/ fl-sim writes, inside ``root`` when the participant's node pins one."""
    path = Path(run_dir)
    if not path.is_absolute():
        raise RunDirError(f"run directory {run_dir!r:.200} in the train message is not an absolute path")
    if root is not None and not resolves_inside(path, root):
        raise RunDirError(f"run directory {run_dir} in the train message is not inside this node's run-root {root}")
    if not (path / "plans").is_dir():
        raise RunDirError(f"{run_dir} in the train message is not an fl-sim run directory")
    return path


def _read_plan(cls, path: str | Path, run_dir: str | Path | None):
    """``cls`` from the plan file ``path`` of ``run_dir`` (by default the one above plans/)."""
    path = Path(path)
    run_dir = path.parent.parent if run_dir is None else Path(run_dir)
    if not resolves_inside(path, run_dir):
        raise RunDirError(f"plan {path} leads out of the run directory {run_dir}")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"plan {path} unreadable: {' '.join(str(e).split())}") from None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if not isinstance(doc, dict) or (missing := [k for k in required if k not in doc]) \
            or (extra := [str(k) for k in doc if k not in fields]):
        why = ("not an object" if not isinstance(doc, dict) else
               f"no {', '.join(missing)}" if missing else f"unknown keys {', '.join(extra)}")
        raise RunDirError(f"plan {path} is not fl-sim's ({why[:200]})")
    return cls(**doc), run_dir


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
    def load(cls, path: str | Path, run_dir: str | Path | None = None) -> "ClientPlan":
        """The plan at ``path`` in ``run_dir`` (default: the directory above plans/), with
        every path it names checked (see the module doc)."""
        plan, run_dir = _read_plan(cls, path, run_dir)
        if not isinstance(plan.store_dir, str) or not resolves_inside(plan.store_dir, run_dir):
            raise RunDirError(f"plan {path}: store_dir {plan.store_dir!r:.200} leads out of the run "
                              f"directory {run_dir}")
        for key in ("x_path", "y_path"):
            p = getattr(plan, key)
            if not (isinstance(p, str) and p.endswith(".npy") and resolves_inside(p, run_dir)):
                raise RunDirError(f"plan {path}: {key} {p!r:.200} is not a .npy file in the run directory {run_dir}")
        return plan


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
    def load(cls, path: str | Path, run_dir: str | Path | None = None) -> "LocalAttackPlan":
        return _read_plan(cls, path, run_dir)[0]
