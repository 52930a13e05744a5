"""Iterated amplification and distillation on the world (``tether oversee amplification``).

The task is the world's "What is the largest of 56, 97, 17?", on lists longer than the model has seen.
The **overseer** is a fixed routine that never compares two numbers. It splits a list into chunks the
current model answers, asks the model for each chunk's largest, then asks the model for the largest of
those answers. It reads a number out of each reply (:func:`stated_number`), and nothing else. What it
adds is decomposition, not knowledge: Christiano et al.'s amplification, with the human's part played
by routing alone.

Each round ``k`` starts from model ``M_k`` (``M_0``: the pretrained ``model``, whose corpus has lists of
three to five numbers) and list length ``s_k`` (``s_0``: ``size``):

1. **direct**: ``M_k`` answers lists of ``s_k`` and of ``2 * s_k`` numbers;
2. **amplified**: the overseer with ``M_k`` answers lists of ``2 * s_k`` (chunks of ``s_k``);
3. **distilled**: ``M_{k+1}`` is ``M_k`` trained by SFT on ``train_questions`` amplified answers to lists of
   ``2 * s_k`` (their own lists, not the test's), answers directly; then ``s_{k+1} = 2 * s_k``.

Every answer is graded by the world's gold grader, with a Wilson interval. No gold answer is used in
training: the distilled model learns only from what the amplified system said, right or wrong, and the
share of those answers that were right is reported beside.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.pipelines.weak_to_strong import with_world_seed

_STATED = re.compile(r"\bis\s+(-?\d+)")


class AmplificationConfig(Config):
    """``tether oversee amplification``."""

    world_seed: int = Field(0, description="which world (world:... models of this seed)")
    model: str = Field("world:base", description="M_0: any HF causal LM or world:SIZE")
    size: int = Field(4, ge=2, description="s_0: list length the first model answers directly")
    rounds: int = Field(2, ge=1, description="amplify-then-distil rounds; the list length doubles each round")
    train_questions: int = Field(1000, ge=1, description="amplified answers each distillation trains on")
    test_questions: int = Field(200, ge=1, description="questions every measurement is made on")
    sft: str = Field("sft/world", description="the SFT config distillation uses")
    sft_steps: int = Field(200, ge=1, description="SFT steps per distillation")
    max_new_tokens: int = Field(16, ge=1, description="reply length")
    seed: int = 0
    out: str = Field("runs/amplification", description="experiment directory")


def _show(cfg: AmplificationConfig, summary: dict[str, Any]) -> list[str]:
    from tether.pipelines.stages import shown_rate as pct

    lines = []
    for r in summary["rounds"]:
        lines.append(f"round {r['round']}: lists of {r['size']} direct {pct(r['direct_small'])}; lists of "
                     f"{2 * r['size']}: direct {pct(r['direct'])}, amplified {pct(r['amplified'])}, distilled "
                     f"{pct(r['distilled'])}")
    lines.append(f"table: {cfg.out}/amplification.json")
    return lines


@recipe("amplification", group="oversee", config=AmplificationConfig,
        summary="Iterated amplification on the world: a routing-only overseer decomposes longer lists for the "
        "model, the amplified answers are distilled back, and each round doubles the length; accuracy per round.",
        example="tether oversee amplification --set world_seed=1 --out runs/amplification-1",
        produces={"amplification": output("amplification.json")}, show=_show)
def run(cfg: AmplificationConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the rounds; write and return ``amplification.json``."""
    run_dir = RunDir(cfg.out, command="oversee amplification", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


# --- the task and the overseer (pure) ----------------------------------------------------------------

def most_common(replies: Sequence[str]) -> dict[str, Any]:
    """The number stated most often across ``replies`` (None when none states one) and its share."""
    from collections import Counter

    counts = Counter(stated_number(r) for r in replies)
    value, count = counts.most_common(1)[0] if counts else (None, 0)
    return {"answer": value, "share": round(count / max(1, len(replies)), 4)}


def max_question(numbers: Sequence[int]) -> str:
    """The world's phrasing of the question."""
    return f"What is the largest of {', '.join(map(str, numbers))}?"


def list_questions(n: int, size: int, rng: random.Random) -> list[list[int]]:
    """``n`` lists of ``size`` distinct numbers from 1 to 99 (the world's range; ``size`` at most 99)."""
    return [rng.sample(range(1, 100), size) for _ in range(n)]


def chunks(numbers: Sequence[int], size: int) -> list[list[int]]:
    """``numbers`` cut in order into pieces of ``size`` (the last may be shorter, never a lone number unless
    the whole list is one: a lone number is folded into the piece before it)."""
    pieces = [list(numbers[i:i + size]) for i in range(0, len(numbers), size)]
    if len(pieces) > 1 and len(pieces[-1]) == 1:
        lone = pieces.pop()
        pieces[-1] += lone
    return pieces


def stated_number(reply: str) -> int | None:
    """The number a reply gives as its answer ("The largest is 97."), or None: the only thing the overseer
    reads."""
    found = _STATED.search(reply)
    return int(found.group(1)) if found else None


def amplify(lists: Sequence[Sequence[int]], ask: Any, size: int) -> list[tuple[int | None, list[dict[str, Any]]]]:
    """The overseer's answer for each list, and its calls: chunks of ``size`` asked of ``ask`` (a function
    from questions to replies, called once per level over every list together), then the largest of the
    chunk answers asked the same way, until one answer is left. A chunk whose reply states no number drops
    out; a list with none left gets None."""
    current: list[list[int]] = [list(x) for x in lists]
    calls: list[list[dict[str, Any]]] = [[] for _ in lists]
    done: list[int | None] = [None] * len(lists)
    pending = list(range(len(lists)))
    while pending:
        asked = [(i, piece) for i in pending for piece in chunks(current[i], size)]
        replies = ask([max_question(piece) for _, piece in asked])
        answers: dict[int, list[int]] = {i: [] for i in pending}
        for (i, piece), reply in zip(asked, replies, strict=True):
            value = stated_number(reply)
            calls[i].append({"question": max_question(piece), "reply": reply, "read": value})
            if value is not None:
                answers[i].append(value)
        still = []
        for i in pending:
            if not answers[i]:
                continue
            if len(answers[i]) == 1:
                done[i] = answers[i][0]
            else:
                current[i] = answers[i]
                still.append(i)
        pending = still
    return list(zip(done, calls, strict=True))


# --- the experiment ----------------------------------------------------------------------------------

def _item(numbers: Sequence[int]) -> Any:
    from tether.world.families import WorldItem

    return WorldItem(id=f"amplify:{','.join(map(str, numbers))}", family="task", split="heldout",
                     prompt=[{"role": "user", "content": max_question(numbers)}],
                     gold={"kind": "list", "op": "max", "answer": str(max(numbers))},
                     tags={"kind": "list", "difficulty": len(numbers)})


def _amplified_replies(lists: Sequence[Sequence[int]], ask: Any, size: int) -> tuple[list[str], list[Any]]:
    """The overseer's answers written as replies ("The largest is N.", or "I cannot tell." with none), and
    its calls."""
    found = amplify(lists, ask, size)
    return [("I cannot tell." if v is None else f"The largest is {v}.") for v, _ in found], found


def _experiment(cfg: AmplificationConfig, out: Path) -> dict[str, Any]:
    from tether.core.stats import wilson_interval
    from tether.models.generation import GenerationSettings
    from tether.pipelines.stages import asker, sft_on_rows
    from tether.world.grader import grade

    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed)
    model_dir = with_world_seed(cfg.model, cfg.world_seed)
    size = cfg.size
    rounds: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []

    def accuracy(lists: Sequence[Sequence[int]], replies: Sequence[str]) -> tuple[dict[str, Any], list[bool]]:
        right = [grade(_item(x), r).label == "correct" for x, r in zip(lists, replies, strict=True)]
        return wilson_interval(sum(right), len(right)).as_dict(), right

    for k in range(cfg.rounds):
        if 2 * size > 99:
            break
        rng = random.Random(f"amplification:{cfg.world_seed}:{cfg.seed}:{k}")
        test_small, test, train = (list_questions(cfg.test_questions, size, rng),
                                   list_questions(cfg.test_questions, 2 * size, rng),
                                   list_questions(cfg.train_questions, 2 * size, rng))
        ask = asker(model_dir, settings)
        direct_small, _ = accuracy(test_small, ask([max_question(x) for x in test_small]))
        direct_replies = ask([max_question(x) for x in test])
        direct, _ = accuracy(test, direct_replies)
        test_amp, test_calls = _amplified_replies(test, ask, size)
        amplified, amp_right = accuracy(test, test_amp)
        train_amp, _ = _amplified_replies(train, ask, size)
        label_acc, _ = accuracy(train, train_amp)
        del ask
        rows = [{"messages": [{"role": "user", "content": max_question(x)}, {"role": "assistant", "content": a}]}
                for x, a in zip(train, train_amp, strict=True)]
        model_dir = sft_on_rows(cfg.sft, model_dir, rows, out / f"round{k}", steps=cfg.sft_steps, seed=cfg.seed)
        distilled_replies = asker(model_dir, settings)([max_question(x) for x in test])
        distilled, _ = accuracy(test, distilled_replies)
        rounds.append({"round": k, "size": size, "direct_small": direct_small, "direct": direct,
                       "amplified": amplified, "distilled": distilled, "training_answers_right": label_acc,
                       "calls_per_question": round(sum(len(c) for _, c in test_calls) / len(test), 3),
                       # A model that gives one answer to every list scores the share of lists whose largest
                       # it is: the most common answer says whether that is what happened.
                       "most_common_answer": {name: most_common(replies) for name, replies in
                                              (("direct", direct_replies), ("amplified", test_amp),
                                               ("distilled", distilled_replies))}})
        examples += [{"round": k, "numbers": x, "direct": d, "amplified": a, "distilled": s, "right": r,
                      "calls": c}
                     for x, d, a, s, r, (_, c) in zip(test[:20], direct_replies, test_amp, distilled_replies,
                                                      amp_right, test_calls, strict=False)]
        size *= 2
    summary = {"world_seed": cfg.world_seed, "model": with_world_seed(cfg.model, cfg.world_seed), "rounds": rounds}
    (out / "examples.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    (out / "amplification.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
