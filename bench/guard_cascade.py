"""A guard cascade's cost and error measured together: each tier alone, and the cascade of them.

Traffic: the world's held-out guard prompts (held-out hazard items, held-out jailbreak wrappers, the
held-out hazards' names asked about harmlessly, and every other family) and, as more unsafe traffic, the
red-team library's attacks (every template and converter of ``redteam/world``, best-of-N augmentation
included) on the held-out hazard items: kinds neither tier trained on. Each text is checked once by each
tier alone and once by the cascade (the real ``kind: cascade`` guard, each tier with the allow and block
thresholds calibrated at training), timed per check; the cascade's verdicts say which tiers ran, so the
share of traffic that reached each tier, the last and most expensive one above all, is counted. Latency
is also measured on texts of 512 tokens (the prompt after ~500 tokens of prose, as a long document or a
many-shot prompt puts it).

    python bench/guard_cascade.py --tier ngram=runs/guard-ngram-0/guard --tier static=runs/guard-static-0/guard \\
        --tier embedding=runs/guard-embedding-0/guard --json docs/results/bench/guard_cascade_cpu_world0.json
"""

from __future__ import annotations

import argparse
import gc
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
    parser.add_argument("--tier", action="append", required=True, metavar="NAME=DIR",
                        help="a tier's trained guard directory, cheapest first (repeatable)")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--long", type=int, default=500, help="texts timed at 512 tokens")
    parser.add_argument("--limit", type=int, default=None, help="a seeded sample of this many texts (a quick run)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from tether.guard.base import GUARDS

    tiers = [tuple(t.split("=", 1)) for t in args.tier]
    rows = traffic(args.world_seed)
    if args.limit is not None and args.limit < len(rows):
        rows = random.Random(0).sample(rows, args.limit)
    labels = [r["label"] for r in rows]
    guards = {name: GUARDS.get("classifier")(path=path, name=name).build() for name, path in tiers}
    guards["cascade"] = GUARDS.get("cascade")(name="cascade", tiers=[
        {"kind": "classifier", "path": path, "name": name} for name, path in tiers]).build()
    for guard in guards.values():  # load and warm up every model before timing
        guard.check_input([{"role": "user", "content": "warm up"}])
    # As tether serve does after start-up: the loaded libraries' objects out of the collector's way, so a full
    # collection over them does not land inside a timed check.
    gc.collect()
    gc.freeze()

    last = tiers[-1][0]
    result: dict[str, Any] = {
        "traffic": {"n": len(rows), "unsafe": sum(labels),
                    "attack_prompts": sum(r["source"].startswith("attack:") for r in rows)},
        "tiers": [name for name, _ in tiers],
        "thresholds": {name: guards[name].thresholds.__dict__ for name, _ in tiers}}
    for name, guard in guards.items():
        flags, seconds, reached = [], [], dict.fromkeys((n for n, _ in tiers), 0)
        for row in rows:
            start = time.perf_counter()
            verdict = guard.check_input([{"role": "user", "content": row["text"]}])
            seconds.append(time.perf_counter() - start)
            flags.append(not verdict.allowed)
            for tier in verdict.tiers:
                reached[tier] += 1
        entry = {**rates(flags, labels), "latency": timing(seconds)}
        if name == "cascade":
            entry["share_reaching"] = {t: round(c / len(rows), 4) for t, c in reached.items()}
            entry["share_reaching_last_tier"] = entry["share_reaching"][last]
        by_source: dict[str, list[int]] = {}
        for flag, row in zip(flags, rows, strict=True):
            counts = by_source.setdefault(row["source"].split("(")[0], [0, 0])
            counts[0] += flag
            counts[1] += 1
        entry["flagged_by_source"] = {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_source.items())}
        result[name] = entry

    # 512 tokens of the most expensive tier that has a tokenizer (the one whose cost grows with them).
    tokenizer = next((guards[n].trained.model.tokenizer for n, _ in reversed(tiers)
                      if hasattr(guards[n].trained.model, "tokenizer")), None)
    if tokenizer is not None and args.long:
        rng = random.Random(0)
        sample = rng.sample(rows, min(args.long, len(rows)))
        texts = [long_text(r["text"], tokenizer, 512, rng) for r in sample]
        result["latency_512_tokens"] = {"tokenizer": tokenizer.name_or_path.rsplit("/", 1)[-1]}
        for name, guard in guards.items():
            for text in texts[:20]:  # warm-up, untimed: the previous guard's threads and caches out of the way
                guard.check_input([{"role": "user", "content": text}])
            seconds = []
            for text in texts:
                start = time.perf_counter()
                guard.check_input([{"role": "user", "content": text}])
                seconds.append(time.perf_counter() - start)
            result["latency_512_tokens"][name] = timing(seconds)
    gc.unfreeze()
    emit(result, args.json)


if __name__ == "__main__":
    main()
