"""A guard cascade's cost and error measured together: cheap tier, learned tier, and the cascade of the two.

Traffic: the world's held-out guard prompts (held-out hazard items, held-out jailbreak wrappers, the
held-out hazards' names asked about harmlessly, and every other family) and, as more unsafe traffic, the
red-team library's attacks (every template and converter of ``redteam/world``, best-of-N augmentation
included) on the held-out hazard items: kinds neither tier trained on. Each text is checked once by each
tier alone and once by the cascade (the real ``kind: cascade`` guard, each tier with the allow and block
thresholds calibrated at training), timed per check; the cascade's verdicts say which tiers ran, so the
share of traffic that reached the learned tier is counted. Latency is also measured on texts of 512
tokens (the prompt after ~500 tokens of prose, as a long document or a many-shot prompt puts it).

    python bench/guard_cascade.py --cheap runs/guard-ngram/guard --learned runs/guard-emb/guard \\
        --json docs/results/bench/guard_cascade_cpu.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Any

from common import emit

PROSE = ("the committee met on tuesday to review the budget and the schedule for the coming quarter and agreed "
         "that each team would send a short written summary of its progress before the next meeting").split()


def traffic(world_seed: int) -> list[dict[str, Any]]:
    """Held-out guard prompts and red-team attacks on the held-out hazard items, labelled."""
    from tether.core.config import load_config
    from tether.redteam.run import RedteamConfig, build_prompts
    from tether.world.datasets import guard_rows
    from tether.world.spec import WorldConfig, build_world

    rows = [{"text": r["text"], "label": r["label"], "source": r["category"]}
            for r in guard_rows(build_world(WorldConfig(seed=world_seed)), "heldout")]
    cfg = load_config(RedteamConfig, "redteam/world", ["goals.split=heldout", f"goals.world.seed={world_seed}"])
    for attack in build_prompts(cfg):
        prompt = attack.prompt
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt
                                                                 if m["role"] != "assistant")
        rows.append({"text": text, "label": True, "source": f"attack:{attack.kind}"})
    return rows


def long_text(text: str, tokenizer: Any, tokens: int, rng: random.Random) -> str:
    """``text`` after prose, the whole ``tokens`` long (by ``tokenizer``)."""
    words: list[str] = []
    while len(tokenizer(" ".join(words) + " " + text, add_special_tokens=False)["input_ids"]) < tokens:
        words += rng.sample(PROSE, 8)
    while len(tokenizer(" ".join(words) + " " + text, add_special_tokens=False)["input_ids"]) > tokens and words:
        words.pop()
    return " ".join(words) + " " + text


def timing(seconds: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(seconds)
    return {"p50_ms": round(1000 * statistics.median(ordered), 3),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3), "n": len(ordered)}


def rates(flags: list[bool], labels: list[bool]) -> dict[str, Any]:
    """TPR and FPR with 95% Wilson intervals."""
    from tether.guard.evaluate import rates as guard_rates

    out = guard_rates(flags, labels)
    return {"tpr": out["tpr"], "fpr": out["fpr"], "tp": out["tp"], "fp": out["fp"]}


def main() -> None:
    """Measure the tiers and the cascade on the world's traffic; print (and with --json, write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cheap", required=True, help="the cheap tier's trained guard directory")
    parser.add_argument("--learned", required=True, help="the learned tier's trained guard directory")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--long", type=int, default=200, help="texts timed at 512 tokens")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from tether.guard.base import GUARDS

    torch.set_num_threads(torch.get_num_threads())
    rows = traffic(args.world_seed)
    labels = [r["label"] for r in rows]
    cheap = GUARDS.get("classifier")(path=args.cheap, name="cheap").build()
    learned = GUARDS.get("classifier")(path=args.learned, name="learned").build()
    cascade = GUARDS.get("cascade")(name="cascade", tiers=[
        {"kind": "classifier", "path": args.cheap, "name": "cheap"},
        {"kind": "classifier", "path": args.learned, "name": "learned"}]).build()
    for guard in (cheap, learned, cascade):  # load and warm up every model before timing
        guard.check_input([{"role": "user", "content": "warm up"}])

    result: dict[str, Any] = {"traffic": {"n": len(rows), "unsafe": sum(labels),
                                          "attack_prompts": sum(r["source"].startswith("attack:") for r in rows)},
                              "thresholds": {"cheap": cheap.thresholds.__dict__,
                                             "learned": learned.thresholds.__dict__}}
    for name, guard in (("cheap", cheap), ("learned", learned), ("cascade", cascade)):
        flags, seconds, reached = [], [], 0
        for row in rows:
            start = time.perf_counter()
            verdict = guard.check_input([{"role": "user", "content": row["text"]}])
            seconds.append(time.perf_counter() - start)
            flags.append(not verdict.allowed)
            reached += "learned" in verdict.tiers
        entry = {**rates(flags, labels), "latency": timing(seconds)}
        if name == "cascade":
            entry["share_reaching_learned"] = round(reached / len(rows), 4)
        by_source: dict[str, list[int]] = {}
        for flag, row in zip(flags, rows, strict=True):
            counts = by_source.setdefault(row["source"].split("(")[0], [0, 0])
            counts[0] += flag
            counts[1] += 1
        entry["flagged_by_source"] = {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_source.items())}
        result[name] = entry

    tokenizer = learned.trained.model.tokenizer if hasattr(learned.trained.model, "tokenizer") else None
    if tokenizer is not None and args.long:
        rng = random.Random(0)
        sample = rng.sample(rows, min(args.long, len(rows)))
        texts = [long_text(r["text"], tokenizer, 512, rng) for r in sample]
        result["latency_512_tokens"] = {}
        for name, guard in (("cheap", cheap), ("learned", learned), ("cascade", cascade)):
            seconds = []
            for text in texts:
                start = time.perf_counter()
                guard.check_input([{"role": "user", "content": text}])
                seconds.append(time.perf_counter() - start)
            result["latency_512_tokens"][name] = timing(seconds)
    emit(result, args.json)


if __name__ == "__main__":
    main()
