"""Tabular datasets: scikit-learn digits, and the privacytrustlab text formats
(Location-30, Purchase100, Texas100) used by Shokri et al. 2017 and Nasr et al. 2019.

Every loader returns x float32 (n, d) with binary features in {0, 1} (digits: pixel/16 in
[0, 1]) and y int64 (n,) in [0, classes) — the files' 1-based labels minus one. Parsing
happens once per machine (see ``cache.py``); later loads memory-map the cached arrays.
``subset=N`` keeps the first N records in file order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import ARCHIVE_ERRORS, cached_arrays, one_line, open_members, source_key
from .registry import Dataset, DatasetSpec, fail, make_dataset, take_subset

Err = Callable[[str], DataError]

_COMMA, _ZERO = ord(","), ord("0")


def _binary_values(line: bytes, d: int, err: Err, lineno: int) -> np.ndarray:
    """The d comma-separated 0/1 values of ``line`` as uint8, or a DataError."""
    # Fast path for the usual file: every value is one character, so the row is exactly
    # 2d-1 bytes with commas at odd offsets (numpy does the work, not a Python loop).
    a = np.frombuffer(line, dtype=np.uint8)
    if a.size == 2 * d - 1 and (a[1::2] == _COMMA).all():
        v = a[0::2] - _ZERO  # uint8 arithmetic: any byte other than '0'/'1' ends up > 1
        if (v <= 1).all():
            return v
    parts = line.split(b",")
    if len(parts) != d:
        raise err(f"line {lineno} has {len(parts)} feature values, expected {d}")
    try:
        v = np.array([float(p) for p in parts])
    except ValueError:
        bad = next(p for p in parts if not _is_number(p))
        raise err(f"line {lineno}: non-numeric value {bad[:20]!r}") from None
    if not np.isin(v, (0.0, 1.0)).all():
        bad = v[~np.isin(v, (0.0, 1.0))][0]
        raise err(f"line {lineno}: value {bad:g} is not binary (0/1)")
    return v.astype(np.uint8)


def _is_number(b: bytes) -> bool:
    try:
        float(b)
        return True
    except ValueError:
        return False


def _label(raw: bytes, k: int, err: Err, lineno: int) -> int:
    """A 1-based label (optionally in double quotes, as Location-30 writes it) → 0-based."""
    s = raw.strip()
    if len(s) >= 2 and s[:1] == s[-1:] == b'"':
        s = s[1:-1]
    try:
        v = int(s)
    except ValueError:
        raise err(f"line {lineno}: label {raw[:20]!r} is not an integer") from None
    if not 1 <= v <= k:
        raise err(f"line {lineno}: label {v} outside 1..{k}")
    return v - 1


def _lines(stream: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its line ending), skipping blank lines."""
    for i, line in enumerate(stream, 1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield i, line


def parse_label_rows(stream: Iterable[bytes], d: int, k: int, err: Err) -> tuple[np.ndarray, np.ndarray]:
    """Lines ``label,f1,...,fd`` → x uint8 (n, d), y int64 (n,) in [0, k)."""
    xs, ys = [], []
    for i, line in _lines(stream):
        lab, sep, rest = line.partition(b",")
        if not sep:
            raise err(f"line {i} has 1 value, expected {d + 1}")
        ys.append(_label(lab, k, err, i))
        xs.append(_binary_values(rest, d, err, i))
    if not ys:
        raise err("no records")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def parse_feature_rows(stream: Iterable[bytes], d: int, err: Err) -> np.ndarray:
    """Lines of d comma-separated binary values → uint8 (n, d)."""
    xs = [_binary_values(line, d, err, i) for i, line in _lines(stream)]
    if not xs:
        raise err("no records")
    return np.stack(xs)


def parse_label_lines(stream: Iterable[bytes], k: int, err: Err) -> np.ndarray:
    """One 1-based label a line → int64 (n,) in [0, k)."""
    ys = [_label(line, k, err, i) for i, line in _lines(stream)]
    if not ys:
        raise err("no records")
    return np.asarray(ys, dtype=np.int64)


@contextlib.contextmanager
def _reading(err: Err) -> Iterator[None]:
    """Turn read errors from truncated gzip/tar streams into the dataset's DataError."""
    try:
        yield
    except DataError:
        raise
    except ARCHIVE_ERRORS as e:
        raise err(f"truncated or corrupt file ({one_line(e)})") from None


def _is_archive(p: Path) -> bool:
    return p.name.endswith((".tgz", ".tar.gz"))


def _finish(spec: DatasetSpec, x, y, k: int, subset: int | None, path: Path) -> Dataset:
    x, y = take_subset(spec, x, y, subset, path)
    return make_dataset(spec.name, spec.display_name, x, y, k, spec.format, path)


# ---------------------------------------------------------------------------------------
# loaders, called by the registry as fn(spec, found_path, **options)


def load_digits(spec: DatasetSpec, found: Path | None, subset: int | None = None) -> Dataset:
    """scikit-learn's bundled digits: 1797 images 8x8 flattened to (64,), pixel/16 in [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False  # read-only, like the memory-mapped datasets
    return _finish(spec, x, y, 10, subset, "scikit-learn load_digits")


def _label_first_file(spec: DatasetSpec, found: Path, member: str, d: int, k: int, subset):
    """Shared by Location-30 and Purchase100: one file of ``label,f1..fd`` lines,
    plain or as member ``member`` of a tar.gz."""

    def build():
        if _is_archive(found):
            shown = f"{found} member '{member}'"
            err: Err = lambda problem: fail(spec.name, problem, shown, spec.format)  # noqa: E731
            with open_members(found, [member], err) as streams, _reading(err):
                return parse_label_rows(streams[member], d, k, err)
        err = lambda problem: fail(spec.name, problem, found, spec.format)  # noqa: E731
        with open(found, "rb") as f, _reading(err):
            return parse_label_rows(f, d, k, err)

    x, y = cached_arrays(spec.name, source_key([found], spec.name, member, d, k), build)
    return _finish(spec, x, y, k, subset, found)


def load_location30(spec: DatasetSpec, found: Path, subset: int | None = None) -> Dataset:
    """Location-30: 446 binary features, 30 classes (5,010 records in the real file)."""
    return _label_first_file(spec, found, "bangkok", 446, 30, subset)


def load_purchase100(spec: DatasetSpec, found: Path, subset: int | None = None) -> Dataset:
    """Purchase100: 600 binary features, 100 classes (197,324 records in the real file)."""
    return _label_first_file(spec, found, "dataset_purchase", 600, 100, subset)


TEXAS_D, TEXAS_K = 6169, 100


def load_texas100(spec: DatasetSpec, found: Path, subset: int | None = None) -> Dataset:
    """Texas100: 6,169 binary features, 100 classes (67,330 records in the real files).

    ``found`` is either the directory holding ``feats`` and ``labels`` or a tar.gz holding
    ``texas/100/feats`` and ``texas/100/labels``.
    """
    feats_m, labels_m = "texas/100/feats", "texas/100/labels"

    def check(x: np.ndarray, y: np.ndarray, err: Err):
        if len(x) != len(y):
            raise err(f"feats has {len(x)} rows but labels has {len(y)}")
        return x, y

    def build():
        if _is_archive(found):
            err: Err = lambda problem: fail(spec.name, problem, found, spec.format)  # noqa: E731
            with open_members(found, [labels_m, feats_m], err) as s, _reading(err):
                y = parse_label_lines(s[labels_m], TEXAS_K, err)
                return check(parse_feature_rows(s[feats_m], TEXAS_D, err), y, err)
        errs = {n: (lambda problem, n=n: fail(spec.name, problem, found / n, spec.format))
                for n in ("feats", "labels")}
        with open(found / "labels", "rb") as f, _reading(errs["labels"]):
            y = parse_label_lines(f, TEXAS_K, errs["labels"])
        with open(found / "feats", "rb") as f, _reading(errs["feats"]):
            x = parse_feature_rows(f, TEXAS_D, errs["feats"])
        return check(x, y, errs["feats"])

    sources = [found] if _is_archive(found) else [found / "feats", found / "labels"]
    x, y = cached_arrays(spec.name, source_key(sources, spec.name, TEXAS_D, TEXAS_K), build)
    return _finish(spec, x, y, TEXAS_K, subset, found)
