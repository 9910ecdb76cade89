#!/usr/bin/env bash
# Issue item 3: what the gradient-ascent push does to whom, and the normalised ascent (each
# target record's gradient at unit norm, beyond the paper) against the paper's sum rule,
# over gamma, on Location-30 (configs/location30_fc.yaml; the stand-in for Texas100).
# Run from the repository root with the data in ../shared/data. Every victim in turn
# (compare rotates attack.victims), 3 seeds. The push measurements land in each seed's
# results.json (settings.<federation>.push) and figure_data.json (pushes); summarise.py
# tabulates them. The normalised step's push is about 20 times smaller than the sum
# rule's at the same gamma on this model (measured: README.md), hence the range.
# Not run in full on the 2-core machine (estimated 8 hours); README.md says what was.
set -euo pipefail
OUT=${OUT:-results/ascent_push}
fl-sim compare configs/location30_fc.yaml --seeds 3 --out "$OUT" --overwrite --no-progress \
  --keep-snapshots passive \
  --attacks global_passive,global_gradient_ascent,global_gradient_ascent_normalized \
  --sweep attack.gamma=1e-5,1e-4,1e-3,1e-2
python docs/results/ascent_push/summarise.py "$OUT" > "$OUT/table.md"
