"""Atomic files: readers see the old file or the new one, never half of either.

One writer for everything the project persists (snapshots, indexes, plans, splits,
results, the parse-once data cache): write a temp file in the target's directory, fsync it,
rename it over the target, fsync the directory. Snapshots skip the two fsyncs
(``durable=False``): the rename alone keeps them whole when the process is killed (the kernel
still holds the data); an operating-system crash may leave a snapshot or an index empty: a
snapshot's checksum reports it by name, a resume continues from the last whole aggregate, and
an empty or garbled index is rebuilt from the snapshot files, which carry their own checksum
(``fl_sim.snapshot_files``). The fsyncs cost 30-40 ms a snapshot on these machines, several
snapshots a round.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, mode: int | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is fsynced (unless not ``durable``)
    and renamed onto ``path`` (with permission bits ``mode`` if given), on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (and to stable storage when ``durable``)."""
    with atomic_path(Path(path), durable=durable) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def resolves_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, with ``..`` and every symbolic link followed, is ``root`` or inside it:
    what a path read from a run directory must do before fl-sim reads, writes or deletes it."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())
