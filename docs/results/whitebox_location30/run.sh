#!/usr/bin/env bash
# Issue 9, item 8: is the white-box attack the strongest passive global attack on
# Location-30 (configs/location30_fc.yaml, 3 seeds)? Run from the repository root with
# the data in ../shared/data. OUT holds the runs (snapshots: ~0.6 GB a seed).
set -euo pipefail
OUT=${OUT:-results/whitebox_location30}
fl-sim compare configs/location30_fc.yaml --seeds 3 --out "$OUT" --overwrite --no-progress \
  --attacks global_passive,global_compact,global_compact_references,global_loss_threshold,global_calibrated
for run in "$OUT"/seed-*; do
  # the same snapshots, the white-box network with other inputs (no retraining)
  fl-sim attack "$run" --set 'attack.names=[global_passive]' --set attack.gradients=matrix \
    --set 'attack.network_inputs=[outputs,loss,label,gradients]' --out "$run/paper_network.md"
  fl-sim attack "$run" --set 'attack.names=[global_passive]' \
    --set 'attack.network_inputs=[outputs,loss,label,gradients,references]' --out "$run/all_inputs.md"
  fl-sim attack "$run" --set 'attack.names=[global_passive]' \
    --set 'attack.network_inputs=[loss,gradients]' --out "$run/no_references.md"
done
python docs/results/whitebox_location30/summarize.py "$OUT" > docs/results/whitebox_location30/table.md
