#!/bin/bash
# The world's static guard (token vectors distilled from all-MiniLM-L6-v2, IDF-weighted mean; one ReLU layer of
# 64), trained normally and with IBP against every text within one word swap (Jia et al. 2019), on worlds 0, 1
# and 2; each certified and attacked over swap budgets by tether verify guard on 200 held-out rows.
# Usage: bash docs/results/verify/run_static.sh RUNS_DIR   (writes docs/results/verify/static-*.json)
set -euo pipefail
runs=${1:-runs/verify}
here=$(dirname "$0")
for seed in 0 1 2; do
  for variant in normal ibp-swaps; do
    extra=()
    [ "$variant" = ibp-swaps ] && extra=(--set certify=ibp --set certify_swaps=1)
    tether guard train --config guard/world --set model=static --set world_seed=$seed --set hidden=64 "${extra[@]}" \
      --out "$runs/static-$variant-$seed"
    tether verify guard "$runs/static-$variant-$seed" --set world_seed=$seed --set n=200 \
      --set 'epsilons=[0,0.005,0.01,0.02]' --set 'budgets=[0,1,2,3]' --out "$runs/verify-static-$variant-$seed"
    cp "$runs/verify-static-$variant-$seed/certify.json" "$here/static-$variant-world$seed.json"
  done
done
