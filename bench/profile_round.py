"""Where a federation round's time goes: py-spy samples the driver and every Ray process of
one passive federation (what `fl-sim run` trains first), and the samples are summed by
process kind (driver, participant actor, Ray's own) and by phase of a round.

Run from the repository root (Location-30 in ../shared/data; needs py-spy):
    python bench/profile_round.py [--config configs/location30_fc.yaml] [--rounds 20] [--rate 100]

The CPU seconds of each process kind are read from /proc around the profiled federation
(Ray's own C++ processes, raylet and GCS, included); py-spy's samples of busy Python
threads split them into phases. The wall time per round is printed beside them. The
first federation of a process pays Ray's and the actors' start-up: the script trains a
2-round federation first and samples only the next one, so that the profile is of steady rounds, as a
sweep's later federations run them. Not a test.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run without installing

from procs import children  # noqa: E402  (bench/, the script's own directory)

# (phase, frame substrings): the first phase whose substring occurs in a stack wins, so the
# specific phases come before the ones that contain them
PHASES = [
    ("local training: forward/backward/step", ("train_epochs (",)),
    ("participant: plan and data (load, memory-map)", ("ClientPlan.load", "load_array", "np.load", "open_memmap")),
    ("participant: model rebuild and array conversion", ("model_from", "get_arrays", "arrays_to_record",
                                                          "record_to_arrays", "ArrayRecord", "from_numpy")),
    ("snapshots: write (safetensors, sha256, index)", ("SnapshotStore.put", "SnapshotStore.roll")),
    ("aggregation (FedAvg)", ("aggregate_train", "aggregate_arrayrecords", "aggregate_fit")),
    ("imports", ("_find_and_load",)),
    # every actor's stack starts in Ray's worker loop: this phase is what is left there
    ("Ray and Flower plumbing (messages, serialisation, scheduling)", ("ray/", "flwr/", "protobuf", "pickle")),
]


# py-spy's own idle test misses Ray's waits (a blocked thread looks busy): a sample whose
# innermost frame is one of these waits is dropped. The CPU seconds come from /proc instead,
# and the samples only split them into phases.
WAITS = ("threading.py", "queue.py", "selectors.py", "base_events.py", "ray/_private/worker.py:1039",
         "ray/_private/worker.py:2980", "ray/_private/worker.py:2452", "inmemory_grid.py:177",
         "monitor.py:593", "log_monitor.py:614", "process_watcher.py:137", "default_worker.py:323")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ray_processes() -> dict[int, str]:
    """pid -> kind of this driver's Ray processes (its children and theirs)."""
    found, todo = {}, children(os.getpid())
    while todo:
        pid = todo.pop()
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[pid] = "participant actors" if "ClientAppActor" in cmd else "Ray's own processes"
        todo += children(pid)
    return found


def _summed(raw: Path) -> list[tuple[str, int]]:
    out = []
    if raw.exists():
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [f for f in stack.split(";") if f.strip()]
            if count.isdigit() and frames and not any(w in frames[-1] for w in WAITS):
                out.append((stack, int(count)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/location30_fc.yaml")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("profile_round.py needs py-spy (pip install py-spy)")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from fl_sim.catalog import TRAININGS
    from fl_sim.config import load_config
    from fl_sim.federated import train_federated
    from fl_sim.target import load_data, make_run_split

    cfg = load_config(args.config, [f"federation.rounds={args.rounds}", "attack.names=[global_passive]"])
    data = load_data(cfg)
    split = make_run_split(cfg, len(data.y))
    warm = load_config(args.config, ["federation.rounds=2", "attack.names=[global_passive]", "attack.epochs=[2]"])
    tmp = Path(tempfile.mkdtemp(prefix="bench-prof-"))
    try:
        # the warm-up federation starts Ray and the actors, which the profiled one reuses
        train_federated(warm, TRAININGS["passive"], data, split, tmp / "warm")
        procs = {os.getpid(): "driver (strategy, snapshots)", **_ray_processes()}
        # --nonblocking: sampling must not pause the processes it measures
        spies = {pid: subprocess.Popen(["py-spy", "record", "--nonblocking", "--pid", str(pid),
                                        "--rate", str(args.rate), "--format", "raw", "-o", str(tmp / f"{pid}.txt")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid in procs}
        time.sleep(2)  # py-spy attaches
        cpu0 = {pid: _cpu_s(pid) for pid in procs}
        marks, t0 = [], time.time()
        train_federated(cfg, TRAININGS["passive"], data, split, tmp / "run", lambda *_: marks.append(time.time()))
        cpu = collections.Counter()
        for pid, k in procs.items():
            cpu[k] += _cpu_s(pid) - cpu0[pid]
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            spy.wait(timeout=60)
        samples, by_phase = collections.Counter(), collections.Counter()
        for pid, k in procs.items():
            for stack, n in _summed(tmp / f"{pid}.txt"):
                samples[k] += n
                by_phase[(k, next((name for name, subs in PHASES if any(s in stack for s in subs)), "other"))] += n
    finally:
        if not os.environ.get("KEEP_PROFILE"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)
    wall = marks[-1] - t0
    steps = sorted(b - a for a, b in zip([t0] + marks, marks))
    total = sum(cpu.values())
    print(f"{args.config}, {args.rounds} rounds after a warm-up federation (actors kept): wall {wall:.1f} s, "
          f"median round {steps[len(steps) // 2]:.3f} s; CPU {total:.1f} s "
          f"({total / args.rounds:.3f} CPU-s a round, {total / wall:.2f} cores busy on average)")
    for k, c in cpu.most_common():
        print(f"  {k:30s} {c / args.rounds:6.3f} CPU-s a round ({100 * c / total:4.1f} %; "
              f"{samples[k] / args.rate:.1f} s of busy samples against {c:.1f} s of CPU)")
        for (kk, phase), n in by_phase.most_common():
            if kk == k and samples[k] and n / samples[k] >= 0.02:
                print(f"      {phase:52s} {100 * n / samples[k]:5.1f} % of its samples")


if __name__ == "__main__":
    main()
