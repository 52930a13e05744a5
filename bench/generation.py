"""Generation throughput: tether's KV-cache sampler against transformers' ``model.generate``.

Both backends run greedy decoding on the same model and prompts in one process, interleaved,
so machine noise hits both alike; both produce the same tokens (tests/unit/test_generation.py),
so tokens/s compare like for like.

    python bench/generation.py                       # CPU, batch 1 / 16 / 64
    python bench/generation.py --device cuda --dtype bfloat16 --hidden 512 --layers 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.tiny import build_tiny_model
from tether.models.tokenizer import build_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="llama")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = build_tokenizer()
    sizes = dict(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                 num_attention_heads=max(1, args.hidden // 32), num_key_value_heads=max(1, args.hidden // 64))
    model = build_tiny_model(args.arch, tokenizer, seed=0, **sizes).to(device=args.device, dtype=getattr(torch, args.dtype))
    generator = HFGenerator(model, tokenizer)
    # An end token that cannot be sampled: both backends generate exactly new_tokens per prompt.
    generator.eos_ids = [len(tokenizer) + 10_000]
    params = sum(p.numel() for p in model.parameters())
    print(f"# generation benchmark: {args.arch} {params / 1e6:.2f}M params, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print("| batch | sampler tok/s | model.generate tok/s | ratio |")
    print("|---:|---:|---:|---:|")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = [f"prompt number {i} says {'x' * (i % 7)}" for i in range(batch)]
        timings: dict[str, list[float]] = {"sampler": [], "hf-generate": []}
        tokens: dict[str, int] = {}
        for repeat in range(args.repeats + 1):  # first round warms up
            for backend in ("sampler", "hf-generate"):
                settings = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.0, batch_size=batch,
                                              backend=backend)  # type: ignore[arg-type]
                start = time.perf_counter()
                outs = generator.generate(prompts, settings)
                elapsed = time.perf_counter() - start
                if repeat:
                    timings[backend].append(elapsed)
                    tokens[backend] = sum(len(o.token_ids) for o in outs)
        rate = {b: tokens[b] / statistics.median(t) for b, t in timings.items()}
        ratio = rate["sampler"] / rate["hf-generate"]
        rows.append({"batch": batch, **{f"{b}_tokens_per_s": round(r, 1) for b, r in rate.items()}, "ratio": round(ratio, 2)})
        print(f"| {batch} | {rate['sampler']:,.0f} | {rate['hf-generate']:,.0f} | {ratio:.2f}x |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
