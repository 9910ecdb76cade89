"""Dataset registry: names → where the files are, what format they have, how to load them.

``load_dataset(name, root)`` returns a :class:`Dataset` whose arrays are usually read-only
memory maps of the parse-once cache (see ``cache.py``). Loaders live in ``tabular.py`` and
``images.py`` and are imported only when used, so listing datasets stays cheap (no torch).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import one_line


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise makes no sense
class Dataset:
    """All records of one dataset; the project makes its own train/test/attack splits.

    x: float32, shape (n, *input_shape); may be a read-only ``np.memmap``.
       Tabular data: features in {0, 1} (digits: pixel / 16 in [0, 1]).
       Images: pixel / 255, then per channel (v - mean) / std with the fixed constants in
       ``images.NORMALIZATION``.
    y: int64, shape (n,), values in [0, num_classes).
    input_shape: (d,) for tabular data, (C, H, W) for images.
    """

    name: str
    display_name: str
    x: np.ndarray = field(repr=False)  # repr=False: printing a Dataset must not dump arrays
    y: np.ndarray = field(repr=False)
    num_classes: int
    input_shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.y)


def fail(name: str, problem: str, path: object, fmt: str) -> DataError:
    """The one-line DataError: ``<name>: <problem>: <path> (expected <fmt>)``."""
    return DataError(one_line(f"{name}: {problem}: {path} (expected {fmt})"))


def make_dataset(
    name: str, display_name: str, x: np.ndarray, y: np.ndarray, num_classes: int, fmt: str,
    path: object,
) -> Dataset:
    """Check shapes, dtypes and label range, then build the Dataset."""
    if len(x) == 0:
        raise fail(name, "no records", path, fmt)
    if x.dtype != np.float32 or y.dtype != np.int64 or y.shape != (len(x),):
        raise fail(name, f"bad arrays x {x.dtype}{x.shape} y {y.dtype}{y.shape}", path, fmt)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise fail(name, f"labels span {lo}..{hi}, outside 0..{num_classes - 1}", path, fmt)
    return Dataset(name, display_name, x, y, int(num_classes), tuple(int(s) for s in x.shape[1:]))


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and load one dataset.

    candidates(root) lists the paths that are tried in order (the first that exists is
    used, as judged by ``exists``); loader is ``"module:function"`` in this package, called
    as ``fn(spec, found_path, **options)`` (found_path None for bundled data); options maps
    each accepted option to its default.
    """

    name: str
    display_name: str
    format: str
    candidates: Callable[[Path], list[Path]]
    loader: str
    options: dict[str, object] = field(default_factory=dict)
    exists: Callable[[Path], bool] = Path.exists

    def locate(self, root: Path) -> tuple[Path | None, list[Path]]:
        cands = self.candidates(root)
        return next((p for p in cands if self.exists(p)), None), cands


def _texas_dir_ok(p: Path) -> bool:
    return p.is_file() or (p.is_dir() and (p / "feats").is_file() and (p / "labels").is_file())


# torchvision's raw Fashion-MNIST layout (each file may also be stored gzipped)
FMNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


def _fmnist_raw_ok(p: Path) -> bool:
    return p.is_dir() and all((p / f).is_file() or (p / (f + ".gz")).is_file() for f in FMNIST_FILES)


def _image_tree_ok(p: Path) -> bool:
    return p.is_file() or (p.is_dir() and any(p.iterdir()))


_FMNIST_FMT = (
    "torchvision raw layout FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
)

SPECS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec(
            "digits", "scikit-learn digits (8x8)",
            "scikit-learn's bundled load_digits (no files needed)",
            lambda root: [], "tabular:load_digits", {"subset": None},
        ),
        DatasetSpec(
            "location30", "Location-30",
            "privacytrustlab Location-30: tar.gz holding 'bangkok', or 'bangkok' itself; "
            "lines '\"label\",f1,...,f446', labels \"1\"..\"30\", binary features",
            lambda root: [root / "location30" / "dataset_location.tgz", root / "location30" / "bangkok"],
            "tabular:load_location30", {"subset": None},
        ),
        DatasetSpec(
            "purchase100", "Purchase100",
            "privacytrustlab Purchase100: 'dataset_purchase' or a tar.gz holding it; "
            "lines 'label,f1,...,f600', labels 1..100, binary features",
            lambda root: [root / "purchase100" / "dataset_purchase", root / "purchase100" / "dataset_purchase.tgz"],
            "tabular:load_purchase100", {"subset": None},
        ),
        DatasetSpec(
            "texas100", "Texas100",
            "privacytrustlab Texas100: texas/100/feats (6169 comma-separated binary values a line) "
            "and texas/100/labels (one label 1..100 a line), as files or in dataset_texas.tgz",
            lambda root: [root / "texas100" / "texas" / "100", root / "texas100" / "dataset_texas.tgz"],
            "tabular:load_texas100", {"subset": None}, _texas_dir_ok,
        ),
        DatasetSpec(
            "cifar10", "CIFAR-10",
            "torchvision CIFAR10 python format: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
            lambda root: [root / "cifar-10-batches-py"], "images:load_cifar10",
            {"subset": None, "verify_md5": True}, Path.is_dir,
        ),
        DatasetSpec(
            "cifar100", "CIFAR-100",
            "torchvision CIFAR100 python format: <root>/cifar-100-python/{train,test,meta}",
            lambda root: [root / "cifar-100-python"], "images:load_cifar100",
            {"subset": None, "verify_md5": True}, Path.is_dir,
        ),
        DatasetSpec(
            "cifar10_folder", "CIFAR-10 (JPEG image folders)",
            "image folders train/<class>/*.jpg|png and test/<class>/*.jpg|png (10 classes, 32x32 RGB), "
            "as a directory or a tar.gz of one",
            lambda root: [root / "cifar10-jpg", root / "cifar10-jpg.tar.gz", root / "cifar10-jpg.tgz"],
            "images:load_cifar10_folder", {"subset": None, "path": None}, _image_tree_ok,
        ),
        DatasetSpec(
            "cifar100_folder", "CIFAR-100 (image folders)",
            "image folders train/<class>/*.jpg|png and test/<class>/*.jpg|png (100 classes, 32x32 RGB), "
            "as a directory or a tar.gz of one",
            lambda root: [root / "cifar100-jpg", root / "cifar100-jpg.tar.gz", root / "cifar100-jpg.tgz"],
            "images:load_cifar100_folder", {"subset": None, "path": None}, _image_tree_ok,
        ),
        DatasetSpec(
            "fmnist", "Fashion-MNIST", _FMNIST_FMT,
            lambda root: [root / "FashionMNIST" / "raw"], "images:load_fmnist", {"subset": None},
            _fmnist_raw_ok,
        ),
        DatasetSpec(
            "fmnist100", "Fashion-MNIST (Purchase100 construction, stand-in)",
            _FMNIST_FMT + "; binarized (>127) and labelled by k-means into 100 classes",
            lambda root: [root / "FashionMNIST" / "raw"], "images:load_fmnist100",
            {"subset": 10000, "n_clusters": 100}, _fmnist_raw_ok,
        ),
    ]
}


def default_data_root() -> Path:
    """``$FL_SIM_DATA_ROOT`` if set, else ``Path("data")`` (relative to the cwd)."""
    env = os.environ.get("FL_SIM_DATA_ROOT")
    return Path(env).expanduser() if env else Path("data")


def dataset_names() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(SPECS)


def _root(root: str | Path | None) -> Path:
    return (Path(root).expanduser() if root is not None else default_data_root()).absolute()


def _spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise DataError(
            one_line(f"unknown dataset {name!r}; known: {', '.join(SPECS)}")
        ) from None


def dataset_status(root: str | Path | None = None) -> list[dict]:
    """One dict per dataset: name, display_name, found (bool), path (str), format (str).

    ``path`` is the file or directory that was found, else the first place looked at.
    """
    r = _root(root)
    out = []
    for s in SPECS.values():
        found, cands = s.locate(r)
        if not cands:  # bundled data (digits)
            found_flag, path = True, "(bundled with scikit-learn)"
        else:
            found_flag, path = found is not None, str(found or cands[0])
        out.append({"name": s.name, "display_name": s.display_name, "found": found_flag,
                    "path": path, "format": s.format})
    return out


def locate_dataset(name: str, root: str | Path | None = None, **options) -> tuple[Path | None, dict]:
    """Check ``name``'s options and find its files without reading them: (the file or
    directory found, None for bundled data; the loader's options). DataError, one line,
    when the options are unknown or the files are not there."""
    spec = _spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise DataError(one_line(
            f"{name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(spec.options) or 'none'}"
        ))
    opts = {**spec.options, **options}
    subset = opts.get("subset")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise DataError(f"{name}: subset must be a positive integer or None, got {subset!r}")
    r = _root(root)
    found = None
    if spec.candidates(r):
        if opts.get("path") is not None:  # an explicit file or directory overrides the search
            p = Path(opts["path"]).expanduser().absolute()
            found = p if spec.exists(p) else None
            cands = [p]
        else:
            found, cands = spec.locate(r)
        if found is None:
            looked = " (or ".join(str(c) for c in cands) + ")" * (len(cands) - 1)
            raise fail(name, "file not found", looked, spec.format)
    opts.pop("path", None)
    return found, opts


def load_dataset(name: str, root: str | Path | None = None, **options) -> Dataset:
    """Load dataset ``name`` from ``root`` (default: ``default_data_root()``).

    Common option: ``subset=N`` keeps N deterministic records (which ones depends on the
    dataset; see its loader). Unknown names, unknown options, and missing, truncated or
    malformed files raise DataError with a one-line message.
    """
    found, opts = locate_dataset(name, root, **options)
    spec = _spec(name)
    module, fn = spec.loader.split(":")
    loader = getattr(importlib.import_module(f"{__package__}.{module}"), fn)
    return loader(spec, found, **opts)


def take_subset(spec: DatasetSpec, x: np.ndarray, y: np.ndarray, subset: int | None, path: object):
    """The first ``subset`` records (all when None); DataError if there are fewer.

    When x is a cached memory map, the prefix gets its own cache files: a slice of a
    memmap keeps the full file's ``filename``, and clients that re-open arrays by file
    name must find exactly the records of this Dataset there.
    """
    if subset is None or subset == len(y):
        return x, y
    if subset > len(y):
        raise fail(spec.name, f"subset={subset} exceeds the {len(y)} records in", path, spec.format)
    full_dir = Path(x.filename).parent if getattr(x, "filename", None) else None
    if full_dir is None:
        return x[:subset], y[:subset]
    from .cache import cached_arrays

    return cached_arrays(full_dir.name, f"first{subset}", lambda: (x[:subset], y[:subset]))
