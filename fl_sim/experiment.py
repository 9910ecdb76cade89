"""Scenario runner: config → data + split → training (federated or stand-alone) → snapshots
→ attacks → results.json + report.

``run_experiment`` is what ``fl-sim run`` calls. The run directory is complete only when
``results.json`` exists; it is written last.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from fl_sim.config import Config, dump_config, load_config
from fl_sim.errors import ConfigError, FlSimError
from fl_sim.fedrun import SETTING_OF_ATTACK, SETTINGS, Data, run_setting
from fl_sim.rundir import (default_run_dir, prepare_run_dir, read_json, set_status,
                           write_json)
from fl_sim.snapshots import atomic_write_bytes
from fl_sim.splits import Split, make_split


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
    """Names the schema cannot check without importing the registries."""
    from fl_sim.data import dataset_names
    from fl_sim.models import model_names

    if cfg.data.name not in dataset_names():
        raise ConfigError(f"data.name: unknown dataset {cfg.data.name!r}; valid: "
                          f"{', '.join(dataset_names())}")
    if cfg.model.name not in model_names():
        raise ConfigError(f"model.name: unknown model {cfg.model.name!r}; valid: "
                          f"{', '.join(model_names())}")


def make_run_split(cfg: Config, n_records: int) -> Split:
    parts = cfg.federation.participants if cfg.federation.mode == "federated" else 1
    return make_split(n_records, parts, cfg.data.records_per_participant,
                      cfg.attack.known_fraction, cfg.seed)


def _progress(cfg: Config, enabled: bool):
    """A tqdm bar per federated setting, advanced once per round."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def tick(setting: str, rnd: int) -> None:
        bar = bars.get(setting)
        if bar is None:
            for other in bars.values():  # one federation at a time: finish the last bar
                other.close()
            bar = bars[setting] = tqdm(total=cfg.federation.rounds, desc=f"{setting} rounds",
                                       unit="round", file=sys.stderr, leave=True,
                                       initial=rnd - 1)
        bar.n = rnd
        bar.refresh()

    def close() -> None:
        for b in bars.values():
            b.close()

    return tick, close


def settings_needed(cfg: Config) -> list[str]:
    needed = ["passive"]
    for name in cfg.attack.names:
        s = SETTING_OF_ATTACK.get(name)
        if s and s not in needed:
            needed.append(s)
    return needed


def run_experiment(cfg: Config, out: str | Path | None = None, *, overwrite: bool = False,
                   resume: bool = False, progress: bool = True, echo=print) -> dict:
    """Run one experiment into ``out`` (default: output.dir, else runs/<stamp>-...)."""
    t0 = time.time()
    if resume:
        run_dir = prepare_run_dir(Path(out), resume=True)
        cfg = load_config(run_dir / "config.yaml")
    else:
        check_names(cfg)
        run_dir = Path(out or cfg.output.dir or default_run_dir(cfg.data.name, cfg.model.name))
        prepare_run_dir(run_dir, overwrite=overwrite)
        atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    set_status(run_dir, state="running")
    data = load_data(cfg)
    split_path = run_dir / "split.json"
    if split_path.exists():
        split = Split.load(split_path)
    else:
        split = make_run_split(cfg, len(data.y))
        split.save(split_path)
    timing: dict[str, float] = {"load_s": time.time() - t0}

    target: dict = {}
    settings: dict[str, dict] = {}
    if cfg.federation.mode == "federated":
        tick, close = _progress(cfg, progress)
        try:
            for name in settings_needed(cfg):
                t = time.time()
                settings[name] = run_setting(cfg, SETTINGS[name], data, split, run_dir, tick)
                timing[f"train_{name}_s"] = time.time() - t
        finally:
            close()
        target = {k: settings["passive"][k] for k in ("train_acc", "test_acc")}
    else:
        from fl_sim.standalone import run_standalone

        t = time.time()
        target = run_standalone(cfg, data, split, run_dir)
        timing["train_s"] = time.time() - t

    t = time.time()
    attacks = []
    if cfg.attack.names:
        from fl_sim.audit import run_attacks

        attacks = run_attacks(cfg, data, split, run_dir, echo=echo)
    timing["attack_s"] = time.time() - t
    timing["total_s"] = time.time() - t0  # a resumed run counts its own time only

    failures = [dict(f, setting=name) for name, s in settings.items() for f in s["failures"]]
    results = {
        "dataset": data.name,
        "dataset_display_name": data.display_name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "mode": cfg.federation.mode,
        "target": target,
        "settings": {k: {kk: v[kk] for kk in ("train_acc", "test_acc", "snapshot_bytes",
                                               "dp_epsilon") if kk in v}
                     for k, v in settings.items()},
        "attacks": attacks,
        "failures": failures,
        "timing": timing,
    }
    try:
        from fl_sim.report import write_report

        write_report(run_dir, results)
    except ImportError:
        pass
    write_json(run_dir / "results.json", results)
    set_status(run_dir, state="complete")
    return results


def reattack(run_dir: str | Path, overrides: list[str] = (), echo=print) -> dict:
    """Attack a finished run's snapshots again with other attack settings (no retraining)."""
    from fl_sim.audit import run_attacks

    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file():
        raise FlSimError(f"{run_dir}: not a complete run directory (no results.json)")
    cfg = load_config(run_dir / "config.yaml", overrides)
    for o in overrides:
        if not o.split("=", 1)[0].strip().startswith("attack."):
            raise ConfigError(f"--set {o}: only attack.* keys can change without retraining")
    data = load_data(cfg)
    split = Split.load(run_dir / "split.json")
    t = time.time()
    attacks = run_attacks(cfg, data, split, run_dir, echo=echo)
    results = read_json(run_dir / "results.json")
    return {"attacks": attacks, "attack_s": time.time() - t, "target": results["target"],
            "epochs": cfg.attack_epochs()}
