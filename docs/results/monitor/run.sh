#!/bin/sh
# The monitor's figures in the README and docs/monitor.md: false alarms on a million unshifted windows and
# detection delays for three shifts, in three worlds (2 to 3 minutes each on a 2-core CPU).
set -e
for seed in 0 1 2; do
  tether experiment drift --set world_seed=$seed --out runs/drift-$seed
  cp runs/drift-$seed/drift.json docs/results/monitor/drift_world$seed.json
  cp runs/drift-$seed/record.json docs/results/monitor/drift_world${seed}_record.json
done
