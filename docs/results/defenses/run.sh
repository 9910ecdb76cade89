#!/usr/bin/env bash
# Issue 10: the defense x attacker matrix on Location-30 (configs/location30_fc.yaml), 3 seeds,
# victim participant 0 in every active federation (rotating the victim over 10 settings x 4
# federations x 3 seeds is beyond a 2-core machine). Each noisy mechanism at Flower's
# defaults (meaningful epsilon) and at a weak setting that keeps the model usable.
# Run from the repository root with the data in ../shared/data. Snapshots are deleted once
# a seed is attacked (results stay). Long (a SecAgg+ round takes ~15x a plain one): if it is
# killed, run it again with MODE=--resume to keep what is done. The defenses the issue names come
# first, SecAgg+ last of them; the weak-parameter variants after.
set -euo pipefail
OUT=${OUT:-results/defenses}
fl-sim compare configs/location30_fc.yaml --seeds 3 --out "$OUT" "${MODE:---overwrite}" --quiet \
  --keep-snapshots none --set 'attack.victims=[0]' \
  --attacks global_passive,global_gradient_ascent,global_isolating,local_passive,local_gradient_ascent_boosted \
  --defenses "none,central_dp_server,local_dp,robust,dp_sgd,secagg,central_dp_client:noise_multiplier=0.002,central_dp_server:noise_multiplier=0.002,local_dp:epsilon=5000,robust:aggregator=trimmed_mean"
