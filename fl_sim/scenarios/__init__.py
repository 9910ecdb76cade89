"""The scenario layer: runs the attacks of the catalog (:mod:`fl_sim.catalog`) on a run's
snapshots. ``run_attacks`` is what the experiment runner and ``fl-sim attack`` call.

An evaluator is chosen by the scenario's ``evaluate`` and ``observer``; evaluators
return the metrics of :func:`attacks.metrics.membership_metrics` plus what they observed,
or ``{"skipped": reason}``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from fl_sim import catalog
from fl_sim.config import Config
from fl_sim.scenarios.calibrated import evaluate_calibrated_uploads
from fl_sim.scenarios.common import AttackContext
from fl_sim.scenarios.defended import defense_block
from fl_sim.scenarios.federated import evaluate_received, evaluate_uploads
from fl_sim.scenarios.standalone import TargetView, evaluate_lira, evaluate_shadow, evaluate_target
from fl_sim.splits import Split
from fl_sim.standalone import target_threads
from fl_sim.target import Data

FEDERATED_EVALUATORS = {
    ("whitebox", "uploads"): evaluate_uploads,
    ("whitebox", "received"): evaluate_received,
    ("calibrated_uploads", "uploads"): evaluate_calibrated_uploads,
}
TARGET_EVALUATORS = {"whitebox": evaluate_target, "shadow": evaluate_shadow,
                     "lira": evaluate_lira}


def applicable(cfg: Config) -> list[catalog.Scenario]:
    """The configured attacks that apply to the run's mode; the others are skipped with a
    note on stderr (a config may list attacks for several modes)."""
    mode, out = cfg.federation.mode, []
    for name in cfg.attack.names:
        s = catalog.get(name)
        if mode in s.modes:
            out.append(s)
        else:
            print(f"fl-sim: note: attack {name} does not apply to federation.mode={mode}; "
                  "skipped", file=sys.stderr)
    return out


def _federated(ctx: AttackContext, scenarios, on_done) -> list[dict]:
    """Each attack, or why the defense leaves it nothing to observe (never a number then);
    under a defense each result carries it (``defense``: what was observed, the accountant's
    epsilon that covers this attacker) beside the attack's ``empirical_epsilon``."""
    results = []
    defended = bool(ctx.cfg.defense.parts())
    for s in scenarios:
        torch.manual_seed(ctx.cfg.seed)
        t0 = time.time()
        why = s.not_observable(ctx.cfg.defense.name)
        if why is not None:
            res = {"not_observable": why, "skipped": why}
        else:
            res = FEDERATED_EVALUATORS[(s.evaluate, s.observer)](ctx, s)
        if defended:
            res["defense"] = defense_block(ctx, s)
        results.append({"name": s.name, **res})
        on_done(s.name, time.time() - t0)
    return results


def _standalone(ctx: AttackContext, scenarios, on_done) -> list[dict]:
    if not scenarios:
        return []
    results = []
    with target_threads(ctx.cfg):
        torch.manual_seed(ctx.cfg.seed)
        view = TargetView(ctx)
        for s in scenarios:
            t0 = time.time()
            res = TARGET_EVALUATORS[s.evaluate](view, s)
            results.append({"name": s.name, **res})
            on_done(s.name, time.time() - t0)
    return results


def run_attacks(cfg: Config, data: Data, split: Split, run_dir: Path,
                on_done=lambda name, seconds: None) -> list[dict]:
    """Every applicable attack of ``attack.names`` on the run's snapshots, in order; one
    dict per attack: ``{"name", **metrics, ...}`` or ``{"name", "skipped"}``.
    ``on_done(name, seconds)`` is called after each (progress, timing)."""
    ctx = AttackContext(cfg, data, split, Path(run_dir))
    scenarios = applicable(cfg)
    if cfg.federation.mode == "federated":
        return _federated(ctx, scenarios, on_done)
    return _standalone(ctx, scenarios, on_done)
