"""What a snapshot store holds on disk, checked: file names, index entries, self-checking files.

A run directory may come from someone else (``fl-sim attack``, ``fl-sim run --resume``), so
nothing read from an index is trusted: every entry must have the fields fl-sim writes, with
their types, and name the one file its round, participant and role give (a plain name, no
directory part), so that reading or deleting it never leaves the store.

Each snapshot file carries, in its safetensors metadata, a SHA-256 of its arrays (and the
example count): a file proves on its own that it is whole. The index is written without
fsync (see ``fl_sim.io``); when an operating-system crash leaves an index empty or garbled,
or a crash before its first write left none, the index is rebuilt from the files that pass
their own check. This costs nothing while the run goes well, where an fsync of the index
after every snapshot would cost tens of milliseconds each; and a durable index alone would
not do, since it could still name snapshot files that the crash left empty.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load_bytes
from safetensors.numpy import save as st_save_bytes

from fl_sim.errors import SnapshotError

ROLES = ("global", "upload", "sent", "received", "clipped")
INDEX = "index.json"
_NAME = re.compile(r"r(\d{4,})-(?:server|p(\d+))-(" + "|".join(ROLES) + r")\.safetensors")
_SHARD = re.compile(r"index(?:\.(p\d+))?\.json")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_META_KEY = "fl-sim"   # one key: safetensors writes several in no fixed order


@dataclass(frozen=True)
class SnapshotEntry:
    round: int
    participant: int | None
    role: str
    file: str
    sha256: str
    bytes: int
    num_examples: int | None = None


def order(e: SnapshotEntry) -> tuple:
    return (e.round, e.role, -1 if e.participant is None else e.participant)


def file_name(round_: int, participant: int | None, role: str) -> str:
    who = "server" if participant is None else f"p{participant}"
    return f"r{round_:04d}-{who}-{role}.safetensors"


def shard_name(writer: str) -> str:
    return INDEX if writer == "server" else f"index.{writer}.json"


def writer_of(participant: int | None, role: str) -> str:
    """Whose index shard records a snapshot: a participant's own records what it received."""
    return f"p{participant}" if role == "received" else "server"


def shard_writer(name: str) -> str | None:
    """The writer whose index shard file is called ``name`` (None: not a shard's name)."""
    m = _SHARD.fullmatch(name)
    return None if m is None else (m[1] or "server")


def valid_writer(writer: str) -> bool:
    return shard_writer(shard_name(writer)) == writer


# ------------------------------------------------------------------ index entries
_INT, _OPT_INT = "an integer >= 0", "an integer >= 0 or null"


def _is_count(v, optional: bool = False) -> bool:
    return (optional and v is None) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def entry_of(raw: object, index: Path) -> SnapshotEntry:
    """The entry ``raw`` read from ``index``, or a one-line SnapshotError naming the index."""
    def bad(why: str) -> SnapshotError:
        return SnapshotError(f"snapshot index {index} has an entry fl-sim did not write ({why})")

    if not isinstance(raw, dict):
        raise bad(f"{type(raw).__name__}, not an object")
    fields = SnapshotEntry.__dataclass_fields__
    if missing := [k for k in fields if k != "num_examples" and k not in raw]:
        raise bad(f"no {', '.join(missing)}")
    if extra := sorted(str(k) for k in raw if k not in fields):
        raise bad(f"unknown keys {', '.join(extra)}"[:200])
    for key, optional in (("round", False), ("participant", True), ("bytes", False),
                          ("num_examples", True)):
        if not _is_count(raw.get(key), optional):
            raise bad(f"{key} is {raw.get(key)!r:.40}, not {_OPT_INT if optional else _INT}")
    if raw["role"] not in ROLES:
        raise bad(f"role {raw['role']!r:.40} is not one of {', '.join(ROLES)}")
    if not isinstance(raw["sha256"], str) or not _SHA256.fullmatch(raw["sha256"]):
        raise bad(f"sha256 {raw['sha256']!r:.80} is not 64 hex digits")
    expected = file_name(raw["round"], raw["participant"], raw["role"])
    if raw["file"] != expected:  # also keeps it a plain name inside the store
        raise bad(f"file {raw['file']!r:.80} is not {expected}")
    return SnapshotEntry(**raw)


def entries_of(text: str, index: Path) -> list[SnapshotEntry] | None:
    """The entries of an index's text; None when a crash left it empty or garbled (it is then
    rebuilt from the files); a one-line SnapshotError when it parses but is not fl-sim's."""
    if not text.strip(" \t\r\n\0"):
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise SnapshotError(f"snapshot index {index} is not fl-sim's: no list of entries")
    return [entry_of(e, index) for e in doc["entries"]]


# ------------------------------------------------------------------ snapshot files
def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.asarray(arrays[k])
        h.update(json.dumps([k, a.dtype.str, list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # no copy when contiguous
    return h.hexdigest()


def encode(arrays: dict[str, np.ndarray], num_examples: int | None) -> bytes:
    """A snapshot file's bytes: the arrays, and in the metadata their checksum and example count."""
    # safetensors copies memory as it is laid out (np.ascontiguousarray would make a 0-d array 1-d)
    arrays = {k: v if v.flags.c_contiguous else np.ascontiguousarray(v) for k, v in arrays.items()}
    mine = {"arrays_sha256": _arrays_digest(arrays),
            "num_examples": None if num_examples is None else int(num_examples)}
    return st_save_bytes(arrays, metadata={_META_KEY: json.dumps(mine, sort_keys=True)})


def _metadata(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    mine = json.loads(json.loads(data[8:8 + n])["__metadata__"][_META_KEY])
    if not isinstance(mine, dict):
        raise ValueError("not fl-sim's metadata")
    return mine


def entry_from_file(path: Path) -> SnapshotEntry | None:
    """The index entry of snapshot file ``path`` when the file proves it is whole (its arrays
    match the checksum it carries); None otherwise (damaged, foreign, a link, misnamed)."""
    m = _NAME.fullmatch(path.name)
    if m is None or path.is_symlink() or not path.is_file():
        return None
    try:
        data = path.read_bytes()
        meta = _metadata(data)
        ok = meta["arrays_sha256"] == _arrays_digest(st_load_bytes(data))
        num_examples = meta.get("num_examples")
        ok = ok and (num_examples is None or (isinstance(num_examples, int) and num_examples >= 0))
    except Exception:  # noqa: BLE001 - truncated, zeroed or foreign bytes: not a whole snapshot
        return None
    round_, participant, role = int(m[1]), None if m[2] is None else int(m[2]), m[3]
    if not ok or path.name != file_name(round_, participant, role):
        return None
    return SnapshotEntry(round_, participant, role, path.name, hashlib.sha256(data).hexdigest(),
                         len(data), num_examples)


def rebuild(directory: Path, writer: str) -> list[SnapshotEntry]:
    """``writer``'s index entries from the snapshot files in ``directory`` that pass their check."""
    found = (entry_from_file(p) for p in directory.glob("r*.safetensors"))
    return sorted((e for e in found if e is not None and writer_of(e.participant, e.role) == writer),
                  key=order)


def writers_with_files(directory: Path) -> set[str]:
    """The writers whose snapshot files (by name) are in ``directory``."""
    out = set()
    for p in directory.glob("r*.safetensors"):
        if m := _NAME.fullmatch(p.name):
            out.add(writer_of(None if m[2] is None else int(m[2]), m[3]))
    return out
