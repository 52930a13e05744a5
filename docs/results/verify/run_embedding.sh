#!/bin/bash
# The world guard's head (all-MiniLM-L6-v2 embeddings, one ReLU layer of 64), trained normally and with IBP at
# epsilon 0.02, on worlds 0, 1 and 2; each certified and attacked by tether verify guard on 200 held-out rows.
# Usage: bash docs/results/verify/run_embedding.sh RUNS_DIR   (writes docs/results/verify/embedding-*.json)
set -euo pipefail
runs=${1:-runs/verify}
here=$(dirname "$0")
for seed in 0 1 2; do
  for variant in normal ibp; do
    extra=()
    [ "$variant" = ibp ] && extra=(--set certify=ibp --set epsilon=0.02)
    tether guard train --config guard/world --set world_seed=$seed --set hidden=64 "${extra[@]}" \
      --out "$runs/embedding-$variant-$seed"
    tether verify guard "$runs/embedding-$variant-$seed" --set world_seed=$seed --set n=200 \
      --set 'epsilons=[0,0.005,0.01,0.02,0.04]' --set 'budgets=[0,1,2,3]' --out "$runs/verify-embedding-$variant-$seed"
    cp "$runs/verify-embedding-$variant-$seed/certify.json" "$here/embedding-$variant-world$seed.json"
  done
done
