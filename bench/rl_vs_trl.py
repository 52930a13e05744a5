"""tether's GRPO against TRL's GRPOTrainer: steps/s including generation, and rollout tokens/s.

Same start weights (a random Llama saved as an HF directory), same prompts (the world's task
prompts, chat-formatted), same reward (a rule: minus the completion's share of the token
budget, cheap on both sides so the comparison is about the trainers), same settings: group
size, completions per step, completion budget, temperature 1 with no top-k / top-p, one
update per rollout, clipped surrogate with ε = 0.2, token-mean loss (TRL's ``dapo``), k3 KL
with β = 0.04 to a frozen reference, group-std advantages, AdamW at a constant learning rate,
gradient clipping at 1.0, fp32 (or --dtype bf16 autocast on a GPU). TRL generates with
transformers' ``generate`` (no vLLM on either side); tether with its KV-cache sampler (on CUDA,
decoding replayed from a CUDA graph: tether.models.static_decode).

Rounds alternate tether / TRL in one process so machine noise hits both alike. A step is
everything from one optimizer step's end to the next: generation, rewards, reference and old
log-probs, forward, backward, update. Rollout tokens/s: completion tokens sampled per second
of generation (tether logs it; TRL's ``generate`` is timed by a wrapper). Samples differ
between the two (different samplers), so losses are not compared here: the maths is
checked against TRL's own loss code in tests/unit/test_rl_losses.py.

    python bench/rl_vs_trl.py                      # CPU, ~5 minutes
    python bench/rl_vs_trl.py --device cuda --dtype bf16 --hidden 512 --layers 8 --batch 128 \
        --max-new-tokens 64 --rounds 3 [--length-groups 1]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import emit

os.environ.setdefault("TETHER_NO_PROGRESS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))

from train_vs_trl import build_start


def prompts(n: int) -> list[dict[str, Any]]:
    """World task prompts (chat messages) with their metadata."""
    from tether.data.records import PromptRecord
    from tether.data.sources import load_records

    return [r.model_dump(mode="json") for r in load_records("builtin:world-task-prompts", PromptRecord).records[:n]]


def run_tether(start: Path, data: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One GRPO run of tether's: step times and rollout tokens per second."""
    from tether.core.config import load_config
    from tether.train import grpo

    cfg = load_config(grpo.GRPOConfig, None, [
        f"model.path={start}", f"model.device={args.device}", f"data.train={data}", "rewards=[{kind: length}]",
        f"group_size={args.group}", f"generation.max_new_tokens={args.max_new_tokens}", "generation.temperature=1.0",
        f"generation.batch_size={args.batch}", f"generation.decoding={args.decoding}",
        f"data.length_groups={args.length_groups}", "loss.beta=0.04", "loss.aggregation=token-mean",
        f"optim.lr={args.lr}", "optim.schedule=constant", "optim.warmup_steps=0", "optim.max_grad_norm=1.0",
        f"loop.batch_size={args.batch}", f"loop.max_steps={args.steps}", f"seed={args.seed}", f"out={out}",
        f"loop.precision={'bf16' if args.dtype == 'bf16' else 'fp32'}"])
    grpo.run(cfg)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"step_s": [m["step_wall_s"] for m in metrics],
            "rollout_tokens_per_s": [m["rollout_tokens_per_s"] for m in metrics],
            "completion_tokens": [m["completion_tokens"] for m in metrics]}


def run_trl(start: Path, rows: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One GRPO run of TRL's GRPOTrainer on the same model and prompts: step times and rollout tokens per second."""
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    marks: list[float] = []
    generation: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            marks.append(time.perf_counter())

    budget = args.max_new_tokens

    def length_reward(completions: list[Any], completion_ids: list[list[int]], **_: Any) -> list[float]:
        return [-len(ids) / budget for ids in completion_ids]

    tokenizer = AutoTokenizer.from_pretrained(str(start))
    config = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch, num_generations=args.group,
        steps_per_generation=1, num_iterations=1, gradient_accumulation_steps=1, max_completion_length=budget,
        temperature=1.0, top_k=0, top_p=1.0, beta=0.04, loss_type="dapo", scale_rewards="group", epsilon=0.2,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        max_steps=args.steps, logging_steps=1, save_strategy="no", report_to=[], seed=args.seed,
        bf16=args.dtype == "bf16", use_cpu=args.device == "cpu", dataloader_num_workers=0, disable_tqdm=True,
        cache_implementation=args.trl_cache)
    trainer = GRPOTrainer(model=str(start), reward_funcs=length_reward, args=config,
                          train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
                          processing_class=tokenizer, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    model = trainer.model
    plain_generate = model.generate
    eos = tokenizer.eos_token_id

    def timed_generate(*a: Any, **k: Any) -> Any:
        began = time.perf_counter()
        sequences = plain_generate(*a, **k)
        new = sequences[:, k["input_ids"].shape[1]:] if "input_ids" in k else sequences
        is_eos = new == eos
        ends = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full_like(is_eos[:, 0], new.shape[1],
                                                                                        dtype=torch.long))
        generation.append((time.perf_counter() - began, int(ends.sum())))
        return sequences

    model.generate = timed_generate
    started = time.perf_counter()
    trainer.train()
    return {"step_s": [b - a for a, b in zip([started, *marks], marks, strict=False)],
            "rollout_tokens_per_s": [n / s for s, n in generation],
            "completion_tokens": [h["completions/mean_length"] for h in trainer.state.log_history
                                  if "completions/mean_length" in h]}


def summarise(runs: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Median step time and rollout throughput over the runs, the first ``warmup`` steps left out."""
    step = statistics.median([s for r in runs for s in r["step_s"][warmup:]])
    tokens = statistics.median([t for r in runs for t in r["rollout_tokens_per_s"][warmup:]])
    lengths = [t for r in runs for t in r["completion_tokens"][warmup:]]
    return {"steps_per_s": round(1 / step, 3), "step_s": round(step, 3), "rollout_tokens_per_s": round(tokens, 1),
            "mean_completion_tokens": round(statistics.mean(lengths), 2) if lengths else None}


def main() -> None:
    """Parse the arguments, run both trainers in turn, print and save the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="completions per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--trl-cache", default=None, help="TRL's cache_implementation for generate (e.g. static)")
    parser.add_argument("--decoding", default="auto", help="tether's generation.decoding (see GenerationSettings)")
    parser.add_argument("--length-groups", type=int, default=4, help="tether's data.length_groups")
    parser.add_argument("--json", type=Path, help="also write the results here, with the machine and command")
    args = parser.parse_args()
    import trl

    from tether.data.io import write_jsonl

    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, device {args.device}"
                   + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
        "versions": {"trl": trl.__version__}, "dtype": args.dtype,
        "model": {"hidden": args.hidden, "layers": args.layers}, "batch": args.batch, "group": args.group,
        "max_new_tokens": args.max_new_tokens, "steps": args.steps, "rounds": args.rounds,
        "tether": {"decoding": args.decoding, "length_groups": args.length_groups}, "trl_cache": args.trl_cache,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lm, _ = build_start(root, args.hidden, args.layers, args.seed)
        results["model"]["parameters"] = sum(
            p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(lm).parameters())
        rows = prompts(2000)
        write_jsonl(root / "prompts.jsonl", rows)
        ours, theirs = [], []
        for r in range(args.rounds):
            ours.append(run_tether(lm, root / "prompts.jsonl", args, root / f"tether-{r}"))
            gc.collect()
            theirs.append(run_trl(lm, rows, args, root / f"trl-{r}"))
            gc.collect()
        a, b = summarise(ours, args.warmup), summarise(theirs, args.warmup)
        results["grpo"] = {"tether": a, "trl": b, "speedup_steps": round(a["steps_per_s"] / b["steps_per_s"], 2),
                           "speedup_rollout_tokens": round(a["rollout_tokens_per_s"] / b["rollout_tokens_per_s"], 2)}
    emit(results, args.json)


if __name__ == "__main__":
    main()
