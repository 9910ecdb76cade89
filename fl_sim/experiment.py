"""Experiment runner: config -> data + split -> the trainings the catalog says the attacks
need (federated or stand-alone) -> snapshots -> attacks (the scenario layer) ->
results.json + report.

``run_experiment`` is what ``fl-sim run`` calls. The run directory is complete only when
``results.json`` exists; it is written last.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fl_sim import catalog
from fl_sim.config import Config, dump_config, load_config
from fl_sim.errors import ConfigError, FlSimError
from fl_sim.io import atomic_write_bytes, read_json, write_json
from fl_sim.rundir import default_run_dir, prepare_run_dir, set_status
from fl_sim.scenarios import run_attacks
from fl_sim.splits import Split
from fl_sim.target import Data, check_names, load_data, make_run_split


def _progress(cfg: Config, enabled: bool):
    """A tqdm bar per federated training, advanced once per round."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def tick(training: str, rnd: int) -> None:
        bar = bars.get(training)
        if bar is None:
            for other in bars.values():  # one federation at a time: finish the last bar
                other.close()
            bar = bars[training] = tqdm(total=cfg.federation.rounds, desc=f"{training} rounds",
                                        unit="round", file=sys.stderr, leave=True,
                                        initial=rnd - 1)
        bar.n = rnd
        bar.refresh()

    def close() -> None:
        for b in bars.values():
            b.close()

    return tick, close


def _open_run(cfg: Config | None, out, overwrite: bool, resume: bool) -> tuple[Config, Path]:
    if resume:
        run_dir = prepare_run_dir(Path(out), resume=True)
        return load_config(run_dir / "config.yaml"), run_dir
    check_names(cfg)
    run_dir = Path(out or cfg.output.dir or default_run_dir(cfg.data.name, cfg.model.name))
    prepare_run_dir(run_dir, overwrite=overwrite)
    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    return cfg, run_dir


def _split(cfg: Config, data: Data, run_dir: Path) -> Split:
    path = run_dir / "split.json"
    if path.exists():
        return Split.load(path)
    split = make_run_split(cfg, len(data.y))
    split.save(path)
    return split


def _train(cfg: Config, data: Data, split: Split, run_dir: Path, progress: bool,
           timing: dict) -> tuple[dict, dict]:
    """The trainings the attacks need; returns (target accuracies, per-training results)."""
    trainings = catalog.trainings_needed(cfg.attack.names, cfg.federation.mode)
    if cfg.federation.mode != "federated":
        from fl_sim.standalone import run_standalone

        t = time.time()
        target = run_standalone(cfg, data, split, run_dir)
        timing["train_s"] = time.time() - t
        return target, {}
    from fl_sim.federated import runs_of, train_federated

    done: dict[str, dict] = {}
    tick, close = _progress(cfg, progress)
    try:
        for training in trainings:
            for name, run_cfg in runs_of(cfg, training):
                t = time.time()
                done[name] = train_federated(run_cfg, training, data, split, run_dir, tick, name)
                timing[f"train_{name}_s"] = time.time() - t
    finally:
        close()
    return {k: done["passive"][k] for k in ("train_acc", "test_acc")}, done


def _attack_progress(cfg: Config, enabled: bool, timing: dict):
    """A bar over the attacks (when enabled); every attack's time goes to ``timing``."""
    bar = None
    if enabled and cfg.attack.names:
        from tqdm import tqdm

        bar = tqdm(total=len(cfg.attack.names), desc="attacks", unit="attack", file=sys.stderr)

    def done(name: str, seconds: float) -> None:
        timing[f"attack_{name}_s"] = seconds
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)

    return done, (bar.close if bar is not None else (lambda: None))


def _results(cfg: Config, data: Data, target: dict, trainings: dict, attacks: list,
             timing: dict) -> dict:
    failures = [dict(f, setting=name) for name, s in trainings.items() for f in s["failures"]]
    keys = ("train_acc", "test_acc", "victim", "snapshot_bytes", "dp_epsilon")
    return {
        "dataset": data.name,
        "dataset_display_name": data.display_name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "mode": cfg.federation.mode,
        "target": target,
        "settings": {k: {kk: v[kk] for kk in keys if kk in v} for k, v in trainings.items()},
        "attacks": attacks,
        "failures": failures,
        "timing": timing,
    }


def run_experiment(cfg: Config | None, out: str | Path | None = None, *,
                   overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """Run one experiment into ``out`` (default: output.dir, else runs/<stamp>-...).
    With ``resume``, ``out`` is a killed run's directory and its own config is used."""
    from fl_sim.report import write_report

    t0 = time.time()
    cfg, run_dir = _open_run(cfg, out, overwrite, resume)
    set_status(run_dir, state="running")
    data = load_data(cfg)
    split = _split(cfg, data, run_dir)
    timing: dict[str, float] = {"load_s": time.time() - t0}
    target, trainings = _train(cfg, data, split, run_dir, progress, timing)
    t = time.time()
    on_done, close = _attack_progress(cfg, progress, timing)
    try:
        attacks = run_attacks(cfg, data, split, run_dir, on_done)
    finally:
        close()
    timing["attack_s"] = time.time() - t
    timing["total_s"] = time.time() - t0  # a resumed run counts its own time only
    results = _results(cfg, data, target, trainings, attacks, timing)
    write_report(run_dir, results)
    write_json(run_dir / "results.json", results)
    set_status(run_dir, state="complete")
    return results


def reattack(run_dir: str | Path, overrides: list[str] = ()) -> dict:
    """Attack a finished run's snapshots again with other attack settings (no retraining)."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file():
        raise FlSimError(f"{run_dir}: not a complete run directory (no results.json)")
    for o in overrides:
        if not o.split("=", 1)[0].strip().startswith("attack."):
            raise ConfigError(f"--set {o}: only attack.* keys can change without retraining")
    cfg = load_config(run_dir / "config.yaml", overrides)
    data = load_data(cfg)
    split = Split.load(run_dir / "split.json")
    t = time.time()
    attacks = run_attacks(cfg, data, split, run_dir)
    results = read_json(run_dir / "results.json")
    return {"attacks": attacks, "attack_s": time.time() - t, "target": results["target"],
            "epochs": cfg.attack_epochs()}
