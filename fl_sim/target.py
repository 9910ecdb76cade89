"""The target as every stage sees it: the dataset's arrays (memory-mappable files for the
Flower clients), the model spec, the initial parameters, and measured accuracy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from fl_sim.config import Config
from fl_sim.errors import ConfigError
from fl_sim.models import ModelSpec, get_arrays, model_from
from fl_sim.splits import Split
from fl_sim.training import evaluate


@dataclass
class Data:
    """The dataset as the runner sees it: memory-mappable arrays plus metadata."""
    name: str
    display_name: str
    x: np.ndarray
    y: np.ndarray
    x_path: str
    y_path: str
    num_classes: int
    input_shape: tuple[int, ...]


def _npy_path(x: np.ndarray, name: str, kind: str) -> str:
    """A file the Flower clients can memory-map: the loader's cache file when x already is
    one, otherwise a content-addressed copy in the cache directory."""
    fn = getattr(x, "filename", None)
    if fn:
        return str(fn)
    from fl_sim.data import cache_dir
    from fl_sim.data.cache import save_atomic

    arr = np.ascontiguousarray(x)
    digest = hashlib.sha256(arr.tobytes()).hexdigest()[:16]
    path = cache_dir() / "arrays" / f"{name}-{kind}-{digest}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(path, arr, arr.dtype)
    return str(path)


def load_data(cfg: Config) -> Data:
    from fl_sim.data import load_dataset

    ds = load_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)
    return Data(name=ds.name, display_name=ds.display_name, x=ds.x, y=ds.y,
                x_path=_npy_path(ds.x, ds.name, "x"), y_path=_npy_path(ds.y, ds.name, "y"),
                num_classes=ds.num_classes, input_shape=tuple(ds.input_shape))


def check_names(cfg: Config) -> None:
    """Dataset and model names, which the schema cannot check without the registries."""
    from fl_sim.data import dataset_names
    from fl_sim.models import model_names

    if cfg.data.name not in dataset_names():
        raise ConfigError(f"data.name: unknown dataset {cfg.data.name!r}; valid: "
                          f"{', '.join(dataset_names())}")
    if cfg.model.name not in model_names():
        raise ConfigError(f"model.name: unknown model {cfg.model.name!r}; valid: "
                          f"{', '.join(model_names())}")


def model_spec(cfg: Config, data: Data) -> ModelSpec:
    return ModelSpec(cfg.model.name, tuple(data.input_shape), data.num_classes,
                     dict(cfg.model.options))


def initial_arrays(cfg: Config, data: Data) -> dict[str, np.ndarray]:
    """The target's initial parameters: a function of ``cfg.seed`` alone."""
    torch.manual_seed(cfg.seed)
    return get_arrays(model_spec(cfg, data).build())


def measure(cfg: Config, data: Data, split: Split, arrays: dict[str, np.ndarray],
            train_idx: list[int]) -> dict:
    """Accuracy (fractions) of ``arrays`` on ``train_idx`` and on the split's test records."""
    model = model_from(model_spec(cfg, data), arrays)
    tr = np.asarray(sorted(train_idx), dtype=np.int64)
    te = np.asarray(sorted(split.test), dtype=np.int64)
    _, train_acc = evaluate(model, data.x[tr], data.y[tr])
    _, test_acc = evaluate(model, data.x[te], data.y[te])
    return {"train_acc": float(train_acc), "test_acc": float(test_acc)}


def make_run_split(cfg: Config, n_records: int) -> Split:
    from fl_sim.splits import make_split

    parts = cfg.federation.participants if cfg.federation.mode == "federated" else 1
    return make_split(n_records, parts, cfg.data.records_per_participant,
                      cfg.attack.known_fraction, cfg.seed)
