"""Generation throughput: tether's KV-cache sampler against transformers' ``model.generate``.

Variants, run greedily on the same model and prompts in one process, interleaved so machine
noise hits all alike: the sampler over the dynamic cache; the sampler over a static cache
(on CUDA: its decode step replayed from a CUDA graph, tether.models.static_decode); and
``model.generate``. The ratio is the default decoding's (``auto``: the graph on CUDA, the
dynamic cache elsewhere) over ``model.generate``. Every variant must produce the dynamic sampler's tokens (the ``same``
column: completions identical to it; tests/unit/test_generation.py checks the CPU paths), so
tokens/s compare like for like.

    python bench/generation.py                       # CPU, batch 1 / 16 / 64
    python bench/generation.py --device cuda --dtype bfloat16 --hidden 512 --layers 8 --batches 1,16,128
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from common import emit

from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.tiny import build_tiny_model
from tether.models.tokenizer import build_tokenizer


def main() -> None:
    """Parse the arguments, time both generators, print and save the figures."""
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
    parser.add_argument("--json", type=Path, help="also write the results here, with the machine and command")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = build_tokenizer()
    sizes = dict(hidden_size=args.hidden, intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                 num_attention_heads=max(1, args.hidden // 32), num_key_value_heads=max(1, args.hidden // 64))
    model = build_tiny_model(args.arch, tokenizer, seed=0, **sizes).to(device=args.device, dtype=getattr(torch,
                                                                                                         args.dtype))
    generator = HFGenerator(model, tokenizer)
    # An end token that cannot be sampled: both backends generate exactly new_tokens per prompt.
    generator.eos_ids = [len(tokenizer) + 10_000]
    params = sum(p.numel() for p in model.parameters())
    where = f"{args.device} ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else args.device
    print(f"# generation benchmark: {args.arch} {params / 1e6:.2f}M params, {where} {args.dtype}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}")
    static = "cuda-graph" if args.device.startswith("cuda") else "static"
    variants = {"sampler": ("sampler", "dynamic"), f"sampler {static}": ("sampler", static),
                "model.generate": ("hf-generate", "auto")}
    default = f"sampler {static}" if static == "cuda-graph" else "sampler"  # what decoding=auto picks here
    print("| batch | " + " | ".join(f"{v} tok/s" for v in variants) + " | default / model.generate | same |")
    print("|---:|" + "---:|" * (len(variants) + 2))
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = [f"prompt number {i} says {'x' * (i % 7)}" for i in range(batch)]
        timings: dict[str, list[float]] = {v: [] for v in variants}
        outputs: dict[str, list[list[int]]] = {}
        for repeat in range(args.repeats + 1):  # first round warms up
            for name, (backend, decoding) in variants.items():
                settings = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.0, batch_size=batch,
                                              backend=backend, decoding=decoding)  # type: ignore[arg-type]
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                outs = generator.generate(prompts, settings)
                elapsed = time.perf_counter() - start
                outputs[name] = [o.token_ids for o in outs]
                if repeat:
                    timings[name].append(elapsed)
        rate = {v: sum(map(len, outputs[v])) / statistics.median(t) for v, t in timings.items()}
        ratio = rate[default] / rate["model.generate"]
        same = {v: sum(a == b for a, b in zip(outputs[v], outputs["sampler"], strict=True)) / batch for v in variants}
        rows.append({"batch": batch, **{f"{v}_tokens_per_s": round(r, 1) for v, r in rate.items()},
                     "default": default, "ratio_vs_generate": round(ratio, 2), "same_as_dynamic": same})
        print(f"| {batch} | " + " | ".join(f"{r:,.0f}" for r in rate.values()) + f" | {ratio:.2f}x | "
              + ", ".join(f"{same[v]:.0%}" for v in variants if v != "sampler") + " |")
    emit({"arch": args.arch, "parameters": params, "dtype": args.dtype, "device": args.device, "rows": rows},
         args.json)


if __name__ == "__main__":
    main()
