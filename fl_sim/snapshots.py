"""Snapshot store: the contract between training and attacking.

One directory per run. Each snapshot is a safetensors file (no pickle, so reading a run
directory someone sent you cannot execute code) written atomically (temp file,
rename) and recorded in ``index.json`` with its round, participant, role and SHA-256.

Roles:
- ``global``   the aggregate after a round (participant = None)
- ``upload``   a participant's reply to the server in a round
- ``sent``     what the server actually sent to a participant when it differs from the
               plain global model (active attacks: isolation, gradient ascent)
- ``received`` what a local attacker recorded receiving (written by the client itself)
- ``clipped``  a participant's upload as server-side clipping left it (central DP with
               server-side clipping: what entered the noised mean; the aggregator saw ``upload``)

What is on disk is checked when read (``fl_sim.snapshot_files``): index entries name files
inside the store only; an index a crash left empty is rebuilt from the self-checking files.
A write that fails (a full disk, a file size limit) stops the store: every later put, roll,
flush and read raises a one-line SnapshotWriteError naming the disk problem, nothing queued
after the failure is written, and the disk keeps a state ``fl-sim run --resume`` continues.
"""

from __future__ import annotations

import errno
import hashlib
import json
import queue
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from safetensors.numpy import load as st_load_bytes

from fl_sim.errors import SnapshotError, SnapshotWriteError
from fl_sim.io import atomic_write_bytes, resolves_inside
from fl_sim.snapshot_files import (
    ROLES,
    SnapshotEntry,
    encode,
    entries_of,
    file_name,
    order,
    rebuild,
    shard_name,
    shard_writer,
    valid_writer,
    writers_with_files,
)

__all__ = ["ROLES", "SnapshotEntry", "SnapshotStore"]

_RESUME = "the snapshots stored before it are kept: once there is space, continue with fl-sim run --resume RUN_DIR"


def _to_numpy(arrays: Mapping[str, object]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        out[k] = np.ascontiguousarray(np.asarray(v))
    return out


def _disk_problem(e: OSError) -> str:
    code = errno.errorcode.get(e.errno or 0)
    return f"{e.strerror or e}" + (f" [{code}]" if code else "")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


class SnapshotStore:
    """Per-run store of model parameter snapshots.

    Parameters are dicts ``name -> array`` (numpy or torch), in the model's state_dict order.
    Thread-safe within one process; several processes (Ray clients) may each write their own
    entries because each writer (``server``, or participant ``p<N>``) keeps a private index
    shard (``index.<writer>.json``) that :meth:`entries` merges. ``within``: the run
    directory the store must stay inside (links included).
    """

    def __init__(self, directory: str | Path, writer: str = "server",
                 keep_rounds: Iterable[int] | None = None, background: bool = False,
                 within: str | Path | None = None):
        self.dir = Path(directory)
        if within is not None and not resolves_inside(self.dir, within):
            raise SnapshotError(f"snapshot directory {self.dir} leads out of the run directory {within}")
        if not valid_writer(writer):
            raise ValueError(f"snapshot writer {writer!r}: 'server' or 'p<participant>'")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self.keep_rounds = None if keep_rounds is None else set(keep_rounds)
        self._lock = threading.Lock()
        self._cache: tuple | None = None
        # background: put and roll are done by one writer thread, in the order they were
        # asked for, so the disk always holds what the synchronous store held at some earlier
        # moment (a killed run resumes as before). The aggregator then does not wait for a
        # round's serialisation, checksum and write before the next round starts; every read
        # and flush() waits for the queue. Bounded, so a slow disk slows rounds, not memory.
        self._jobs: queue.Queue | None = queue.Queue(maxsize=16) if background else None
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        if self._jobs is not None:
            self._thread = threading.Thread(target=self._work, args=(self._jobs,),
                                            name=f"snapshots-{self.dir.name}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ background writes
    def _work(self, jobs: queue.Queue) -> None:
        # the queue is the thread's own reference: close() detaches it from the store
        # (later writes are synchronous) before this thread takes the stop signal
        while True:
            job = jobs.get()
            try:
                if job is None:  # close(): the queue is empty, stop the thread
                    return
                # after a failure nothing more is written: a later round on disk without the
                # ones lost before it would be a store no resume could continue
                if self._failed is None:
                    job()
            except BaseException as e:  # raised in the caller's thread by the next call
                self._failed = e
            finally:
                jobs.task_done()

    def _submit(self, job):
        self._raise_failed()
        if self._jobs is None:
            return job()
        self._jobs.put(job)
        return None

    def _raise_failed(self) -> None:
        # the failure stays: this store writes nothing more (a resume opens a new one)
        e = self._failed
        if e is None:
            return
        if isinstance(e, SnapshotError):
            raise type(e)(str(e)) from e
        raise SnapshotError(f"writing snapshots in {self.dir} failed: {type(e).__name__}: {_one_line(e)}") from e

    def flush(self) -> None:
        """Wait until every snapshot asked for is on disk (background mode); raises the
        failure of a background write (SnapshotWriteError for a disk problem)."""
        if self._jobs is not None:
            self._jobs.join()
        self._raise_failed()

    def close(self) -> None:
        """Flush, then stop the writer thread: later writes are synchronous. A comparison
        trains many federations in one process; each would otherwise leave an idle thread.

        Called while an exception propagates (a ``finally`` after a failed run), it raises
        nothing: the error that stopped the run is the one to see."""
        if self._jobs is not None:
            jobs, self._jobs = self._jobs, None
            jobs.join()
            jobs.put(None)
            self._thread.join()
        if sys.exc_info()[0] is None:
            self._raise_failed()

    # ------------------------------------------------------------ index shards
    def _shard(self) -> Path:
        return self.dir / shard_name(self.writer)

    def _shards(self) -> list[Path]:
        shards = sorted(p for p in self.dir.glob("index*.json") if shard_writer(p.name))
        for p in shards:
            if not resolves_inside(p, self.dir):
                raise SnapshotError(f"snapshot index {p} leads out of {self.dir}")
        return shards

    def _parse_shard(self, path: Path) -> list[SnapshotEntry] | None:
        """The shard's entries (none when it does not exist); None when a crash left it
        empty or garbled."""
        if not path.exists():
            return []
        if not resolves_inside(path, self.dir):
            raise SnapshotError(f"snapshot index {path} leads out of {self.dir}")
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise SnapshotError(f"snapshot index {path} unreadable: {e.strerror or e}") from None
        return entries_of(text, path)

    def _read_shard(self, path: Path) -> list[SnapshotEntry]:
        entries = self._parse_shard(path)
        return rebuild(self.dir, shard_writer(path.name)) if entries is None else entries

    def _write_shard(self, path: Path, entries: list[SnapshotEntry]) -> None:
        data = json.dumps({"entries": [asdict(e) for e in sorted(entries, key=order)]}, indent=1).encode()
        try:
            atomic_write_bytes(path, data, durable=False)
        except OSError as e:
            raise SnapshotWriteError(f"writing the snapshot index {path} failed: {_disk_problem(e)}; "
                                     f"{_RESUME}") from None

    def recover(self) -> None:
        """Rebuild, from the snapshot files that pass their own checksum, every index shard
        that a crash left empty, garbled or never written (used when resuming a run)."""
        self.flush()
        with self._lock:
            writers = writers_with_files(self.dir) | {shard_writer(p.name) for p in self._shards()}
            for writer in sorted(writers):
                shard = self.dir / shard_name(writer)
                if not shard.exists() or self._parse_shard(shard) is None:
                    self._write_shard(shard, rebuild(self.dir, writer))
            self._cache = None

    # ------------------------------------------------------------ writing
    def put(self, round_: int, participant: int | None, role: str,
            arrays: Mapping[str, object], num_examples: int | None = None,
            force: bool = False) -> SnapshotEntry | None:
        """Store one snapshot; returns None when ``round_`` is not among the kept rounds, and
        in background mode (the entry is written later: see :meth:`flush`)."""
        if role not in ROLES:
            raise ValueError(f"unknown snapshot role {role!r}")
        if not force and self.keep_rounds is not None and round_ not in self.keep_rounds:
            return None
        self._raise_failed()
        arrays = _to_numpy(arrays)
        if self._jobs is not None:  # a copy: the caller may reuse its buffers meanwhile
            arrays = {k: v.copy() for k, v in arrays.items()}
        return self._submit(lambda: self._write(round_, participant, role, arrays, num_examples))

    def _write(self, round_: int, participant: int | None, role: str, arrays: dict[str, np.ndarray],
               num_examples: int | None) -> SnapshotEntry:
        data = encode(arrays, num_examples)
        name = file_name(round_, participant, role)
        try:
            atomic_write_bytes(self.dir / name, data, durable=False)
        except OSError as e:
            raise SnapshotWriteError(f"writing snapshot {self.dir / name} failed: {_disk_problem(e)}; "
                                     f"{_RESUME}") from None
        entry = SnapshotEntry(round_, participant, role, name, hashlib.sha256(data).hexdigest(), len(data),
                              None if num_examples is None else int(num_examples))
        with self._lock:
            shard = self._shard()
            self._write_shard(shard, [e for e in self._read_shard(shard) if e.file != name] + [entry])
            self._cache = None
        return entry

    def roll(self, round_: int) -> None:
        """Forget this writer's entries of ``round_`` when it is not a kept round: the
        entries stored anyway (``force``) so that a resume can continue from the latest
        round, once a later round has replaced them. Disk then holds the kept rounds and
        the latest one, whatever the number of rounds."""
        if self.keep_rounds is None or round_ in self.keep_rounds:
            return
        self._submit(lambda: self._forget(round_))

    def _unlink(self, entry: SnapshotEntry) -> None:
        # entry.file is a plain snapshot name (checked when read): this stays in the store,
        # and a link there is removed, not what it points to
        (self.dir / entry.file).unlink(missing_ok=True)

    def _forget(self, round_: int) -> None:
        with self._lock:
            shard = self._shard()
            entries = self._read_shard(shard)
            gone = [e for e in entries if e.round == round_]
            if not gone:
                return
            # the index first: a crash in between leaves stray files, never entries without one
            self._write_shard(shard, [e for e in entries if e.round != round_])
            for e in gone:
                self._unlink(e)
            self._cache = None

    def drop_after(self, round_: int) -> None:
        """Make the store what an uninterrupted run leaves after ``round_`` (used when
        resuming a killed run): forget every entry of rounds > ``round_``, and of earlier
        rounds that are not kept. A kill between storing a round's aggregate and rolling
        the previous one's leaves both; the uninterrupted run would have rolled it."""
        def gone(e: SnapshotEntry) -> bool:
            return e.round > round_ or (self.keep_rounds is not None and e.round < round_
                                        and e.round not in self.keep_rounds)
        self.flush()
        with self._lock:
            for shard in self._shards():
                entries = self._read_shard(shard)
                if not any(gone(e) for e in entries):
                    continue
                self._write_shard(shard, [e for e in entries if not gone(e)])
                for e in entries:
                    if gone(e):
                        self._unlink(e)
            self._cache = None

    # ------------------------------------------------------------ reading
    def _index(self) -> dict[tuple, SnapshotEntry]:
        """All entries by (round, participant, role), re-read only when a shard changed:
        attacks look snapshots up many times, and clients may add shards meanwhile."""
        self.flush()
        shards = self._shards()
        signature = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in shards)
        if self._cache is None or self._cache[0] != signature:
            entries = sorted((e for shard in shards for e in self._read_shard(shard)), key=order)
            self._cache = (signature, {(e.round, e.participant, e.role): e for e in entries})
        return self._cache[1]

    def entries(self) -> list[SnapshotEntry]:
        return list(self._index().values())

    def find(self, round_: int, participant: int | None, role: str) -> SnapshotEntry | None:
        return self._index().get((round_, participant, role))

    def rounds(self, role: str = "global", participant: int | None = None) -> list[int]:
        return sorted({e.round for e in self.entries()
                       if e.role == role and (participant is None or e.participant == participant)})

    def get(self, round_: int, participant: int | None, role: str) -> dict[str, np.ndarray]:
        """Read one snapshot, verifying its checksum. Raises SnapshotError naming the file."""
        entry = self.find(round_, participant, role)
        if entry is None:
            who = "server" if participant is None else f"participant {participant}"
            raise SnapshotError(f"no {role} snapshot for round {round_}, {who} in {self.dir}")
        return self._load(entry)

    def _load(self, entry: SnapshotEntry) -> dict[str, np.ndarray]:
        path = self.dir / entry.file
        if not resolves_inside(path, self.dir):
            raise SnapshotError(f"snapshot file {path} leads out of {self.dir}")
        try:
            data = path.read_bytes()
        except OSError:
            raise SnapshotError(f"snapshot file missing: {path}") from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise SnapshotError(f"snapshot file fails its checksum (truncated or altered): {path}")
        try:
            return st_load_bytes(data)
        except Exception as e:  # safetensors raises its own error types
            raise SnapshotError(f"snapshot file unreadable: {path}: {_one_line(e)}") from None

    def verify(self) -> list[str]:
        """Check every file against its checksum; returns the problems found (empty: all good)."""
        problems = []
        for e in self.entries():
            try:
                self._load(e)
            except SnapshotError as err:
                problems.append(str(err))
        return problems

    def size_bytes(self) -> int:
        self.flush()
        return sum(p.stat().st_size for p in self.dir.glob("*.safetensors"))
