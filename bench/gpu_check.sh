#!/usr/bin/env bash
# GPU check (issue 12): on a machine with a CUDA GPU, from the repository root:
#
#   bash bench/gpu_check.sh            # installs, then ~5 rounds of cifar100_alexnet on the GPU
#
# It writes synthetic CIFAR-100 in torchvision's format (random images: a throughput check,
# not an accuracy one), runs configs/cifar100_alexnet.yaml for a few rounds with 4
# participants sharing the GPU (federation.device=cuda, 1/4 GPU each), samples nvidia-smi
# while it runs, and prints rounds per second, GPU utilisation and white-box feature
# throughput. DEVICE=cpu ROUNDS=2 PER=50 runs the same path on a CPU (a smoke test of the
# script). Nothing is written outside $WORK (default: a temporary directory).
set -euo pipefail
DEVICE=${DEVICE:-cuda}
ROUNDS=${ROUNDS:-5}
PER=${PER:-2000}            # records per participant
WORK=${WORK:-$(mktemp -d)}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || make setup >/dev/null
"$PY" - "$WORK/data" "$PER" <<'EOF'
import sys
from pathlib import Path
from tests.data_formats import write_cifar100
root, per = Path(sys.argv[1]), int(sys.argv[2])
write_cifar100(root, n_train=4 * per, n_test=2 * per)
EOF
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$WORK/smi.csv" &
  SMI=$!
fi
START=$(date +%s.%N)
"$PY" -m fl_sim.cli run configs/cifar100_alexnet.yaml --out "$WORK/run" --overwrite --no-progress \
  --set data.root="$WORK/data" --set data.records_per_participant="$PER" --set data.options.verify_md5=false \
  --set federation.rounds="$ROUNDS" --set "attack.epochs=[$((ROUNDS - 1)),$ROUNDS]" \
  --set federation.device="$DEVICE" --set federation.num_cpus=2 \
  --set 'attack.names=[global_passive]' --set attack.epochs_attack_model=2 > "$WORK/out.txt" 2>&1 \
  || { tail -20 "$WORK/out.txt"; exit 1; }
END=$(date +%s.%N)
[ -n "${SMI:-}" ] && kill "$SMI"
"$PY" - "$WORK" "$ROUNDS" "$START" "$END" "$DEVICE" <<'EOF'
import json, re, sys
from pathlib import Path
work, rounds, start, end = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
r = json.loads((work / "run" / "results.json").read_text())
t = r["timing"]
print(f"federation.device={sys.argv[5]}; 4 participants; wall {end - start:.0f} s (install and data excluded)")
print(f"federation: {rounds} rounds in {t['train_passive_s']:.1f} s "
      f"({rounds / t['train_passive_s']:.3f} rounds/s, start-up included)")
log = (work / "run" / "run.log").read_text()
m = re.search(r"features of (\d+) snapshot\(s\) in ([\d.]+) s", log)
a = r["attacks"][0]
n = a["n_members"] + a["n_nonmembers"]
if m:
    snaps, secs = int(m.group(1)), float(m.group(2))
    print(f"features: {snaps} snapshots in {secs:.1f} s; ~{n * snaps / secs:.0f} records/s "
          f"(evaluation records only; the known ones come on top)")
smi = work / "smi.csv"
if smi.exists() and smi.read_text().strip():
    rows = [[float(v) for v in line.split(",")] for line in smi.read_text().split("\n") if line.strip()]
    util = sorted(u for u, _ in rows)
    print(f"GPU utilisation over {len(rows)} s: median {util[len(util) // 2]:.0f} %, "
          f"max {util[-1]:.0f} %; memory used max {max(m for _, m in rows):.0f} MiB")
else:
    print("GPU utilisation: n/a (no nvidia-smi)")
print(f"target: train {r['target']['train_acc']:.3f}, test {r['target']['test_acc']:.3f} (random images)")
EOF
