"""Run directories: created fresh (never silently overwritten), marked complete only at the end.

A run directory is complete when ``results.json`` exists; it is written last, atomically.
While a run is going, ``status.json`` says ``running`` and which rounds are done, so that a
killed run can be resumed and is never mistaken for a finished one.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from fl_sim.errors import FlSimError
from fl_sim.io import read_json, write_json


def default_run_dir(dataset: str, model: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{dataset}-{model}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def prepare_run_dir(path: Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Make ``path`` ready for a new run (or a resumed one). Raises FlSimError on conflict."""
    path = Path(path)
    if resume:
        if not (path / "config.yaml").is_file():
            raise FlSimError(f"--resume {path}: not a run directory (no config.yaml)")
        if (path / "results.json").exists():
            raise FlSimError(f"--resume {path}: run is already complete (results.json exists)")
        return path
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FlSimError(f"output directory {path} exists and is not empty; "
                             "choose another --out or pass --overwrite")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise FlSimError(f"output directory {path} is not writable: {e.strerror or e}") from None
    return path


def set_status(run_dir: Path, **fields) -> None:
    p = Path(run_dir) / "status.json"
    status = read_json(p) if p.exists() else {}
    status.update(fields, pid=os.getpid(), updated=time.time())
    write_json(p, status)
