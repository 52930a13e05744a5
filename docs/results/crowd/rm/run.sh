#!/bin/bash
# Reward models on the crowd's labels three ways (raw, majority, Dawid-Skene), three seeds, world 0.
cd /work/main
for s in 0 1 2; do
  for v in raw majority aggregated; do
    [ -f /tmp/rmx/rm-$v-$s/metrics.json ] && continue
    /usr/bin/time -f "%e s" .venv/bin/tether train rm --config rm/world --set data.train=/tmp/rmx/crowd-$s/$v.jsonl \
      --set seed=$s --out /tmp/rmx/rm-$v-$s > /tmp/rmx/rm-$v-$s.log 2>&1
  done
done
