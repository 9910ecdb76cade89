"""Image datasets: CIFAR-10/100 (torchvision's python format, or image-folder trees),
Fashion-MNIST (torchvision's raw idx layout), and the Purchase100-style stand-in built
from Fashion-MNIST.

Images come back as x float32 (n, C, H, W): pixel / 255, then per channel
``(v - mean) / std`` with the fixed constants in ``NORMALIZATION`` (the usual published
per-channel statistics of each training set, so every run normalizes identically).
Train and test records are concatenated (train first); the project makes its own splits.
Parsing/decoding happens once per machine (see ``cache.py``); later loads memory-map.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import cached_arrays, one_line, source_key, unpack_once
from .pickles import PICKLE_ERRORS, TRUST_ENV, trusted_pickle
from .registry import FMNIST_FILES, Dataset, DatasetSpec, fail, make_dataset, take_subset

Err = Callable[[str], DataError]

# (mean, std) per channel of pixel/255, from each dataset's training set.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fmnist": ((0.2860,), (0.3530,)),
}

_CHUNK = 4096  # images normalized per step, to bound the float32 temporaries


def normalize(u8: np.ndarray, stats: str) -> np.ndarray:
    """uint8 (n, C, H, W) → float32 (n, C, H, W): v/255, then (v - mean)/std per channel."""
    mean, std = NORMALIZATION[stats]
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    out = np.empty(u8.shape, np.float32)
    for i in range(0, len(u8), _CHUNK):
        out[i : i + _CHUNK] = (u8[i : i + _CHUNK].astype(np.float32) / 255.0 - m) / s
    return out


def _finish(spec: DatasetSpec, x, y, k: int, subset: int | None, path) -> Dataset:
    x, y = take_subset(spec, x, y, subset, path)
    return make_dataset(spec.name, spec.display_name, x, y, k, spec.format, path)


# ---------------------------------------------------------------------------------------
# CIFAR-10/100, torchvision's python format


def _cifar_files(which: str) -> tuple[list, list, dict]:
    """torchvision's (train files, test files, meta file) of the CIFAR python format, each
    file with the MD5 of its official copy."""
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if which == "cifar10" else CIFAR100
    return base.train_list, base.test_list, base.meta


def _cifar_batches(found: Path, files: list, err: Err) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 3, 32, 32) images and int64 labels of the batch files ``files``, in order."""
    xs, ys = [], []
    for name, md5 in files:
        entry = trusted_pickle(found / name, md5, err)
        try:
            rows = np.asarray(entry["data"])
            labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
        except PICKLE_ERRORS as e:
            raise err(f"malformed batch file {name} ({type(e).__name__}: {one_line(e)}) in") from None
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3072 or labels.shape != (len(rows),):
            raise err(f"batch {name} has arrays of shape {rows.shape} and {labels.size} labels in")
        xs.append(rows.reshape(-1, 3, 32, 32))  # rows: 1024 R, 1024 G, 1024 B
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _load_cifar(spec: DatasetSpec, found: Path, which: str, k: int, subset, verify_md5: bool):
    err: Err = lambda problem: fail(spec.name, problem, found, spec.format)  # noqa: E731
    if verify_md5 is not True:
        raise err(f"verify_md5={verify_md5!r}: the check cannot be turned off (the files are pickles, and "
                  f"reading a pickle can run code); vouch for copies you trust with ${TRUST_ENV}; in")
    train_files, test_files, meta = _cifar_files(which)
    files = [found / f for f, _ in train_files + test_files] + [found / meta["filename"]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise err(f"missing {', '.join(missing)} in")

    def build():
        # The standard CIFAR format is a Python pickle; a file is unpickled only when it is
        # the official one or the user vouches for it (fl_sim.data.pickles).
        try:
            classes = trusted_pickle(found / meta["filename"], meta["md5"], err)[meta["key"]]
        except PICKLE_ERRORS as e:
            raise err(f"malformed meta file ({type(e).__name__}: {one_line(e)}) in") from None
        if len(classes) != k:
            raise err(f"meta names {len(classes)} classes, expected {k}")
        (xa, ya), (xb, yb) = _cifar_batches(found, train_files, err), _cifar_batches(found, test_files, err)
        x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
        if y.min() < 0 or y.max() >= k:
            raise err(f"labels span {y.min()}..{y.max()}, outside 0..{k - 1}")
        return normalize(x, which), y

    x, y = cached_arrays(spec.name, source_key(files, spec.name, "norm", NORMALIZATION[which]), build)
    return _finish(spec, x, y, k, subset, found)


def load_cifar10(spec: DatasetSpec, found: Path, subset: int | None = None, verify_md5: bool = True) -> Dataset:
    """CIFAR-10: 50,000 + 10,000 images (3, 32, 32), 10 classes; subset = first N records."""
    return _load_cifar(spec, found, "cifar10", 10, subset, verify_md5)


def load_cifar100(spec: DatasetSpec, found: Path, subset: int | None = None, verify_md5: bool = True) -> Dataset:
    """CIFAR-100: 50,000 + 10,000 images (3, 32, 32), 100 fine classes; subset = first N."""
    return _load_cifar(spec, found, "cifar100", 100, subset, verify_md5)


# ---------------------------------------------------------------------------------------
# image-folder trees: train/<class>/*.jpg|png, test/<class>/*.jpg|png

_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def _tree_root(d: Path) -> Path | None:
    """The directory holding train/: ``d`` itself or its only visible subdirectory."""
    if (d / "train").is_dir():
        return d
    subs = [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subs) == 1 and (subs[0] / "train").is_dir():
        return subs[0]
    return None


def _list_tree(tree: Path, k: int, err: Err) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names sorted, image paths, labels) in order train then test, each by class
    then file name."""
    classes = sorted(p.name for p in (tree / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != k:
        raise err(f"train/ has {len(classes)} class folders, expected {k}, in")
    paths: list[Path] = []
    labels: list[int] = []
    for split in ("train", "test"):
        sd = tree / split
        if not sd.is_dir():
            continue  # a tree without test/ is fine: the project splits the records itself
        extra = sorted({p.name for p in sd.iterdir() if p.is_dir() and not p.name.startswith(".")} - set(classes))
        if extra:
            raise err(f"{split}/ has class folders not in train/: {', '.join(extra[:5])}, in")
        for c, cname in enumerate(classes):
            cd = sd / cname
            if not cd.is_dir():
                continue
            files = sorted(p for p in cd.iterdir() if p.suffix.lower() in _IMAGE_EXT and p.is_file())
            paths += files
            labels += [c] * len(files)
    if not paths:
        raise err("no .jpg/.png images in")
    return classes, paths, np.asarray(labels, dtype=np.int64)


def _balanced_first(y: np.ndarray, k: int, n: int, err: Err) -> np.ndarray:
    """Indices of the first n//k records of each class (the first n%k classes get one more),
    in the original order: a deterministic, balanced subset."""
    picks = []
    for c in range(k):
        quota = n // k + (1 if c < n % k else 0)
        idx = np.flatnonzero(y == c)[:quota]
        if len(idx) < quota:
            raise err(f"subset={n} needs {quota} images of class {c}, only {len(idx)} in")
        picks.append(idx)
    return np.sort(np.concatenate(picks))


def _decode(spec: DatasetSpec, paths: list[Path], hw: tuple[int, int]) -> np.ndarray:
    """Decode RGB images with PIL into uint8 (n, 3, H, W); each must be H x W."""
    from PIL import Image, UnidentifiedImageError

    def fail_path(p: Path, problem: str) -> DataError:
        return fail(spec.name, problem, p, spec.format)

    def one(p: Path) -> np.ndarray:
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise fail_path(p, f"cannot decode image ({type(e).__name__})") from None
        if a.shape[:2] != hw:
            raise fail_path(p, f"image is {a.shape[1]}x{a.shape[0]}, expected {hw[1]}x{hw[0]}")
        return a

    out = np.empty((len(paths), 3, *hw), np.uint8)
    # PIL releases the GIL while decoding, so threads give a real speed-up on 60k JPEGs.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, a in enumerate(pool.map(one, paths, chunksize=256)):
            out[i] = a.transpose(2, 0, 1)
    return out


def _load_folder(spec: DatasetSpec, found: Path, which: str, k: int, subset: int | None) -> Dataset:
    err_top: Err = lambda problem: fail(spec.name, problem, found, spec.format)  # noqa: E731
    d = found
    if found.is_file():
        d = unpack_once(found, spec.name, err_top)  # once per machine, into cache_dir()
    tree = _tree_root(d) if d.is_dir() else None
    if tree is None:
        raise err_top("no train/ directory in")
    err: Err = lambda problem: fail(spec.name, problem, tree, spec.format)  # noqa: E731
    classes, paths, y = _list_tree(tree, k, err)
    if subset is not None:
        if subset > len(y):
            raise err(f"subset={subset} exceeds the {len(y)} images in")
        keep = _balanced_first(y, k, subset, err)
        paths, y = [paths[i] for i in keep], y[keep]

    def build():
        return normalize(_decode(spec, paths, (32, 32)), which), y

    # Key: the source (tarball, or every listed file) plus which files were chosen.
    sources = [found] if found.is_file() else paths
    key = source_key(sources, spec.name, classes, subset, len(paths), "norm", NORMALIZATION[which])
    x, yc = cached_arrays(spec.name, key, build)
    return make_dataset(spec.name, spec.display_name, x, yc, k, spec.format, found)


def load_cifar10_folder(spec: DatasetSpec, found: Path, subset: int | None = None) -> Dataset:
    """CIFAR-10 as image folders (10 classes, (3, 32, 32)); class index = sorted folder name.

    subset=N decodes only the first N//10 images of each class (train before test, files
    in name order), so a CPU run or a test never decodes all 60,000.
    """
    return _load_folder(spec, found, "cifar10", 10, subset)


def load_cifar100_folder(spec: DatasetSpec, found: Path, subset: int | None = None) -> Dataset:
    """CIFAR-100 as image folders (100 classes, (3, 32, 32)); subset as for CIFAR-10."""
    return _load_folder(spec, found, "cifar100", 100, subset)


# ---------------------------------------------------------------------------------------
# Fashion-MNIST, torchvision's raw layout (idx files, optionally gzipped)



def read_idx(path: Path, ndim: int, err: Err) -> np.ndarray:
    """An idx file of unsigned bytes (magic 0x0000080N, N = ndim) → uint8 array.

    The header is 2 zero bytes, type code 0x08 (ubyte), the number of dimensions, then one
    big-endian uint32 per dimension; the payload must hold exactly their product.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise err(f"truncated or corrupt gzip ({one_line(e)})") from None
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise err(f"bad idx header {raw[:4].hex()} (expected magic 0x0000080{ndim})")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    if len(raw) - head != int(np.prod(dims)):
        raise err(f"idx payload has {len(raw) - head} bytes, header says {dims} (truncated?)")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(dims)


def _fmnist_files(raw_dir: Path) -> list[Path]:
    # Prefer the unpacked file when both exist (torchvision keeps both): no gunzip needed.
    return [raw_dir / f if (raw_dir / f).is_file() else raw_dir / (f + ".gz") for f in FMNIST_FILES]


def _fmnist_uint8(spec: DatasetSpec, raw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 images uint8 (n, 28, 28) and labels int64 (n,), train then test."""
    files = _fmnist_files(raw_dir)
    xs, ys = [], []
    for img_f, lab_f in (files[0:2], files[2:4]):
        e_img: Err = lambda p, f=img_f: fail(spec.name, p, f, spec.format)  # noqa: E731
        e_lab: Err = lambda p, f=lab_f: fail(spec.name, p, f, spec.format)  # noqa: E731
        imgs, labs = read_idx(img_f, 3, e_img), read_idx(lab_f, 1, e_lab)
        if imgs.shape[1:] != (28, 28):
            raise e_img(f"images are {imgs.shape[1]}x{imgs.shape[2]}, expected 28x28")
        if len(imgs) != len(labs):
            raise e_lab(f"{len(labs)} labels for {len(imgs)} images")
        if len(labs) and labs.max() > 9:
            raise e_lab(f"label {labs.max()} outside 0..9")
        xs.append(imgs)
        ys.append(labs.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_fmnist(spec: DatasetSpec, found: Path, subset: int | None = None) -> Dataset:
    """Fashion-MNIST: 60,000 + 10,000 images (1, 28, 28), 10 classes; subset = first N."""
    files = _fmnist_files(found)

    def build():
        imgs, y = _fmnist_uint8(spec, found)
        return normalize(imgs[:, None], "fmnist"), y

    x, y = cached_arrays(spec.name, source_key(files, spec.name, "norm", NORMALIZATION["fmnist"]), build)
    return _finish(spec, x, y, 10, subset, found)


# k-means settings of the Purchase100 construction; part of the cache key. One init:
# several cost as many times longer and barely lower the inertia on this data.
KMEANS = {"algorithm": "lloyd", "n_init": 1, "max_iter": 300, "random_state": 0}


def load_fmnist100(
    spec: DatasetSpec, found: Path, subset: int | None = 10000, n_clusters: int = 100
) -> Dataset:
    """Stand-in for Purchase100, built the way Purchase100 was: binary features, labels
    from k-means.

    Takes the first ``subset`` Fashion-MNIST images (train first; default 10,000, the size
    the stand-in was measured at; None = all 70,000), binarizes pixels (> 127) into 784
    features in {0, 1}, and labels each image by scikit-learn KMeans into ``n_clusters``
    (default 100) clusters fitted on those same images (settings in ``KMEANS``). The
    original Fashion-MNIST classes are discarded. x: float32 (n, 784); y: int64 (n,).

    The labels are cached per machine (k-means on 10,000 x 784 takes tens of seconds on
    a few cores). KMeans is seeded, but its multi-threaded sums depend on the thread
    count, so another machine may label a few borderline images differently.
    """
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 2:
        raise DataError(f"{spec.name}: n_clusters must be an integer >= 2, got {n_clusters!r}")
    files = _fmnist_files(found)
    err: Err = lambda problem: fail(spec.name, problem, found, spec.format)  # noqa: E731

    def build():
        from sklearn.cluster import KMeans

        imgs, _ = _fmnist_uint8(spec, found)
        n = len(imgs) if subset is None else subset
        if n > len(imgs):
            raise err(f"subset={n} exceeds the {len(imgs)} images in")
        if n < n_clusters:
            raise err(f"subset={n} is smaller than n_clusters={n_clusters} for")
        x = (imgs[:n].reshape(n, -1) > 127).astype(np.float32)
        km = KMeans(n_clusters=n_clusters, **KMEANS).fit(x)
        return x, km.labels_.astype(np.int64)

    key = source_key(files, spec.name, subset, n_clusters, sorted(KMEANS.items()))
    x, y = cached_arrays(spec.name, key, build)
    return make_dataset(spec.name, spec.display_name, x, y, n_clusters, spec.format, found)
