#!/usr/bin/env bash
# Issue 9, item 10: Table X (passive against active attacks, victims rotated over all four
# participants, 3 seeds) and Table XII (epoch sets) on Location-30, configs/location30_fc.yaml.
# Run from the repository root with the data in ../shared/data. Disk: the active
# federations of a seed (13 of them, ~0.6 GB each) are deleted once the seed is attacked.
set -euo pipefail
OUT=${OUT:-results/location30_fc}
fl-sim compare configs/location30_fc.yaml --seeds 3 --out "$OUT" --overwrite --no-progress \
  --keep-snapshots passive \
  --attacks global_passive,global_gradient_ascent,global_isolating,global_isolating_gradient_ascent,local_passive,local_gradient_ascent,local_gradient_ascent_boosted
# Table XII: the passive global attack on other epoch sets (its own passive federations,
# which keep the rounds of every set)
fl-sim compare configs/location30_fc.yaml --seeds 3 --out "$OUT/epochs" --overwrite --no-progress \
  --attacks global_passive \
  --epoch-sets 60 --epoch-sets 54,60 --epoch-sets 48,54,60 --epoch-sets 24,36,48,54,60 \
  --epoch-sets 12,24,36,48,60 --epoch-sets 6,12,18,24,30,36,42,48,54,60
