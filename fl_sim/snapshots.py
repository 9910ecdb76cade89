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
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from safetensors.numpy import load as st_load_bytes
from safetensors.numpy import save as st_save_bytes

from fl_sim.errors import SnapshotError
from fl_sim.io import atomic_write_bytes

ROLES = ("global", "upload", "sent", "received", "clipped")
INDEX = "index.json"


@dataclass(frozen=True)
class SnapshotEntry:
    round: int
    participant: int | None
    role: str
    file: str
    sha256: str
    bytes: int
    num_examples: int | None = None


def _to_numpy(arrays: Mapping[str, object]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        out[k] = np.ascontiguousarray(np.asarray(v))
    return out


def _order(e: SnapshotEntry) -> tuple:
    return (e.round, e.role, -1 if e.participant is None else e.participant)


def _name(round_: int, participant: int | None, role: str) -> str:
    who = "server" if participant is None else f"p{participant}"
    return f"r{round_:04d}-{who}-{role}.safetensors"


class SnapshotStore:
    """Per-run store of model parameter snapshots.

    Parameters are dicts ``name -> array`` (numpy or torch), in the model's state_dict order.
    Thread-safe within one process; several processes (Ray clients) may each write their own
    entries because each writer keeps a private index shard (``index.<writer>.json``) that
    :meth:`entries` merges.
    """

    def __init__(self, directory: str | Path, writer: str = "server",
                 keep_rounds: Iterable[int] | None = None, background: bool = False):
        self.dir = Path(directory)
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
            if job is None:  # close(): the queue is empty, stop the thread
                jobs.task_done()
                return
            try:
                if self._failed is None:
                    job()
            except BaseException as e:  # re-raised in the caller's thread by flush()
                self._failed = e
            finally:
                jobs.task_done()

    def _submit(self, job) -> None:
        if self._jobs is None:
            job()
            return
        self._raise_failed()
        self._jobs.put(job)

    def _raise_failed(self) -> None:
        if self._failed is not None:
            e, self._failed = self._failed, None
            raise SnapshotError(f"writing a snapshot in {self.dir} failed: {e}") from e

    def flush(self) -> None:
        """Wait until every snapshot asked for is on disk (background mode; a no-op otherwise)."""
        if self._jobs is not None:
            self._jobs.join()
            self._raise_failed()

    def close(self) -> None:
        """Flush, then stop the writer thread: later writes are synchronous. A comparison
        trains many federations in one process; each would otherwise leave an idle thread."""
        if self._jobs is not None:
            jobs = self._jobs
            try:
                self.flush()
            finally:
                self._jobs = None
                jobs.put(None)
                self._thread.join()

    # ------------------------------------------------------------ writing
    def _shard(self) -> Path:
        return self.dir / (INDEX if self.writer == "server" else f"index.{self.writer}.json")

    def _read_shard(self, path: Path) -> list[dict]:
        if not path.exists():
            return []
        try:
            return json.loads(path.read_text())["entries"]
        except (json.JSONDecodeError, KeyError, OSError) as e:
            raise SnapshotError(f"snapshot index {path} is corrupt: {e}") from None

    def put(self, round_: int, participant: int | None, role: str,
            arrays: Mapping[str, object], num_examples: int | None = None,
            force: bool = False) -> SnapshotEntry | None:
        """Store one snapshot; returns None when ``round_`` is not among the kept rounds, and
        in background mode (the entry is written later: see :meth:`flush`)."""
        if role not in ROLES:
            raise ValueError(f"unknown snapshot role {role!r}")
        if not force and self.keep_rounds is not None and round_ not in self.keep_rounds:
            return None
        arrays = _to_numpy(arrays)
        if self._jobs is not None:  # a copy: the caller may reuse its buffers meanwhile
            arrays = {k: v.copy() for k, v in arrays.items()}
            self._submit(lambda: self._write(round_, participant, role, arrays, num_examples))
            return None
        return self._write(round_, participant, role, arrays, num_examples)

    def _write(self, round_: int, participant: int | None, role: str, arrays: dict[str, np.ndarray],
               num_examples: int | None) -> SnapshotEntry:
        data = st_save_bytes(arrays)
        name = _name(round_, participant, role)
        atomic_write_bytes(self.dir / name, data, durable=False)
        entry = SnapshotEntry(round_, participant, role, name,
                              hashlib.sha256(data).hexdigest(), len(data), num_examples)
        with self._lock:
            shard = self._shard()
            entries = [e for e in self._read_shard(shard) if e["file"] != name]
            entries.append(asdict(entry))
            entries.sort(key=lambda e: _order(SnapshotEntry(**e)))
            atomic_write_bytes(shard, json.dumps({"entries": entries}, indent=1).encode(), durable=False)
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

    def _forget(self, round_: int) -> None:
        with self._lock:
            shard = self._shard()
            entries = self._read_shard(shard)
            gone = [e for e in entries if e["round"] == round_]
            if not gone:
                return
            atomic_write_bytes(shard, json.dumps({"entries": [e for e in entries if e["round"] != round_]},
                                                 indent=1).encode(), durable=False)
            for e in gone:
                (self.dir / e["file"]).unlink(missing_ok=True)
            self._cache = None

    def drop_after(self, round_: int) -> None:
        """Make the store what an uninterrupted run leaves after ``round_`` (used when
        resuming a killed run): forget every entry of rounds > ``round_``, and of earlier
        rounds that are not kept. A kill between storing a round's aggregate and rolling
        the previous one's leaves both; the uninterrupted run would have rolled it."""
        def gone(e: dict) -> bool:
            return e["round"] > round_ or (self.keep_rounds is not None and e["round"] < round_
                                           and e["round"] not in self.keep_rounds)
        self.flush()
        for shard in self.dir.glob("index*.json"):
            entries = self._read_shard(shard)
            for e in entries:
                if gone(e):
                    (self.dir / e["file"]).unlink(missing_ok=True)
            atomic_write_bytes(shard, json.dumps({"entries": [e for e in entries if not gone(e)]},
                                                 indent=1).encode(), durable=False)
        self._cache = None

    # ------------------------------------------------------------ reading
    def _index(self) -> dict[tuple, SnapshotEntry]:
        """All entries by (round, participant, role), re-read only when a shard changed:
        attacks look snapshots up many times, and clients may add shards meanwhile."""
        self.flush()
        shards = sorted(self.dir.glob("index*.json"))
        signature = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in shards)
        if self._cache is None or self._cache[0] != signature:
            entries = sorted((SnapshotEntry(**e) for shard in shards
                              for e in self._read_shard(shard)), key=_order)
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
        try:
            data = path.read_bytes()
        except OSError:
            raise SnapshotError(f"snapshot file missing: {path}") from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise SnapshotError(f"snapshot file fails its checksum (truncated or altered): {path}")
        try:
            return st_load_bytes(data)
        except Exception as e:  # safetensors raises its own error types
            raise SnapshotError(f"snapshot file unreadable: {path}: {e}") from None

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
