"""Experiment runner: config -> data + split -> the trainings the catalog says the attacks
need (federated or stand-alone) -> snapshots -> attacks (the scenario layer) ->
results.json + report (report.md, report.html, figures/, tables/) and run.log.

``run_experiment`` is what ``fl-sim run`` calls. The run directory is complete only when
``results.json`` exists; it is written last.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from fl_sim import catalog
from fl_sim.config import Config, dump_config, load_config
from fl_sim.errors import ConfigError, FlSimError
from fl_sim.io import atomic_write_bytes, read_json, write_json
from fl_sim.report import figdata, write_report
from fl_sim.report.progress import LOG, AttackProgress, Progress, progress_mode, run_log, warn
from fl_sim.rundir import default_run_dir, prepare_run_dir, set_status
from fl_sim.scenarios import run_attacks
from fl_sim.scenarios.common import watching
from fl_sim.splits import Split
from fl_sim.target import Data, check_names, load_data, make_run_split
from fl_sim.training import resolve_device


def preflight(cfg: Config) -> None:
    """Everything ``run`` checks before it trains, without training: names, the device, the
    strategy and its options against Flower's class, the data files. ``validate``, ``run``
    (before the run directory exists), and sweeps and defense matrices (for every value
    before the first one trains) call it. ConfigError / DataError, one line."""
    from fl_sim.data import locate_dataset
    from fl_sim.models import model_options

    check_names(cfg)
    if unknown := sorted(set(cfg.model.options) - set(model_options(cfg.model.name))):
        raise ConfigError(f"model.options: {', '.join(unknown)} not taken by model {cfg.model.name} "
                          f"(it takes {', '.join(model_options(cfg.model.name)) or 'no options'})")
    resolve_device(cfg.federation.device)
    fed, cores = cfg.federation, os.cpu_count() or 1
    if fed.mode == "federated" and not (fed.ray_address or os.environ.get("RAY_ADDRESS")) and fed.num_cpus > cores:
        # Ray would wait for an actor it can never place, then crash the simulation
        raise ConfigError(f"federation.num_cpus={fed.num_cpus:g}: a participant's share cannot exceed this "
                          f"machine's {cores} CPU cores")
    if fed.mode == "federated":
        from fl_sim.defense import inner_strategy
        from fl_sim.federation import quiet_flwr

        with quiet_flwr():  # Flower warns about settings fl-sim chose (fraction_evaluate=0)
            inner_strategy(cfg)
    locate_dataset(cfg.data.name, cfg.data.root, **cfg.data.options)


def open_run(cfg: Config | None, out, overwrite: bool, resume: bool) -> tuple[Config, Path]:
    """The run directory, new (with ``cfg`` saved as config.yaml) or resumed (with its own
    config); also what the Flower-runtime ServerApp (fl_sim.flower_app) opens."""
    if resume:
        run_dir = prepare_run_dir(Path(out), resume=True)
        cfg = load_config(run_dir / "config.yaml")
        preflight(cfg)
        return cfg, run_dir
    preflight(cfg)
    run_dir = Path(out or cfg.output.dir or default_run_dir(cfg.data.name, cfg.model.name))
    prepare_run_dir(run_dir, overwrite=overwrite)
    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    return cfg, run_dir


def _link_passive(src: Path, run_dir: Path) -> None:
    """Hard-link (copy across file systems) ``src``'s split and passive snapshots into
    ``run_dir``: snapshot files are only ever replaced, never written in place."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copy2(src / "split.json", run_dir / "split.json")
    shutil.copytree(src / "snapshots" / "passive", run_dir / "snapshots" / "passive", copy_function=link)


def run_split(cfg: Config, data: Data, run_dir: Path) -> Split:
    """The run's split: split.json when it exists (a resumed run), else a new one, saved."""
    path = run_dir / "split.json"
    if path.exists():
        return Split.load(path)
    split = make_run_split(cfg, len(data.y))
    split.save(path)
    return split


def _train(cfg: Config, data: Data, split: Split, run_dir: Path, progress: Progress,
           timing: dict) -> tuple[dict, dict]:
    """The trainings the attacks need; returns (target accuracies, per-training results)."""
    trainings = catalog.trainings_needed(cfg.attack.names, cfg.federation.mode)
    if cfg.federation.mode != "federated":
        from fl_sim.standalone import run_standalone

        t = time.time()
        target = run_standalone(cfg, data, split, run_dir)
        timing["train_s"] = time.time() - t
        progress.say(f"{cfg.federation.mode} training: {timing['train_s']:.1f} s")
        return target, {}
    from fl_sim.federated import runs_of, train_federated

    done: dict[str, dict] = {}
    rounds = progress.rounds(cfg.federation.rounds)
    try:
        for training in trainings:
            for name, run_cfg in runs_of(cfg, training):
                t = time.time()
                rounds.begin(name)
                done[name] = train_federated(run_cfg, training, data, split, run_dir, rounds.tick, name)
                timing[f"train_{name}_s"] = time.time() - t
    finally:
        rounds.close()
    return {k: done["passive"][k] for k in ("train_acc", "test_acc")}, done


def _attack(cfg: Config, data: Data, split: Split, run_dir: Path, progress: Progress,
            timing: dict, trainings: dict | None = None) -> list[dict]:
    """Every attack of the run, with progress, timing, and the figure data the report's
    per-record figures need (with the active trainings' per-record push measurements),
    saved now: the snapshots may not outlive the run."""
    recorder, shown = figdata.Recorder(cfg), AttackProgress(progress, cfg)

    def on_done(name: str, seconds: float) -> None:
        timing[f"attack_{name}_s"] = seconds
        recorder.finish(name)
        shown.done(name, seconds)

    def watch(event: str, **info) -> None:
        recorder(event, **info)
        shown(event, **info)

    t = time.time()
    try:
        with watching(watch):
            attacks = run_attacks(cfg, data, split, run_dir, on_done)
    finally:
        shown.close()
    timing["attack_s"] = time.time() - t
    pushes = {name: t["push_records"] for name, t in (trainings or {}).items() if "push_records" in t}
    figdata.save(run_dir, recorder.data(attacks, pushes))
    return attacks


def report_or_warn(run_dir: Path, results: dict) -> str | None:
    """Write the run's report; a failure is logged with its traceback in run.log and
    announced on stderr, never silent, and returned (None when the report was written).
    The results stay valid: ``fl-sim report RUN_DIR`` retries from them."""
    try:
        write_report(run_dir, results)
    except Exception as e:  # the attack numbers must survive a broken figure
        LOG.exception("report not written")
        msg = f"{type(e).__name__}: {e}"
        warn(f"report not written ({msg}); results.json is complete; retry with: fl-sim report {run_dir}")
        return msg
    LOG.info("report written: %s", Path(run_dir) / "report.html")
    return None


def _results(cfg: Config, data: Data, target: dict, trainings: dict, attacks: list,
             timing: dict) -> dict:
    failures = [dict(f, setting=name) for name, s in trainings.items() for f in s["failures"]]
    keys = ("train_acc", "test_acc", "victim", "push", "snapshot_bytes", "dp_epsilon", "defense", "not_run")
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
                   overwrite: bool = False, resume: bool = False, progress: bool = True,
                   passive_from: Path | None = None) -> dict:
    """Run one experiment into ``out`` (default: output.dir, else runs/<stamp>-...).
    With ``resume``, ``out`` is a killed run's directory and its own config is used.

    ``progress``: bars (on a terminal) or one line per stage (elsewhere); False: quiet.
    The returned results carry ``report_error`` when the report could not be written
    (results.json does not: the report can be rebuilt).

    ``passive_from``: a finished run of the same passive federation (a sweep over attack
    settings that do not change it); its split and passive snapshots are linked in, not
    retrained."""
    t0 = time.time()
    if cfg is not None and cfg.federation.mode == "federated":
        from fl_sim.federation import join_ray_cluster

        # a cluster that is not there fails now, with one line, before the run directory exists
        join_ray_cluster(cfg.federation.ray_address, cfg.federation.ray_connect_timeout_s)
    cfg, run_dir = open_run(cfg, out, overwrite, resume)
    if passive_from is not None and not resume:
        _link_passive(Path(passive_from), run_dir)
    with run_log(run_dir):
        LOG.info("run %s: %s, %s, seed %s, attacks %s", run_dir, cfg.data.name, cfg.model.name, cfg.seed,
                 ", ".join(cfg.attack.names) or "none")
        set_status(run_dir, state="running")
        shown = Progress(progress_mode(progress))
        if cfg.federation.mode == "federated":
            from fl_sim.federation import cluster_address

            if (address := cluster_address(cfg.federation.ray_address)) is not None:
                shown.tell(f"the participants run on the Ray cluster at {address}")
        data = load_data(cfg)
        split = run_split(cfg, data, run_dir)
        timing: dict[str, float] = {"load_s": time.time() - t0}
        target, trainings = _train(cfg, data, split, run_dir, shown, timing)
        attacks = _attack(cfg, data, split, run_dir, shown, timing, trainings)
        timing["total_s"] = time.time() - t0  # a resumed run counts its own time only
        results = _results(cfg, data, target, trainings, attacks, timing)
        error = report_or_warn(run_dir, results)
        write_json(run_dir / "results.json", results)
        set_status(run_dir, state="complete", report="written" if error is None else f"failed: {error}")
        LOG.info("complete in %.1f s", timing["total_s"])
    return results if error is None else {**results, "report_error": error}


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
