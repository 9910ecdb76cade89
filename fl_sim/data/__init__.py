"""Datasets: a registry of loaders for the paper's data formats and real stand-ins.

    from fl_sim.data import load_dataset
    ds = load_dataset("location30", root="../shared/data")   # Dataset(x, y, ...)

See ``registry.py`` for the names and file layouts, ``cache.py`` for the parse-once cache.
"""

from .cache import cache_dir, cached_arrays
from .registry import Dataset, dataset_names, dataset_status, default_data_root, load_dataset, locate_dataset

__all__ = [
    "Dataset",
    "cache_dir",
    "cached_arrays",
    "dataset_names",
    "dataset_status",
    "default_data_root",
    "load_dataset",
    "locate_dataset",
]
