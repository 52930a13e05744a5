#!/bin/bash
# What made the files beside this one (run from the repository root; the runs were written under /tmp/rmx,
# here runs/). The crowd's labels of 1000 pairs of world 0, three draws; a reward model (rm/world) on each
# of raw.jsonl (every label a row), majority.jsonl and aggregated.jsonl (Dawid-Skene); record.json holds
# each run's summary (eval_gold_agreement: agreement with gold on builtin:world-preferences-eval).
set -e
for s in 0 1 2; do
  tether experiment crowd --set pairs=1000 --set seed=$s --out runs/crowd-$s
  for v in raw majority aggregated; do
    tether train rm --config rm/world --set data.train=runs/crowd-$s/$v.jsonl --set seed=$s --out runs/rm-$v-$s
  done
done
