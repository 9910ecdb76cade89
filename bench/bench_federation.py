"""The federation against a plain sequential torch loop doing the same training, and the
passive attacker's capture against plain FedAvg, side by side.

Run from the repository root (Location-30 in ../shared/data):
    python bench/bench_federation.py [--config configs/location30_fc.yaml] [--rounds 20 60] [--reps 3]

For each round count it runs, interleaved and ``--reps`` times:
  loop     one process, participants one after another, the clients' own local training
           (same seeds, the clients' torch threads: one core), FedAvg by hand: the floor a
           federation is measured against;
  loopall  the same loop with one torch thread per core: the floor on the whole machine
           (the federation trains its participants side by side on every core);
  fedavg   Flower's simulation on Ray with plain FedAvg (no attacker, nothing recorded);
  flowerpoll  the same with Flower's own 0.1 s message polling (fl_sim.federation polls
           every POLL_INTERVAL_S): what the prompt polling saves;
  capture  the same with the passive global attacker recording every upload and aggregate
           (snapshots under the config's keep_rounds) — what `fl-sim run` trains.
It prints the median end-to-end seconds, start-up (time to the end of round 1 minus one
steady round) and steady-state round (median of rounds 3..R), and the ratios from this one
run. It checks that the loop's final model equals capture's (FedAvg identity, float
rounding). Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from fl_sim import federation as fl_federation  # noqa: E402
from fl_sim.catalog import TRAININGS  # noqa: E402
from fl_sim.config import load_config  # noqa: E402
from fl_sim.models import get_arrays, model_from  # noqa: E402
from fl_sim.runtime import client_seed, threads_for  # noqa: E402
from fl_sim.target import initial_arrays, load_data, make_run_split, model_spec  # noqa: E402
from fl_sim.training import train_epochs  # noqa: E402


def plain_loop(cfg, data, split, threads: int | None = None) -> tuple[list[float], dict]:
    fed, spec = cfg.federation, model_spec(cfg, data)
    torch.set_num_threads(threads or max(1, threads_for(fed.num_cpus)))
    glob, marks, t0 = initial_arrays(cfg, data), [], time.perf_counter()
    parts = [(np.asarray(data.x[idx], np.float32), np.asarray(data.y[idx], np.int64))
             for idx in (np.asarray(t, np.int64) for t in split.train)]
    for rnd in range(1, fed.rounds + 1):
        uploads, sizes = [], []
        for pid, (x, y) in enumerate(parts):
            model = model_from(spec, glob)
            torch.manual_seed(client_seed(cfg.seed, rnd, pid))
            train_epochs(model, x, y, epochs=fed.local_epochs, batch_size=fed.batch_size, lr=fed.lr,
                         momentum=fed.momentum, weight_decay=fed.weight_decay, seed=client_seed(cfg.seed, rnd, pid))
            uploads.append(get_arrays(model))
            sizes.append(len(y))
        w = np.asarray(sizes, np.float64) / sum(sizes)
        glob = {k: sum(wi * u[k].astype(np.float64) for wi, u in zip(w, uploads)).astype(uploads[0][k].dtype)
                for k in uploads[0]}
        marks.append(time.perf_counter() - t0)
    return marks, glob


def federation(cfg, data, split, capture: bool) -> tuple[list[float], dict | None]:
    from fl_sim import defense
    from fl_sim.federated import train_federated, write_plans
    from fl_sim.federation import quiet_flwr, run_federation
    from fl_sim.snapshots import SnapshotStore

    run_dir = Path(tempfile.mkdtemp(prefix="bench-fed-"))
    marks, t0 = [], time.perf_counter()

    def tick(*_):
        marks.append(time.perf_counter() - t0)

    if capture:
        train_federated(cfg, TRAININGS["passive"], data, split, run_dir, tick)
        final = SnapshotStore(run_dir / "snapshots" / "passive").get(cfg.federation.rounds, None, "global")
        shutil.rmtree(run_dir)
        return marks, final
    plan_path, _ = write_plans(cfg, TRAININGS["passive"], data, split, run_dir, "plain")
    with quiet_flwr():
        strategy = defense.inner_strategy(cfg)
    fed = cfg.federation
    run_federation(strategy=strategy, plan_path=str(plan_path), participants=fed.participants, rounds=fed.rounds,
                   initial_arrays=initial_arrays(cfg, data), num_cpus=fed.num_cpus, num_gpus=0.0,
                   round_timeout_s=fed.round_timeout_s, on_round=tick)
    shutil.rmtree(run_dir)
    return marks, None


def summary(marks: list[float]) -> tuple[float, float, float]:
    steps = np.diff([0.0] + marks)
    steady = float(np.median(steps[2:])) if len(steps) > 2 else float(steps[-1])
    return marks[-1], marks[0] - steady, steady


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/location30_fc.yaml")
    ap.add_argument("--rounds", type=int, nargs="+", default=[20, 60])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    for rounds in args.rounds:
        cfg = load_config(args.config, [f"federation.rounds={rounds}", "attack.names=[global_passive]"])
        data = load_data(cfg)
        split = make_run_split(cfg, len(data.y))
        res = {"loop": [], "loopall": [], "fedavg": [], "flowerpoll": [], "capture": []}
        for _ in range(args.reps):
            marks, loop_final = plain_loop(cfg, data, split)
            res["loop"].append(summary(marks))
            res["loopall"].append(summary(plain_loop(cfg, data, split, threads=os.cpu_count())[0]))
            res["fedavg"].append(summary(federation(cfg, data, split, capture=False)[0]))
            prompt, fl_federation.POLL_INTERVAL_S = fl_federation.POLL_INTERVAL_S, None
            try:
                res["flowerpoll"].append(summary(federation(cfg, data, split, capture=False)[0]))
            finally:
                fl_federation.POLL_INTERVAL_S = prompt
            marks, fed_final = federation(cfg, data, split, capture=True)
            res["capture"].append(summary(marks))
            diff = max(float(np.abs(loop_final[k].astype(np.float64) - fed_final[k]).max()) for k in loop_final)
        med = {k: [statistics.median(v[i] for v in vals) for i in range(3)] for k, vals in res.items()}
        print(f"{cfg.data.name}, {cfg.model.name}, {cfg.federation.participants} participants, {rounds} rounds, "
              f"median of {args.reps} (seconds: total / start-up / steady round):")
        for k, (tot, start, steady) in med.items():
            print(f"  {k:10s} {tot:7.1f} / {start:5.1f} / {steady:.3f}")
        print(f"  federation (capture) / loop: total {med['capture'][0] / med['loop'][0]:.2f}x, steady round "
              f"{med['capture'][2] / med['loop'][2]:.2f}x; against the loop on every core: total "
              f"{med['capture'][0] / med['loopall'][0]:.2f}x, steady {med['capture'][2] / med['loopall'][2]:.2f}x; "
              f"capture / fedavg: total "
              f"{med['capture'][0] / med['fedavg'][0]:.2f}x, steady {med['capture'][2] / med['fedavg'][2]:.2f}x; "
              f"Flower's polling / prompt polling: steady {med['flowerpoll'][2] / med['fedavg'][2]:.2f}x; "
              f"max |loop - federation| final model {diff:.1e}")


if __name__ == "__main__":
    main()
