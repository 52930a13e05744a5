#!/bin/bash
# auto_LiRPA (CROWN, alpha-CROWN) on the properties tether verify guard exports, beside tether's exact MILP:
#  A. the 60 properties the world figures export (5 per head, epsilon 0.01: the heads of run_embedding.sh and
#     run_static.sh, retrained by the same commands into RUNS_DIR);
#  B. 20 more per embedding head at epsilon 0.04, where CROWN leaves some open (120).
# Usage: bash docs/results/verify/run_auto_lirpa.sh RUNS_DIR
#   (needs the heads: run_embedding.sh / run_static.sh's tether guard train commands, with --out RUNS_DIR/...)
# Writes docs/results/verify/auto_lirpa-{export,eps0.04}.json
set -euo pipefail
runs=${1:-runs/verify}
here=$(dirname "$0")
a=(); b=()
for seed in 0 1 2; do
  for head in embedding-normal embedding-ibp static-normal static-ibp-swaps; do
    eps='[0,0.005,0.01,0.02,0.04]'; [[ $head == static-* ]] && eps='[0,0.005,0.01,0.02]'
    tether verify guard "$runs/$head-$seed" --set world_seed=$seed --set n=200 --set "epsilons=$eps" \
      --set 'budgets=[0]' --out "$runs/props-$head-$seed"
    a+=("$runs/props-$head-$seed/properties")
    if [[ $head == embedding-* ]]; then
      tether verify guard "$runs/$head-$seed" --set world_seed=$seed --set n=200 --set 'epsilons=[0.04]' \
        --set 'budgets=[0]' --set export=20 --set export_epsilon=0.04 --out "$runs/props04-$head-$seed"
      b+=("$runs/props04-$head-$seed/properties")
    fi
  done
done
python "$here/auto_lirpa.py" "${a[@]}" --out "$here/auto_lirpa-export.json"
python "$here/auto_lirpa.py" "${b[@]}" --out "$here/auto_lirpa-eps0.04.json"
