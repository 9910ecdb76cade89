"""One federated training of the target under one :class:`~fl_sim.catalog.Training`
(passive, gradient ascent, isolation...): plan -> resume point -> strategy -> Flower on
Ray -> measured target.

Snapshots land in ``<run>/snapshots/<training>/``. Resuming picks up after the last round
whose aggregate was stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fl_sim import defense
from fl_sim.catalog import Training
from fl_sim.config import Config
from fl_sim.errors import SnapshotError
from fl_sim.io import read_json, write_json
from fl_sim.models import get_arrays, model_from
from fl_sim.plan import ClientPlan, LocalAttackPlan, place_in_run, plan_files
from fl_sim.push import measure_pushes
from fl_sim.runtime import threads_for
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import Split, target_sets
from fl_sim.target import Data, initial_arrays, measure, model_spec
from fl_sim.training import resolve_device


def local_attacker_of(cfg: Config) -> int:
    """The malicious participant: the last one."""
    return cfg.federation.participants - 1


def others_of(cfg: Config) -> list[int]:
    """The participants whose records the local attacker infers."""
    return [p for p in range(cfg.federation.participants) if p != local_attacker_of(cfg)]


def runs_of(cfg: Config, training: Training) -> list[tuple[str, Config]]:
    """(snapshot directory name, config) of every federation ``training`` needs: one, or,
    when an aggregator's active attack rotates its victim (``attack.victims``), one per
    victim, each with that victim as ``attack.target_participant``."""
    if not (training.isolate or training.global_ascent) or cfg.attack.victims == "target":
        return [(training.name, cfg)]
    return [(f"{training.name}-victim{v}", cfg.for_victim(v)) for v in cfg.victims()]


def keep_rounds(cfg: Config) -> list[int] | None:
    kr = cfg.federation.keep_rounds
    if kr == "all":
        return None
    if kr == "attack":
        epochs = set(cfg.attack_epochs())
        # and the aggregator's pushes with the model each started from, to measure them
        # (fl_sim.push); by default they are the attack epochs, kept anyway
        pushes = set(cfg.ascent_rounds())
        return sorted(epochs | {e - 1 for e in epochs if e > 1} | {e + 1 for e in epochs}
                      | pushes | {r - 1 for r in pushes if r > 1})
    return sorted(kr)


@dataclass
class _Resume:
    start: int                                   # rounds already done
    init: dict[str, np.ndarray]                  # the parameters to continue from
    failures: list[dict] = field(default_factory=list)
    previous_uploads: dict[int, dict] = field(default_factory=dict)


def write_plans(cfg: Config, training: Training, data: Data, split: Split,
                run_dir: Path, name: str) -> tuple[Path, dict[int, str]]:
    """The honest participants' plan and the local attacker's own; returns their paths."""
    fed = cfg.federation
    store_dir = run_dir / "snapshots" / name
    plan = ClientPlan(
        # the participants read only what is in the run directory (fl_sim.plan)
        store_dir=str(store_dir), x_path=place_in_run(run_dir, data.x_path),
        y_path=place_in_run(run_dir, data.y_path),
        input_shape=list(data.input_shape), num_classes=data.num_classes,
        model_name=cfg.model.name, model_options=dict(cfg.model.options), train=split.train,
        local_epochs=fed.local_epochs, batch_size=fed.batch_size, lr=fed.lr,
        momentum=fed.momentum, weight_decay=fed.weight_decay, seed=cfg.seed,
        threads=threads_for(fed.num_cpus), device=fed.device, fail={str(k): v for k, v in fed.fail.items()},
        keep_rounds=keep_rounds(cfg), record_received=fed.record_received,
        dp=({"noise_multiplier": cfg.defense.noise_multiplier,
             "max_grad_norm": cfg.defense.max_grad_norm} if "dp_sgd" in cfg.defense.parts() else None),
        mods=defense.client_mods(cfg),
        local_dp=defense.local_dp_params(cfg) if "local_dp" in cfg.defense.parts() else None,
        array_keys=list(initial_arrays(cfg, data)),
    )
    plan_path, attack_path = plan_files(run_dir, name)
    plan_path.parent.mkdir(exist_ok=True)
    plan.save(plan_path)
    if fed.participants < 2:
        return plan_path, {}
    attacker = local_attacker_of(cfg)
    active = training.local_ascent
    attack = LocalAttackPlan(
        participant=attacker, active=active,
        targets=target_sets(split, others_of(cfg)).all_indices().tolist() if active else [],
        ascent_rounds=cfg.ascent_rounds(local=True) if active else [], gamma=cfg.attack.gamma,
        boost=float(fed.participants) if training.local_boost else 1.0)
    attack.save(attack_path)
    return plan_path, {attacker: str(attack_path)}


def resume_point(cfg: Config, data: Data, store: SnapshotStore, failures_path: Path) -> _Resume:
    """Where this training continues: after the last stored aggregate that is whole (or from
    scratch). An operating-system crash may have left the latest snapshots empty (they are
    written without fsync) and an index empty: the index is rebuilt from the files first."""
    store.recover()
    victim = cfg.attack.target_participant
    start, init, previous = 0, None, {}
    for rnd in reversed(store.rounds("global")):
        try:
            init = store.get(rnd, None, "global")
            previous = ({victim: store.get(rnd, victim, "upload")}
                        if store.find(rnd, victim, "upload") else {})
        except SnapshotError:  # damaged: the round before it is where the run continues
            continue
        start = rnd
        break
    failures = read_json(failures_path) if failures_path.exists() else []
    failures = [f for f in failures if f["round"] <= start]
    store.drop_after(start)
    if not start:
        return _Resume(0, initial_arrays(cfg, data), failures)
    return _Resume(start, init, failures, previous)


def ascent_step(cfg: Config, data: Data, split: Split, normalized: bool = False):
    """The aggregator's gradient-ascent step on the victim's target records:
    (arrays) -> arrays pushed up their loss (``normalized``: each record's gradient at unit
    norm). The targets are the victim's known and evaluation members and as many of the
    split's non-members; the non-members are the same records whatever the victim."""
    from attacks.active import gradient_ascent, normalized_gradient_ascent

    targets = target_sets(split, [cfg.attack.target_participant]).all_indices()
    tx, ty = data.x[targets], data.y[targets]
    spec = model_spec(cfg, data)
    dev = resolve_device(cfg.federation.device)
    push = normalized_gradient_ascent if normalized else gradient_ascent

    def step(arrays):
        model = model_from(spec, arrays).to(dev)
        push(model, tx, ty, cfg.attack.gamma)
        return get_arrays(model)

    return step


def attacker_settings(cfg: Config, training: Training, data: Data, split: Split):
    from strategies.attacker import AttackerSettings

    return AttackerSettings(
        isolate=training.isolate, ascent=training.global_ascent,
        victim=cfg.attack.target_participant, ascent_rounds=set(cfg.ascent_rounds()),
        isolate_rounds=set(cfg.isolate_rounds()),
        ascent_fn=ascent_step(cfg, data, split, training.normalized) if training.global_ascent else None,
        record_clipped="central_dp_server" in cfg.defense.parts(),
        noise_seed=cfg.seed if defense.server_noise(cfg) else None)


def make_strategy(cfg: Config, training: Training, data: Data, split: Split,
                  store: SnapshotStore, resume: _Resume, failures_path: Path):
    """The global attacker around the server-side defenses around the learning algorithm:
    ``GlobalAttacker(central DP wrapper(FedAvg or a robust aggregator))``."""
    from fl_sim.federation import quiet_flwr
    from strategies.attacker import GlobalAttacker

    # FedAvg warns that client-side evaluation is off: it is meant to be.
    with quiet_flwr():
        inner = defense.server_wrapped(cfg, defense.inner_strategy(cfg))

    def on_round_end(rnd: int, _arrays) -> None:
        write_json(failures_path, resume.failures + strategy.failures)

    strategy = GlobalAttacker(inner, store, cfg.federation.participants, attacker_settings(cfg, training, data, split),
                              round_offset=resume.start, previous_uploads=resume.previous_uploads,
                              on_round_end=on_round_end)
    return strategy


def make_secagg_strategy(cfg: Config, training: Training, data: Data, split: Split,
                         store: SnapshotStore, resume: _Resume, failures_path: Path):
    """The aggregator under SecAgg+: a legacy FedAvg inside ``SecAggObserver``."""
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    from clients.secagg import ROUND_KEY
    from fl_sim.federation import quiet_flwr
    from strategies.secagg import SecAggObserver

    n = cfg.federation.participants
    with quiet_flwr():
        inner = LegacyFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                             min_available_clients=n, on_fit_config_fn=lambda rnd: {ROUND_KEY: rnd})

    def on_round_end(rnd: int, _arrays) -> None:
        write_json(failures_path, resume.failures + strategy.failures)
        write_json(store.dir / "secagg-held.json", strategy.held)

    # the legacy parameter order, as the clients' plan has it (a resumed snapshot's may differ)
    strategy = SecAggObserver(inner, store, n, list(initial_arrays(cfg, data)), resume.init,
                              attacker_settings(cfg, training, data, split), round_offset=resume.start,
                              on_round_end=on_round_end)
    return strategy


def measure_training(cfg: Config, data: Data, split: Split, store: SnapshotStore,
                     failures_path: Path, training: Training | None = None) -> dict:
    """Target accuracy after the last round, failures, disk use and DP epsilon; with an
    aggregator that pushed (``training``), what each push did to the targets
    (``push``: per-group summaries, ``push_records``: the per-record values)."""
    final_round = max(store.rounds("global"), default=0)
    if final_round < cfg.federation.rounds:
        raise RuntimeError(f"federation {store.dir.name} stopped after round {final_round} "
                           f"of {cfg.federation.rounds}")
    all_train = [i for part in split.train for i in part]
    out = measure(cfg, data, split, store.get(final_round, None, "global"), all_train)
    victim = cfg.attack.target_participant
    if store.find(final_round, victim, "upload") is not None:  # the model the victim holds
        mine = measure(cfg, data, split, store.get(final_round, victim, "upload"),
                       split.train[victim])
        out["victim"] = {"participant": victim, **mine}
    out["failures"] = read_json(failures_path) if failures_path.exists() else []
    if training is not None and (pushes := measure_pushes(cfg, training, data, split, store)) is not None:
        out["push"], out["push_records"] = pushes
    out["snapshot_bytes"] = store.size_bytes()
    if "dp_sgd" in cfg.defense.parts():
        from clients.dp import cumulative_epsilon

        out["dp_epsilon"] = {str(p): cumulative_epsilon(store.dir, p)
                             for p in range(cfg.federation.participants)}
    if cfg.defense.parts():
        held = store.dir / "secagg-held.json"
        out["defense"] = defense.summary(cfg, store.dir, final_round,
                                         {"secagg_held": read_json(held)} if held.exists() else None)
    return out


class Prepared(NamedTuple):
    """A federation ready to run (or to measure, when its rounds are all done)."""
    store: SnapshotStore
    failures_path: Path
    plan_path: Path
    attacker_plans: dict[int, str]
    resume: _Resume
    strategy: object       # GlobalAttacker, or SecAggObserver under SecAgg+


def prepare_federation(cfg: Config, training: Training, data: Data, split: Split,
                       run_dir: Path, name: str) -> Prepared:
    """Everything before the rounds: the snapshot store, the plan files, the resume point
    and the strategy. ``train_federated`` runs it on Flower's simulation engine; the
    Flower-runtime ServerApp (``fl_sim.flower_app``) on the grid Flower gives it."""
    # written by a background thread: the next round does not wait for this one's snapshots
    store = SnapshotStore(run_dir / "snapshots" / name, keep_rounds=keep_rounds(cfg), background=True,
                          within=run_dir)
    failures_path = store.dir / "failures.json"
    try:
        plan_path, attacker_plans = write_plans(cfg, training, data, split, run_dir, name)
        resume = resume_point(cfg, data, store, failures_path)
        secagg = "secagg" in cfg.defense.parts()
        strategy = (make_secagg_strategy if secagg else make_strategy)(cfg, training, data, split, store, resume,
                                                                      failures_path)
    except BaseException:
        store.close()  # its thread; raises nothing over the error that stopped the preparation
        raise
    return Prepared(store, failures_path, plan_path, attacker_plans, resume, strategy)


def train_federated(cfg: Config, training: Training, data: Data, split: Split,
                    run_dir: Path, progress=None, name: str | None = None) -> dict:
    """Train the federation under ``training`` into ``snapshots/<name>`` (default: the
    training's name); returns target accuracy and failures, or ``{"not_run": reason}`` when
    the defense makes the training impossible (isolation under SecAgg+).

    ``progress(name, round)`` is called after every round."""
    fed, name = cfg.federation, name or training.name
    if (why := training.not_runnable(cfg.defense.name)) is not None:
        return {"not_run": why, "failures": []}
    store, failures_path, plan_path, attacker_plans, resume, strategy = prepare_federation(
        cfg, training, data, split, run_dir, name)
    secagg = "secagg" in cfg.defense.parts()
    try:
        if fed.rounds > resume.start:
            _run_rounds(cfg, split, plan_path, attacker_plans, resume, strategy, secagg, progress, name)
    finally:  # the rounds done stay on disk for a resume, whatever stopped the run; a write
        store.close()  # that failed is raised here, unless another error is already on its way
    return measure_training(cfg, data, split, store, failures_path, training)


def _run_rounds(cfg: Config, split: Split, plan_path: Path, attacker_plans: dict[int, str], resume: _Resume,
                strategy, secagg: bool, progress, name: str) -> None:
    """The rounds after ``resume.start`` on Flower's simulation engine."""
    from fl_sim.federation import run_federation, run_secagg_federation

    fed = cfg.federation
    common = dict(strategy=strategy, plan_path=str(plan_path), participants=fed.participants,
                  rounds=fed.rounds - resume.start, attacker_plans=attacker_plans, num_cpus=fed.num_cpus,
                  num_gpus=0.0 if fed.device == "cpu" and fed.num_gpus is None else fed.num_gpus,
                  round_timeout_s=fed.round_timeout_s, ray_address=fed.ray_address,
                  ray_connect_timeout_s=fed.ray_connect_timeout_s,
                  on_round=(lambda r: progress(name, r + resume.start)) if progress else None)
    if secagg:
        run_secagg_federation(secagg=defense.secagg_params(cfg, max(len(t) for t in split.train)), **common)
    else:
        run_federation(initial_arrays=resume.init, **common)
