#!/usr/bin/env bash
# Issue 9, item 10: Table X (victims rotated over all four participants, 3 seeds) and
# Table XII (epoch sets) on the Fashion-MNIST stand-in (Purchase100 construction),
# configs/fmnist100_fc.yaml. Run from the repository root with the data in ../shared/data.
set -euo pipefail  # MODE=--resume continues a killed run
OUT=${OUT:-results/fmnist100_fc}
fl-sim compare configs/fmnist100_fc.yaml --seeds 3 --out "$OUT" "${MODE:---overwrite}" --no-progress \
  --keep-snapshots passive \
  --attacks global_passive,global_gradient_ascent,global_isolating,global_isolating_gradient_ascent,local_passive,local_gradient_ascent,local_gradient_ascent_boosted
fl-sim compare configs/fmnist100_fc.yaml --seeds 3 --out "$OUT/epochs" "${MODE:---overwrite}" --no-progress \
  --attacks global_passive \
  --epoch-sets 40 --epoch-sets 36,40 --epoch-sets 32,36,40 --epoch-sets 16,24,32,36,40 \
  --epoch-sets 8,16,24,32,40 --epoch-sets 4,8,12,16,20,24,28,32,36,40
