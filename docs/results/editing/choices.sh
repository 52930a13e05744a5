#!/usr/bin/env bash
# How the world configs' edit token, layers and MEMIT's λ were chosen: 15 single edits of world 0 each.
#   bash docs/results/editing/choices.sh && python docs/results/editing/choices.py > docs/results/editing/choices.json
set -euo pipefail
run() { name=$1; shift; tether edit "$@" --set limit=15 --set mode=independent --out "runs/choice-$name" > /dev/null; }
run rome-subject-0 rome --config rome/world --set layers=[0] --set token=subject
for layer in 0 1 2 3; do run "rome-last-$layer" rome --config rome/world --set "layers=[$layer]"; done
run memit-1000 memit --config memit/world --set preserve=1000
run memit-100 memit --config memit/world --set preserve=100
