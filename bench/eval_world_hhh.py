"""Speed of the default ``world-hhh`` eval on the base model, and what batching buys.

Part 1 runs the default eval end to end (``tether eval`` defaults: 300 train + 100 held-out
prompts per family, 48 new tokens, temperature 1, batch 64) and reports wall time per phase.
Part 2 generates the same prompts at several batch sizes, interleaved in one process so
machine noise hits each alike, on a 140-prompt subset (every 20th prompt), with the speed-up over batch 1
(batch 1 on all 2,800 prompts would take minutes).

    python bench/eval_world_hhh.py
    python bench/eval_world_hhh.py --set model.path=world:tiny --set suite.n=5 --every 7 --batches 1,8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import emit

from tether.evals.run import EvalConfig, model_path_for, run
from tether.evals.world_hhh import WorldSuite
from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.loading import ModelConfig, load_model_and_tokenizer


def main() -> None:
    """Time the world-hhh evaluation of the base model (built before the clock starts)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override the eval config, as `tether eval --set`")
    parser.add_argument("--every", type=int, default=20, help="part 2: every Nth prompt of the suite")
    parser.add_argument("--batches", default="1,16,64,140", help="part 2: batch sizes, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the results here, with the machine and command")
    args = parser.parse_args()
    from tether.core.config import load_config

    cfg = load_config(EvalConfig, None, args.set)
    model_path = model_path_for(cfg)  # build outside the timing
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        doc = run(cfg.model_copy(update={"out": out}))
        total = time.perf_counter() - start
    default_eval = {"default_eval_wall_s": round(total, 2), "prompts": doc["n_prompts"],
                    "phases_s": {k: round(v, 2) for k, v in doc["timings"].items()}}
    print(json.dumps(default_eval))

    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=model_path))
    generator = HFGenerator(model, tokenizer)
    prompts = [p.prompt for p in WorldSuite(cfg.suite).prompts()][::args.every]
    times: dict[int, list[float]] = {int(b): [] for b in args.batches.split(",")}
    for _ in range(2):
        for batch in times:
            settings = GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=batch)
            start = time.perf_counter()
            generator.generate(prompts, settings)
            times[batch].append(time.perf_counter() - start)
    base = statistics.median(times[1])
    emit({
        "default_eval": default_eval,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                   f"{torch.__version__}, {torch.get_num_threads()} threads",
        "prompts": len(prompts),
        "seconds_by_batch": {b: round(statistics.median(t), 2) for b, t in times.items()},
        "speedup_over_batch_1": {b: round(base / statistics.median(t), 1) for b, t in times.items()},
    }, args.json)


if __name__ == "__main__":
    main()
