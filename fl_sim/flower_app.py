"""The Flower app pair for Flower's own runtime: ``flwr run .`` (simulation) and a real
deployment (a SuperLink and one SuperNode per participant). ``pyproject.toml`` declares
them in ``[tool.flwr.app.components]``; docs/flower-runtime.md shows the commands.

``serverapp`` is configured from ``context.run_config`` (defaults in
``[tool.flwr.app.config]``, overridden with ``flwr run . --run-config 'key=value ...'``):

- ``config``: the fl-sim YAML config; "" is the packaged default. A relative path is looked
  up in the app's directory first (the FAB carries ``configs/*.yaml``), then in the
  ServerApp process's working directory.
- ``run-dir``: the run directory; "" is ``output.dir`` of the config, else
  ``runs/<stamp>-<data>-<model>``. Relative paths (and a relative ``data.root``) are
  resolved in the ServerApp process's working directory, which for ``flwr run`` is the
  SuperLink's: give absolute paths. It must be new or empty, as for ``fl-sim run``.
- ``training``: which federated training(s) to run: a catalog name (``passive``, the
  default; ``global_isolating`` ...), several separated by commas, or ``needed``: every
  training the config's attacks need (what ``fl-sim run`` would train).
- ``rounds``: overrides ``federation.rounds`` (0: the config's).
- ``set``: further ``key=value`` overrides, as ``fl-sim run --set``, separated by ``;``.
- ``resume``: continue a killed run in ``run-dir`` with its own config.yaml (``config``,
  ``set`` and ``rounds`` must then stay at their defaults).

It prepares the run directory as ``fl-sim run`` does (config.yaml with the overrides
applied, split.json, plans), builds the same strategy (``fl_sim.federated.prepare_federation``:
the global attacker recording every upload into ``snapshots/<training>/``) and runs it on
the grid Flower gives it. Afterwards ``fl-sim run --resume RUN_DIR`` finds the trainings
done (it resumes after the last stored aggregate) and runs the attacks and the report.

``clientapp`` is module-level too: each train message names the run directory and the plan
(``clients.participant.runtime_client_app``); the participant is the node's
``partition-id`` (the simulation runtime sets it; SuperNodes take
``--node-config 'partition-id=I num-partitions=N'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from clients.participant import runtime_client_app
from fl_sim.errors import FlSimError

APP_DIR = Path(__file__).resolve().parents[1]   # where pyproject.toml is (the FAB or a checkout)
DEFAULTS = {"config": "", "run-dir": "", "training": "passive", "rounds": 0, "set": "", "resume": False}


@dataclass
class AppSettings:
    config: str
    run_dir: str
    trainings: list[str]
    rounds: int
    overrides: list[str]
    resume: bool


def settings_of(run_config: dict) -> AppSettings:
    """The ServerApp's settings from Flower's run config (unknown keys are an error)."""
    if unknown := sorted(set(run_config) - set(DEFAULTS)):
        raise FlSimError(f"run config: unknown keys {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    rc = {**DEFAULTS, **run_config}
    s = AppSettings(config=str(rc["config"]).strip(), run_dir=str(rc["run-dir"]).strip(),
                    trainings=[t.strip() for t in str(rc["training"]).split(",") if t.strip()],
                    rounds=int(rc["rounds"]),
                    overrides=[o.strip() for o in str(rc["set"]).split(";") if o.strip()],
                    resume=bool(rc["resume"]))
    if s.rounds < 0:
        raise FlSimError(f"run config: rounds={s.rounds}: 0 (the config's) or more")
    if not s.trainings:
        raise FlSimError("run config: training is empty")
    if s.resume and (s.config or s.overrides or s.rounds):
        raise FlSimError("run config: resume takes the run directory's own config; "
                         "leave config, set and rounds at their defaults")
    if s.resume and not s.run_dir:
        raise FlSimError("run config: resume needs run-dir")
    return s


def config_path(name: str) -> Path | None:
    """The YAML config ``name`` ("" is the packaged default: None); see the module doc."""
    if not name:
        return None
    p = Path(name).expanduser()
    if p.is_absolute():
        return p
    return APP_DIR / p if (APP_DIR / p).is_file() else p.resolve()


def trainings_of(names: list[str], cfg) -> list:
    """The catalog's Trainings the settings name (``needed``: the config's attacks')."""
    from fl_sim import catalog

    if cfg.federation.mode != "federated":
        raise FlSimError(f"federation.mode={cfg.federation.mode}: the Flower apps run federations only")
    out = []
    for name in names:
        if name == "needed":
            found = catalog.trainings_needed(cfg.attack.names, "federated")
        elif name in catalog.TRAININGS and catalog.TRAININGS[name].mode == "federated":
            found = [catalog.TRAININGS[name]]
        else:
            valid = [t.name for t in catalog.TRAININGS.values() if t.mode == "federated"]
            raise FlSimError(f"run config: training={name!r}: not a federated training; valid: "
                             f"{', '.join(valid)}, needed")
        out += [t for t in found if t not in out]
    return out


def train_on_grid(grid: Grid, settings: AppSettings) -> Path:
    """Open (or resume) the run directory and run every federation the settings ask for on
    ``grid``; returns the run directory."""
    from fl_sim.config import load_config
    from fl_sim.experiment import open_run, run_split
    from fl_sim.report.progress import LOG, run_log
    from fl_sim.rundir import default_run_dir, set_status
    from fl_sim.target import load_data

    if settings.resume:
        cfg, run_dir = open_run(None, Path(settings.run_dir).expanduser().resolve(), False, True)
    else:
        overrides = list(settings.overrides)
        if settings.rounds:
            overrides.append(f"federation.rounds={settings.rounds}")
        cfg = load_config(config_path(settings.config), overrides)
        out = Path(settings.run_dir or cfg.output.dir or default_run_dir(cfg.data.name, cfg.model.name))
        cfg, run_dir = open_run(cfg, out.expanduser().resolve(), False, False)
    trainings = trainings_of(settings.trainings, cfg)
    with run_log(run_dir):
        LOG.info("Flower runtime: run %s, trainings %s", run_dir, ", ".join(t.name for t in trainings))
        set_status(run_dir, state="training", runtime="flower")
        try:
            data = load_data(cfg)
            split = run_split(cfg, data, run_dir)
            done = [_federation(grid, cfg, t, data, split, run_dir) for t in trainings]
        except BaseException as e:
            LOG.exception("Flower runtime: training failed")
            set_status(run_dir, state="failed", error=f"{type(e).__name__}: {e}"[:500])
            raise
        set_status(run_dir, state="trained", runtime="flower", trained=[n for d in done for n in d],
                   next=f"fl-sim run --resume {run_dir}")
        LOG.info("Flower runtime: trained; attack with: fl-sim run --resume %s", run_dir)
    return run_dir


def wait_for_nodes(grid: Grid, participants: int, timeout_s: float) -> None:
    """Until one node per participant is connected (Flower's strategies would wait for ever);
    more nodes than participants is an error too (every node is asked to train)."""
    deadline = time.monotonic() + timeout_s
    while (have := len(list(grid.get_node_ids()))) < participants and time.monotonic() < deadline:
        time.sleep(1.0)
    if have != participants:
        raise FlSimError(f"{have} nodes connected for the config's {participants} participants: run one "
                         f"SuperNode per participant (--node-config 'partition-id=I num-partitions={participants}', "
                         f"I = 0..{participants - 1}), or flwr run with --federation-config "
                         f"'num-supernodes={participants}'")


def _federation(grid: Grid, cfg, training, data, split, run_dir: Path) -> list[str]:
    """Every federation of ``training`` (one, or one per victim) on ``grid``; returns their names."""
    from fl_sim.federated import measure_training, prepare_federation, runs_of
    from fl_sim.records import PLAN_KEY, RUN_DIR_KEY, arrays_to_record
    from fl_sim.report.progress import LOG

    names = []
    for name, run_cfg in runs_of(cfg, training):
        fed = run_cfg.federation
        if (why := training.not_runnable(run_cfg.defense.name)) is not None:
            LOG.info("Flower runtime: %s not run: %s", name, why)
            continue
        if "secagg" in run_cfg.defense.parts():
            raise FlSimError("defense secagg runs on Flower's legacy workflow, which these apps do not "
                             "wire; run it with fl-sim run")
        p = prepare_federation(run_cfg, training, data, split, run_dir, name)
        if fed.rounds > p.resume.start:
            def evaluate_fn(rnd: int, _arrays: ArrayRecord, name=name, start=p.resume.start, total=fed.rounds):
                if rnd > 0:
                    LOG.info("Flower runtime: %s round %d/%d done", name, rnd + start, total)
                return None

            wait_for_nodes(grid, fed.participants, fed.round_timeout_s)
            # the clients find their plan from these two keys (clients.participant.plan_of_message)
            try:
                p.strategy.start(grid=grid, initial_arrays=arrays_to_record(p.resume.init),
                                 num_rounds=fed.rounds - p.resume.start, timeout=fed.round_timeout_s,
                                 train_config=ConfigRecord({RUN_DIR_KEY: str(run_dir), PLAN_KEY: name}),
                                 evaluate_fn=evaluate_fn)
            finally:  # the rounds done stay on disk for a resume, whatever stopped the run
                p.store.close()
        # raises if rounds are missing
        result = measure_training(run_cfg, data, split, p.store, p.failures_path, training)
        LOG.info("Flower runtime: %s: train accuracy %.3f, test accuracy %.3f, %d failures", name,
                 result["train_acc"], result["test_acc"], len(result["failures"]))
        names.append(name)
    return names


serverapp = ServerApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    train_on_grid(grid, settings_of(dict(context.run_config)))


clientapp = runtime_client_app()
