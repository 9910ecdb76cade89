#!/usr/bin/env bash
# Issue 9, item 4: the active attacks' parameters measured on Location-30
# (configs/location30_fc.yaml), 3 seeds, victim participant 0 in every federation (the
# Table X run rotates the victim; these sweeps choose the parameters it uses).
# Run from the repository root with the data in ../shared/data.
set -euo pipefail  # MODE=--resume continues a killed run
OUT=${OUT:-results/location30_fc_sweeps}
COMMON=(--seeds 3 "${MODE:---overwrite}" --no-progress --keep-snapshots passive --set 'attack.victims=[0]')
# the ascent step per target record
fl-sim compare configs/location30_fc.yaml "${COMMON[@]}" --out "$OUT/gamma" \
  --attacks global_gradient_ascent --sweep attack.gamma=1e-6,1e-5,1e-4,1e-3
# when the isolating aggregator cuts the victim off: the whole run, from the first
# observed epoch (24) on (null: the default rule), or only the round before each observed
# epoch and that epoch
fl-sim compare configs/location30_fc.yaml "${COMMON[@]}" --out "$OUT/isolation" \
  --attacks global_isolating \
  --sweep "attack.isolate_rounds=[$(seq -s, 1 60)];null;[23,24,35,36,47,48,53,54,59,60]"
# when the aggregator pushes: the last observed epoch only, every observed epoch (default),
# every other round from the first observed epoch on
fl-sim compare configs/location30_fc.yaml "${COMMON[@]}" --out "$OUT/ascent_rounds" \
  --attacks global_gradient_ascent \
  --sweep "attack.ascent_rounds=[60];null;[$(seq -s, 24 2 60)]"
