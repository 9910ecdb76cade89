"""Snapshot disk and peak memory against the number of rounds (and participants), with the
config's own ``keep_rounds`` (the default keeps the attack epochs, their neighbours and the
latest aggregate).

Run from the repository root (Location-30 in ../shared/data):
    python bench/bench_disk_memory.py [--config configs/location30_fc.yaml] [--rounds 20 60 100]
                                      [--participants 4]

Each size trains the passive federation (what `fl-sim run` trains first) in a fresh process
and reports the snapshot bytes on disk, bytes per round, the driver's peak RSS and the sum of
the participants' actors' peak RSS (VmHWM; the actors are the driver's Ray's, read before the
process exits). It then fits a line through peak memory against rounds and prints the slope:
memory flat in the rounds means a slope near 0 MB per round. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run without installing

from procs import children  # noqa: E402  (bench/, the script's own directory)


def _actors_peak_rss() -> int:
    """Sum of VmHWM over this driver's Ray actors (children of its raylet)."""
    total = 0
    for child in children(os.getpid()):
        for pid in children(child):
            try:
                if b"ClientAppActor" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines()
                          if line.startswith("VmHWM:"))
    return total


def one(config: str, rounds: int, participants: int) -> dict:
    from fl_sim.catalog import TRAININGS
    from fl_sim.config import load_config
    from fl_sim.federated import train_federated
    from fl_sim.snapshots import SnapshotStore
    from fl_sim.target import load_data, make_run_split

    cfg = load_config(config, [f"federation.rounds={rounds}", f"federation.participants={participants}",
                               "attack.names=[global_passive]"])
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    run_dir = Path(tempfile.mkdtemp(prefix="bench-disk-"))
    try:
        train_federated(cfg, TRAININGS["passive"], data, split, run_dir)
        store = SnapshotStore(run_dir / "snapshots" / "passive")
        disk = store.size_bytes()
        files = len(store.entries())
        actors = _actors_peak_rss()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"rounds": rounds, "participants": participants, "keep_rounds": str(cfg.federation.keep_rounds),
            "snapshot_bytes": disk, "snapshot_files": files, "bytes_per_round": disk / rounds,
            "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "actors_peak_rss": actors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/location30_fc.yaml")
    ap.add_argument("--rounds", type=int, nargs="+", default=[20, 60, 100])
    ap.add_argument("--participants", type=int, nargs="+", default=[4])
    ap.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # internal: ROUNDS PARTICIPANTS
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.config, *args.one)))
        return
    mb = 2 ** 20
    for n in args.participants:
        rows = []
        for r in args.rounds:
            out = subprocess.run([sys.executable, __file__, "--config", args.config, "--one", str(r), str(n)],
                                 capture_output=True, text=True, cwd=ROOT, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            x = rows[-1]
            print(f"{n} participants, {r:4d} rounds ({x['keep_rounds']}): snapshots {x['snapshot_bytes'] / mb:7.1f} MB "
                  f"in {x['snapshot_files']} files ({x['bytes_per_round'] / mb:.2f} MB/round), peak RSS driver "
                  f"{x['driver_peak_rss'] / mb:6.0f} MB, actors {x['actors_peak_rss'] / mb:6.0f} MB", flush=True)
        if len(rows) > 1:
            rs = np.array([x["rounds"] for x in rows], float)
            for key in ("driver_peak_rss", "actors_peak_rss", "snapshot_bytes"):
                slope = np.polyfit(rs, np.array([x[key] for x in rows], float) / mb, 1)[0]
                print(f"  {key}: {slope:+.2f} MB per round (line through {len(rows)} sizes)")


if __name__ == "__main__":
    main()
