"""Parse-once cache of decoded datasets, and safe access to tar archives.

Text, idx and JPEG sources are slow to parse, and every federated client (a separate Ray
worker process) needs the same arrays. So each dataset is parsed once per machine into

    cache_dir()/<name>-<key>/x.npy   float32, shape (n, *input_shape)
    cache_dir()/<name>-<key>/y.npy   int64,   shape (n,)

written atomically (temp file in the same directory, fsync, os.replace) under a file lock,
and then opened with ``np.load(..., mmap_mode="r")`` so that clients share the pages.
The key is a hash of the source files' names, sizes and mtimes plus the parse parameters,
so it changes whenever a source file does.

Archives are read member by member (never ``extractall``); members must be plain files or
directories with relative names that stay inside the target directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import DataError
from ..io import atomic_path

try:  # POSIX only; on other systems concurrent first loads may parse twice (still correct)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# Bump when the on-disk layout or any parser changes meaning, so old caches are ignored.
CACHE_VERSION = "1"

# Errors that a truncated or corrupt gzip/tar stream raises somewhere while being read.
ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)

_CHUNK_BYTES = 64 << 20  # cast/copy this much at a time, so peak memory stays bounded


def cache_dir() -> Path:
    """Where parsed arrays live: ``$FL_SIM_CACHE`` if set, else ``~/.cache/fl_sim``."""
    env = os.environ.get("FL_SIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fl_sim"


def source_key(paths: list[Path], *params: object) -> str:
    """Hex digest (16 chars) of each path's absolute name, size and mtime, and ``params``."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).absolute()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    for v in params:
        h.update(repr(v).encode() + b"\n")
    return h.hexdigest()[:16]


def one_line(text: object) -> str:
    """``text`` with newlines escaped, so an error message stays on one line."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock, so concurrent processes parse a dataset only once."""
    with open(lock_path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def save_atomic(path: Path, arr: np.ndarray, dtype: np.dtype | type) -> None:
    """Write ``arr`` cast to ``dtype`` as ``.npy`` at ``path``: temp file, fsync, rename.

    The cast is done chunk by chunk straight into a memory-mapped temp file, so a large
    uint8 source never needs a full float32 copy in memory.
    """
    arr = np.asarray(arr)
    # 0644: mkstemp makes 0600, and a shared FL_SIM_CACHE must stay readable
    with atomic_path(path, mode=0o644) as tmp:
        if arr.size == 0:
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a name
                np.save(f, arr.astype(dtype), allow_pickle=False)
        else:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=arr.shape)
            row_bytes = max(1, out[0].nbytes) if arr.ndim else 1
            step = max(1, _CHUNK_BYTES // row_bytes)
            for i in range(0, len(arr), step):
                out[i : i + step] = arr[i : i + step]
            out.flush()
            del out


def _load_pair(d: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (x, y) memory maps in ``d``, or None when absent or unreadable."""
    xp, yp = d / "x.npy", d / "y.npy"
    if not (xp.is_file() and yp.is_file()):
        return None
    try:
        x = np.load(xp, mmap_mode="r", allow_pickle=False)
        y = np.load(yp, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None  # damaged cache file: rebuild it
    if x.dtype != np.float32 or y.dtype != np.int64 or y.ndim != 1 or len(x) != len(y):
        return None
    return x, y


def cached_arrays(
    name: str, key: str, build_fn: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) for ``name``/``key`` as read-only memory maps, building them once.

    ``build_fn()`` returns ``(x, y)`` with x of any numeric dtype (stored as float32,
    shape kept) and y integer labels (stored as int64, shape (n,)). It runs only when the
    cache has no valid copy, and under a lock, so concurrent callers parse once.
    """
    d = cache_dir() / f"{name}-{key}"
    hit = _load_pair(d)
    if hit is not None:
        return hit
    try:
        d.mkdir(parents=True, exist_ok=True)
        with _locked(d / ".lock"):
            hit = _load_pair(d)  # another process may have built it while we waited
            if hit is not None:
                return hit
            x, y = build_fn()
            save_atomic(d / "x.npy", x, np.float32)
            # y last: a reader only trusts the pair once both files are in place
            save_atomic(d / "y.npy", np.asarray(y).reshape(-1), np.int64)
    except PermissionError as e:
        raise DataError(
            f"{name}: cannot write the dataset cache {one_line(d)} ({e.strerror}); "
            "set FL_SIM_CACHE to a writable directory"
        ) from None
    hit = _load_pair(d)
    if hit is None:  # pragma: no cover - only if the filesystem loses our writes
        raise DataError(f"{name}: cache {one_line(d)} unreadable right after writing it")
    return hit


# ---------------------------------------------------------------------------------------
# tar archives


def _check_member(m: tarfile.TarInfo) -> str | None:
    """Why member ``m`` is unsafe to read or unpack, or None if it is fine."""
    name = m.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"absolute member name {name!r}"
    if ".." in Path(name).parts:
        return f"member name {name!r} leaves the archive"
    if not (m.isfile() or m.isdir()):
        return f"member {name!r} is a link or special file"
    return None


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


@contextlib.contextmanager
def open_members(
    tgz: Path, wanted: list[str], err: Callable[[str], DataError]
) -> Iterator[dict[str, IO[bytes]]]:
    """Open the regular-file members named ``wanted`` of tar.gz ``tgz``, as binary streams.

    A member matches a wanted name exactly or as a path suffix (``x/texas/100/feats``
    matches ``texas/100/feats``). ``err(problem)`` builds the DataError to raise.
    Stream read errors from a truncated archive surface as ``ARCHIVE_ERRORS`` while reading;
    callers translate them with ``err`` too.
    """
    try:
        tf = tarfile.open(tgz, "r:*")
    except ARCHIVE_ERRORS as e:
        raise err(f"not a readable tar.gz ({one_line(e)})") from None
    with tf:
        found: dict[str, tarfile.TarInfo] = {}
        try:
            for m in tf:
                n = _norm(m.name)
                for w in wanted:
                    if w not in found and (n == w or n.endswith("/" + w)):
                        problem = _check_member(m)
                        if problem or not m.isfile():
                            raise err(problem or f"member {m.name!r} is not a file")
                        found[w] = m
                if len(found) == len(wanted):
                    break
        except ARCHIVE_ERRORS as e:
            raise err(f"truncated or corrupt tar.gz ({one_line(e)})") from None
        missing = [w for w in wanted if w not in found]
        if missing:
            raise err(f"archive has no member {' or '.join(repr(w) for w in missing)}")
        streams = {w: tf.extractfile(m) for w, m in found.items()}
        try:
            yield streams  # type: ignore[misc]
        finally:
            for s in streams.values():
                if s is not None:
                    s.close()


def unpack_once(tgz: Path, name: str, err: Callable[[str], DataError]) -> Path:
    """Unpack tar.gz ``tgz`` once into ``cache_dir()/unpacked/``; return that directory.

    Members are checked one by one (relative names, no ``..``, plain files and directories
    only) and written by hand rather than with ``extractall``. The tree is built in a temp
    directory and renamed into place, so a half-unpacked tree is never seen as complete.
    """
    key = source_key([tgz])
    base = cache_dir() / "unpacked"
    target = base / f"{name}-{key}"
    if target.is_dir():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        with _locked(base / f".{name}-{key}.lock"):
            if target.is_dir():
                return target
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-{key}.", dir=base))
            try:
                _unpack_into(tgz, tmp, err)
                os.chmod(tmp, 0o755)  # mkdtemp makes 0700
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except PermissionError as e:
        raise DataError(
            f"{name}: cannot write the dataset cache {one_line(base)} ({e.strerror}); "
            "set FL_SIM_CACHE to a writable directory"
        ) from None
    return target


def _unpack_into(tgz: Path, dest: Path, err: Callable[[str], DataError]) -> None:
    root = os.path.realpath(dest)
    made: set[str] = {root}
    try:
        with tarfile.open(tgz, "r:*") as tf:
            for m in tf:
                problem = _check_member(m)
                if problem:
                    raise err(problem)
                # A lexical check suffices: dest is a fresh directory and we never create
                # links in it (link members are rejected above), so no path can be redirected.
                out = os.path.normpath(os.path.join(root, _norm(m.name)))
                if out != root and not out.startswith(root + os.sep):
                    raise err(f"member name {m.name!r} leaves the target directory")
                parent = out if m.isdir() else os.path.dirname(out)
                if parent not in made:  # one mkdir per directory, not per file
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                if m.isdir():
                    continue
                src = tf.extractfile(m)
                assert src is not None  # regular file, checked above
                with src, open(out, "xb") as f:  # "x": a duplicate member name is an error
                    shutil.copyfileobj(src, f)
    except tarfile.ReadError as e:
        raise err(f"not a readable tar.gz ({one_line(e)})") from None
    except FileExistsError:
        raise err(f"archive holds member {m.name!r} twice") from None
    except ARCHIVE_ERRORS as e:
        if isinstance(e, PermissionError):
            raise
        raise err(f"truncated or corrupt tar.gz ({one_line(e)})") from None
