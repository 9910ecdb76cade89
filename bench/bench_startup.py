"""Federation start-up: a fresh Ray session and fresh actors (Flower's own behaviour: its Ray
backend shuts Ray down after every simulation) against the actors kept from the previous
federation of the same process (``fl_sim.federation``), side by side.

Run from the repository root:
    python bench/bench_startup.py [--rounds 2] [--reps 5]

Each repeat trains the same tiny federation (digits, 4 x 30 records, FC net) twice: once
after ``shutdown_ray()`` (cold: ``ray.init``, 4 actors importing torch and Flower) and once
right after it (warm: the kept actors), in alternating order. It prints the median seconds
of each, their ratio, and the median time to the end of round 1 (the start-up). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from fl_sim import federation  # noqa: E402
from fl_sim.experiment import run_experiment  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402


def one_federation(rounds: int) -> tuple[float, float]:
    """(seconds to the end of round 1, seconds for the whole federation)."""
    cfg = tiny_config(federation__rounds=rounds)
    marks: list[float] = []
    original = federation.run_federation

    def timed(**kw):
        kw["on_round"] = lambda r: marks.append(time.perf_counter())
        return original(**kw)

    federation.run_federation = timed
    try:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run_experiment(cfg, Path(d) / "run", progress=False)
            total = (marks[-1] if marks else time.perf_counter()) - t0
    finally:
        federation.run_federation = original
    return marks[0] - t0, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    cold, warm = [], []
    for rep in range(args.reps):
        order = ("cold", "warm") if rep % 2 == 0 else ("warm", "cold")
        for kind in order:
            if kind == "cold":
                federation.shutdown_ray()
            (cold if kind == "cold" else warm).append(one_federation(args.rounds))
            print(f"rep {rep} {kind}: round 1 done at {(cold if kind == 'cold' else warm)[-1][0]:.1f} s, "
                  f"federation {(cold if kind == 'cold' else warm)[-1][1]:.1f} s", flush=True)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in (("cold", cold), ("warm", warm))}
    print(f"\nmedian of {args.reps}, {args.rounds} rounds each (seconds):")
    print(f"  fresh Ray + actors : start-up {med['cold'][0]:6.1f}   federation {med['cold'][1]:6.1f}")
    print(f"  kept actors        : start-up {med['warm'][0]:6.1f}   federation {med['warm'][1]:6.1f}")
    print(f"  ratio fresh / kept : {med['cold'][1] / med['warm'][1]:.1f}x")


if __name__ == "__main__":
    main()
