"""Run directories: created fresh (never silently overwritten), marked complete only at the end.

A run directory is complete when ``results.json`` exists; it is written last, atomically.
While a run is going, ``status.json`` says ``running`` and which rounds are done, so that a
killed run can be resumed and is never mistaken for a finished one.

Every directory fl-sim creates for a run or a comparison carries a marker file
(:data:`MARKER`), written first. ``--overwrite`` deletes only a directory with the marker,
never a symbolic link, and never the working directory, the home directory, the file
system's root or a directory above them: a mistyped ``--out`` must not cost a user files
fl-sim did not write.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from fl_sim.errors import FlSimError
from fl_sim.io import read_json, write_json


def safe_name(label: str) -> str:
    """A file-name-safe, single-component directory name for a label a user gave (a sweep
    value, a defense setting): nothing of it can name another directory."""
    name = re.sub(r"[^A-Za-z0-9_.+=,()\[\]-]", "_", label.replace(":", "__"))[:120]
    return f"_{name}" if name.strip(".") == "" or name.startswith(".") else name


def default_run_dir(dataset: str, model: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{dataset}-{model}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


MARKER = ".fl-sim-run"   # JSON: {"kind": "run" | "comparison", "created": unix time}


def is_marked(path: Path) -> bool:
    """True when ``path`` is a directory fl-sim created (it holds the marker file)."""
    return Path(path).is_dir() and (Path(path) / MARKER).is_file()


def holds_only_marker(path: Path) -> bool:
    """A directory fl-sim created and wrote nothing else to (a run killed at its start)."""
    return is_marked(path) and [p.name for p in Path(path).iterdir()] == [MARKER]


def _protected(path: Path) -> Path | None:
    """The working or home directory (or the root) when ``path`` is it or above it."""
    real = path.resolve()
    for keep in (Path.cwd().resolve(), Path.home().resolve(), Path(real.anchor)):
        if real == keep or real in keep.parents:
            return keep
    return None


def _replace(path: Path) -> None:
    """Delete the run or comparison directory ``path`` for ``--overwrite``: only what fl-sim
    made (see the module's docstring); FlSimError, one line, for anything else."""
    if path.is_symlink():
        raise FlSimError(f"--overwrite {path}: a symbolic link; give the directory itself")
    if (keep := _protected(path)) is not None:
        raise FlSimError(f"--overwrite {path}: refusing to delete {keep} or a directory above it")
    if not is_marked(path):
        raise FlSimError(f"--overwrite {path}: not a directory fl-sim created (no {MARKER} marker); "
                         "choose another --out, or delete it yourself")
    shutil.rmtree(path)


def prepare_run_dir(path: Path, *, overwrite: bool = False, resume: bool = False,
                    kind: str = "run") -> Path:
    """Make ``path`` ready for a new run (or a resumed one) and mark it as fl-sim's
    (``kind``: run or comparison). Raises FlSimError on conflict."""
    path = Path(path)
    if resume:
        if not (path / "config.yaml").is_file():
            raise FlSimError(f"--resume {path}: not a run directory (no config.yaml)")
        if (path / "results.json").exists():
            raise FlSimError(f"--resume {path}: run is already complete (results.json exists)")
        return path
    if path.exists() and not path.is_dir():
        raise FlSimError(f"output directory {path} is a file, not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FlSimError(f"output directory {path} exists and is not empty; "
                             "choose another --out or pass --overwrite")
        _replace(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / MARKER, {"kind": kind, "created": time.time()})
    except OSError as e:
        raise FlSimError(f"output directory {path} is not writable: {e.strerror or e}") from None
    return path


def set_status(run_dir: Path, **fields) -> None:
    p = Path(run_dir) / "status.json"
    status = read_json(p) if p.exists() else {}
    status.update(fields, pid=os.getpid(), updated=time.time())
    if status.get("state") == "complete":  # nothing left to do: no advice on what to run next
        status.pop("next", None)
    write_json(p, status)
