"""tether against TRL: SFT, reward model and DPO on the same model, data, batch, dtype and maths.

For each trainer, both sides start from the same saved weights, see the same examples in the
same order (TRL's sampler is made sequential over data pre-ordered as tether's permutation),
use AdamW with the same settings, a constant learning rate, clipping at 1.0 and fp32 (or
--dtype bf16 autocast on a GPU). TRL gets its best settings for the maths: precomputed
reference log-probs for DPO (as tether's ``reference.precompute``), completion-only loss for
SFT. Rounds alternate tether / TRL in one process so machine noise hits both alike; each
side's step time is the median wall-clock between consecutive step ends after warm-up.

Both sides pad by default. ``--packing padding-free`` packs tether's SFT, RM and DPO batches
(``data.packing``) and TRL's SFT (``padding_free``; its RewardTrainer has no such mode and its
DPOTrainer disables it in this version). Packing pays off only with an attention kernel that
skips the masked blocks (flash-attention's varlen path on a GPU): with SDPA or eager attention
the packed row's attention is quadratic in the whole row, and on this CPU it is slower.

Reported per trainer: steps/s and tokens/s for both and their ratio, both losses at the first
and last step, achieved FLOP/s (6 x parameters x tokens per step for a forward and backward)
as a share of this machine's measured matmul peak (MFU), and resident memory per step (CPU:
process RSS; GPU: peak allocated) at the first and last step, to show it does not grow.

    python bench/train_vs_trl.py                     # CPU, the default sizes, ~10 minutes
    python bench/train_vs_trl.py --only dpo --steps 20
    python bench/train_vs_trl.py --device cuda --dtype bf16 --hidden 512 --layers 8 --batch 32
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import emit

os.environ.setdefault("TETHER_NO_PROGRESS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul: the machine's practical peak for this dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def memory_now(device: torch.device) -> float:
    """MiB: peak allocated since the last reset on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        value = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return value
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def build_start(out: Path, hidden: int, layers: int, seed: int) -> tuple[Path, Path]:
    """A random Llama (causal LM) and a reward model sharing its backbone, saved as HF directories."""
    from transformers import AutoModelForSequenceClassification

    from tether.models.tiny import tiny_config
    from tether.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config("llama", tokenizer, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
                         num_key_value_heads=max(2, hidden // 64))
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_config(config)
    lm.save_pretrained(out / "lm")
    tokenizer.save_pretrained(out / "lm")
    config.num_labels = 1
    rm = AutoModelForSequenceClassification.from_config(config)
    rm.model.load_state_dict(lm.model.state_dict())
    rm.save_pretrained(out / "rm")
    tokenizer.save_pretrained(out / "rm")
    return out / "lm", out / "rm"


def world_data(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """SFT rows as conversational prompt / completion, and gold-labelled preference pairs."""
    from tether.world.datasets import preference_rows, sft_rows
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig())
    sft = [{"prompt": r["messages"][:-1], "completion": [r["messages"][-1]]} for r in sft_rows(world, n)]
    pairs = [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
              "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in preference_rows(world, n)]
    return sft, pairs


def tether_order(n: int, batch: int, steps: int, seed: int) -> list[int]:
    """The example order tether's loop draws (so TRL can be fed the same batches)."""
    from tether.engine.loop import batch_indices

    return [i for s in range(steps) for i in batch_indices(n, batch, s, seed)]


def run_tether(kind: str, start: Path, data: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One tether training run of ``kind`` (sft, rm, dpo): step times, tokens and peak memory."""
    from tether.core.config import load_config

    common = [f"model.path={start}", f"data.train={data}", f"data.max_length={args.max_length}",
              f"optim.lr={args.lr}", "optim.schedule=constant", "optim.warmup_steps=0", "optim.max_grad_norm=1.0",
              f"loop.batch_size={args.batch}", f"loop.max_steps={args.steps}", f"seed={args.seed}", f"out={out}",
              f"model.device={args.device}", f"loop.precision={'bf16' if args.dtype == 'bf16' else 'fp32'}",
              f"data.packing={args.packing}"]
    if kind == "sft":
        from tether.train import sft as recipe

        cfg = load_config(recipe.SFTConfig, None, common)
    elif kind == "rm":
        from tether.train import rm as recipe  # type: ignore[no-redef]

        cfg = load_config(recipe.RMConfig, None, common)  # type: ignore[attr-defined]
    else:
        from tether.train import dpo as recipe  # type: ignore[no-redef]

        cfg = load_config(recipe.DPOConfig, None, [*common, "loss.beta=0.1", "reference.precompute=true"])  # type: ignore[attr-defined]
    device = torch.device(args.device)
    memory_now(device)
    recipe.run(cfg)  # type: ignore[attr-defined]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seen = [0, *(m["tokens_seen"] for m in metrics)]
    tokens = [b - a for a, b in zip(seen[:-1], seen[1:], strict=True)]
    return {"step_s": [m["step_wall_s"] for m in metrics], "tokens": tokens,
            "losses": [m["loss"] for m in metrics], "memory_mib": [m["memory_mib"] for m in metrics]}


def run_trl(kind: str, start: Path, rows: list[dict[str, Any]], args: argparse.Namespace,
            out: Path) -> dict[str, Any]:
    """The same run with TRL's trainer of ``kind``: step times, tokens and peak memory."""
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback

    device = torch.device(args.device)
    marks: list[float] = []
    memory: list[float] = []
    tokens: list[int] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            marks.append(time.perf_counter())
            memory.append(memory_now(device))

    common = dict(output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.steps,
                  learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
                  weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[], seed=args.seed,
                  bf16=args.dtype == "bf16", use_cpu=args.device == "cpu", dataloader_num_workers=0,
                  disable_tqdm=True, max_length=args.max_length)
    order = tether_order(len(rows), args.batch, args.steps, args.seed)
    dataset = Dataset.from_list([rows[i] for i in order])
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        base: Any = SFTTrainer
        packed = args.packing == "padding-free"  # max_length is long enough that nothing is cut either way
        config: Any = SFTConfig(**(common | {"max_length": None} if packed else common), completion_only_loss=True,
                                padding_free=packed)
        model: Any = str(start)
    elif kind == "rm":
        from trl import RewardConfig, RewardTrainer

        base, config, model = RewardTrainer, RewardConfig(**common, center_rewards_coefficient=None), str(start)
    else:
        from trl import DPOConfig, DPOTrainer

        base, config, model = DPOTrainer, DPOConfig(**common, beta=0.1, precompute_ref_log_probs=True), str(start)

    class Sequential(base):  # type: ignore[misc, valid-type]
        def _get_train_sampler(self, *_: Any, **__: Any) -> Any:
            return SequentialSampler(self.train_dataset)

    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback

    trainer = Sequential(model=model, args=config, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(str(start)), callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)  # keep stdout for the results
    memory_now(device)
    started = time.perf_counter()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = [int(t) for t in (h.get("num_tokens") for h in trainer.state.log_history if "loss" in h) if t]
    per_step = [b - a for a, b in zip(tokens, tokens[1:], strict=False)] if len(tokens) > 1 else []
    return {"step_s": [b - a for a, b in zip([started, *marks], marks, strict=False)], "tokens": [tokens[0], *per_step]
            if tokens else [], "losses": losses, "memory_mib": memory}


def summarise(runs: list[dict[str, Any]], warmup: int, params: int, peak: float) -> dict[str, Any]:
    """Median step time and token throughput over the runs (the first ``warmup`` steps left out), and memory."""
    step = statistics.median([s for r in runs for s in r["step_s"][warmup:]])
    tokens = statistics.median([t for r in runs for t in r["tokens"][warmup:]]) if runs[0]["tokens"] else float("nan")
    flops = 6 * params * tokens / step
    out = {"steps_per_s": round(1 / step, 2), "tokens_per_s": round(tokens / step, 1),
           "loss_first": runs[0]["losses"][0], "loss_last": runs[0]["losses"][-1],
           "mfu": round(flops / peak, 4), "achieved_gflops": round(flops / 1e9, 2)}
    if runs[0]["memory_mib"]:
        out["memory_mib_first_last"] = [round(runs[0]["memory_mib"][1], 1), round(runs[0]["memory_mib"][-1], 1)]
    return out


def main() -> None:
    """Parse the arguments, run each recipe with both tools in turn, print and save the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("sft", "rm", "dpo"), action="append")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=1024,
                        help="long enough that nothing is cut (TRL drops what we would truncate)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--packing", choices=("none", "padding-free"), default="none",
                        help="padding-free: tether packs SFT, RM and DPO batches; TRL packs SFT (its RewardTrainer "
                             "has no such mode and its DPOTrainer disables it in this version). Pays off only with "
                             "a varlen attention kernel (flash-attention on a GPU)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--json", type=Path, help="also write the results here, with the machine and command")
    args = parser.parse_args()
    import trl

    from tether.data.io import write_jsonl

    device = torch.device(args.device)
    peak = matmul_peak(device, torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, device {args.device}",
        "versions": {"trl": trl.__version__}, "dtype": args.dtype, "matmul_peak_gflops": round(peak / 1e9, 1),
        "model": {"hidden": args.hidden, "layers": args.layers}, "batch": args.batch, "steps": args.steps,
        "packing": args.packing,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lm, rm_start = build_start(root, args.hidden, args.layers, args.seed)
        from transformers import AutoModelForCausalLM

        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(lm).parameters())
        results["model"]["parameters"] = params
        sft_rows, pair_rows = world_data(max(args.batch * args.steps, 512))
        write_jsonl(root / "sft.jsonl", sft_rows)
        write_jsonl(root / "pairs.jsonl", pair_rows)
        for kind in args.only or ["sft", "rm", "dpo"]:
            start = rm_start if kind == "rm" else lm
            data, rows = (root / "sft.jsonl", sft_rows) if kind == "sft" else (root / "pairs.jsonl", pair_rows)
            ours, theirs = [], []
            for r in range(args.rounds):
                ours.append(run_tether(kind, start, data, args, root / f"{kind}-tether-{r}"))
                gc.collect()
                theirs.append(run_trl(kind, start, rows, args, root / f"{kind}-trl-{r}"))
                gc.collect()
            a = summarise(ours, args.warmup, params, peak)
            b = summarise(theirs, args.warmup, params, peak)
            results[kind] = {"tether": a, "trl": b, "speedup_steps": round(a["steps_per_s"] / b["steps_per_s"], 2)}
            print(json.dumps({kind: results[kind]}), flush=True)
    emit(results, args.json)


if __name__ == "__main__":
    main()
