"""AI feedback (RLAIF): a judge model picks the better of two responses against a principle.

For each prompt, two responses (sampled from the policy, or taken from a preference file whose
labels are then replaced) are compared under principles drawn from the constitution. The judge's
preference is a probability, read from its log-probs (see :mod:`tether.align.constitution`):

- ``choice``: P(A) from the two option labels' log-probs after the answer prefix, asked in both
  orders and averaged, so a judge that favours one position cannot pass that on as a preference;
- ``critique``: each response's score is log p(ok) - log p(flawed) under the critique request;
  P(a better) = sigmoid(score_a - score_b).

With several principles per pair the probabilities are averaged. Out (``OUT/``):
``feedback.jsonl`` (every comparison), ``preferences.jsonl`` (``prompt`` / ``chosen`` /
``rejected`` plus ``ai_prob``, the judge's probability for ``chosen``; pairs less confident than
``min_confidence`` are left out and counted), ready for ``tether train rm`` and ``tether train
dpo``. Where prompts carry the world's metadata the summary gives the judge's agreement with gold.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.align.constitution import (
    Constitution,
    Judge,
    Messages,
    Principle,
    as_messages,
    choice_messages,
    critique_messages,
    load_constitution,
)
from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.progress import progress_bar
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.io import write_jsonl
from tether.data.records import PreferenceRecord
from tether.data.sources import PromptData, load_prompts, load_records
from tether.models.chat import render
from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.loading import ModelConfig, load_model_and_tokenizer
from tether.models.logprobs import continuation_logps

# --- the judge's arithmetic (pure) -------------------------------------------------------------

def choice_probability(forward: tuple[float, float], swapped: tuple[float, float]) -> float:
    """P(first response better) from option-label log-probs asked in both orders.

    ``forward``: (log p(A), log p(B)) with the first response as A; ``swapped``: the same with the
    first response as B. Each order's two log-probs are normalised against each other (mass on
    other tokens is ignored), and the two orders averaged.
    """
    p_forward = 1.0 / (1.0 + math.exp(forward[1] - forward[0]))
    p_swapped = 1.0 / (1.0 + math.exp(swapped[0] - swapped[1]))
    return 0.5 * (p_forward + p_swapped)


def critique_probability(score_first: float, score_second: float) -> float:
    """P(first better) from critique scores (log p(ok) - log p(flawed)): a logistic of their difference."""
    return 1.0 / (1.0 + math.exp(score_second - score_first))


class AIJudge:
    """A causal LM turning (prompt, two responses, principle) into P(first better)."""

    def __init__(self, model: Any, tokenizer: Any, constitution: Constitution, judge: Judge | None = None, *,
                 batch_size: int = 32) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.constitution, self.judge = constitution, judge or constitution.judge
        self.batch_size = batch_size

    def _context(self, messages: Messages, prefix: str = "") -> str:
        return render(self.tokenizer, messages, add_generation_prompt=True) + prefix

    def compare(self, items: Sequence[tuple[Messages, str, str, Principle]]) -> list[float]:
        """P(first better) for each (prompt, first, second, principle)."""
        if self.judge.mode == "choice":
            label_a, label_b = self.judge.options
            contexts, conts = [], []
            for prompt, first, second, principle in items:
                for a, b in ((first, second), (second, first)):
                    context = self._context(choice_messages(principle, prompt, a, b), self.judge.answer_prefix)
                    contexts += [context, context]
                    conts += [label_a, label_b]
            lp = continuation_logps(self.model, self.tokenizer, contexts, conts, batch_size=self.batch_size)
            return [choice_probability((lp[4 * k], lp[4 * k + 1]), (lp[4 * k + 2], lp[4 * k + 3]))
                    for k in range(len(items))]
        contexts, conts = [], []
        for prompt, first, second, principle in items:
            for response in (first, second):
                context = self._context(critique_messages(self.constitution, principle, prompt, response))
                contexts += [context, context]
                conts += [self.judge.ok, self.judge.flawed]
        lp = continuation_logps(self.model, self.tokenizer, contexts, conts, batch_size=self.batch_size)
        return [critique_probability(lp[4 * k] - lp[4 * k + 1], lp[4 * k + 2] - lp[4 * k + 3])
                for k in range(len(items))]


# --- the pipeline -------------------------------------------------------------------------------

def _two_samples() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64)


class FeedbackConfig(Config):
    """``tether align feedback``."""

    judge: ModelConfig = Field(description="the model that judges")
    model: ModelConfig | None = Field(None, description="the policy that samples two responses per prompt; "
                                      "not needed with 'pairs'")
    constitution: str = Field("hhh", description="shipped name or YAML file")
    judging: Judge | None = Field(None, description="overrides the constitution's judge (mode, labels, texts)")
    data: PromptData | None = Field(None, description="prompts to sample pairs for")
    pairs: str | None = Field(None, description="instead of sampling: a preference file whose pairs are relabelled")
    limit: int | None = Field(None, ge=1, description="the first N prompts or pairs only")
    principles_per_pair: int = Field(1, ge=1, description="principles drawn per comparison; probabilities averaged")
    min_confidence: float = Field(0.0, ge=0, lt=0.5, description="drop pairs with |P - 0.5| below this")
    generation: GenerationSettings = Field(default_factory=_two_samples, description="sampling the two responses")
    batch_size: int = Field(32, ge=1, description="judge forwards per batch")
    chunk_prompts: int = Field(256, ge=1, description="comparisons done between appends to feedback.jsonl")
    out: str = Field("runs/feedback", description="output directory")
    seed: int = Field(0, description="seeds sampling and principle draws")


@recipe("feedback", group="align", config=FeedbackConfig,
        summary="AI feedback: a judge model picks the better of two responses per principle: preferences.jsonl.",
        example="tether align feedback --config feedback/world --out runs/feedback",
        consumes={"model": "model.path", "judge": "judge.path", "prompts": "data.train"},
        produces={"preferences": output("preferences.jsonl")})
def run(cfg: FeedbackConfig, *, resume: bool = False) -> dict[str, Any]:
    """Write ``feedback.jsonl`` and ``preferences.jsonl`` under ``cfg.out``; return the summary."""
    if (cfg.data is None) == (cfg.pairs is None):
        raise DataError("align feedback: set exactly one of 'data' (prompts to sample pairs for) and 'pairs'")
    if cfg.data is not None and cfg.model is None:
        raise DataError("align feedback: 'data' needs 'model', the policy that samples the two responses")
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="align feedback", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _run(cfg, rd))


def _run(cfg: FeedbackConfig, run_dir: RunDir) -> dict[str, Any]:
    constitution = load_constitution(cfg.constitution)
    items = _items(cfg, run_dir)
    judge_model, judge_tok = load_model_and_tokenizer(cfg.judge)
    judge = AIJudge(judge_model, judge_tok, constitution, cfg.judging, batch_size=cfg.batch_size)
    policy = None
    if cfg.data is not None:
        assert cfg.model is not None
        policy = (HFGenerator(judge_model, judge_tok) if cfg.model == cfg.judge
                  else HFGenerator(*load_model_and_tokenizer(cfg.model)))
    out = Path(cfg.out)
    rows_path = out / "feedback.jsonl"
    done = {row["index"] for row in _read(rows_path)}
    todo = [i for i in range(len(items)) if i not in done]
    with progress_bar("AI feedback", len(items), completed=len(done)) as bar:
        for start in range(0, len(todo), cfg.chunk_prompts):
            chunk = todo[start:start + cfg.chunk_prompts]
            rows = _judge_chunk(cfg, constitution, judge, policy, chunk, [items[i] for i in chunk])
            with rows_path.open("a") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in rows)
            bar.advance(len(chunk))
    rows = sorted(_read(rows_path), key=lambda r: r["index"])
    return _write(cfg, rows, out, run_dir)


def _items(cfg: FeedbackConfig, run_dir: RunDir) -> list[dict[str, Any]]:
    if cfg.pairs is not None:
        loaded = load_records(cfg.pairs, PreferenceRecord, seed=cfg.seed)
        run_dir.record_skipped(loaded.skipped)
        items = []
        for r in loaded.records:
            row = r.model_dump(mode="json")
            if not isinstance(row["chosen"], str) and len(row["chosen"]) != 1 \
                    or not isinstance(row["rejected"], str) and len(row["rejected"]) != 1:
                raise DataError(f"{cfg.pairs}: AI feedback compares single replies; a pair has multi-turn completions")
            text = [x if isinstance(x, str) else x[0]["content"] for x in (row["chosen"], row["rejected"])]
            items.append({**{k: v for k, v in row.items() if k not in ("chosen", "rejected", "margin")},
                          "first": text[0], "second": text[1]})
        if not items:
            raise DataError(f"{cfg.pairs}: no usable pairs")
        return items[: cfg.limit]
    assert cfg.data is not None
    return load_prompts(cfg.data, cfg.seed, run_dir)[: cfg.limit]


def _seed(seed: int, index: int, what: str) -> int:
    return random.Random(f"{seed}:{index}:{what}").randrange(2**31)


def _judge_chunk(cfg: FeedbackConfig, constitution: Constitution, judge: AIJudge, policy: HFGenerator | None,
                 indices: Sequence[int], items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    prompts = [as_messages(it["prompt"]) for it in items]
    if policy is not None:
        seeds = [_seed(cfg.seed, i, f"sample{j}") for i in indices for j in (0, 1)]
        texts = [c.text.strip() for c in policy.generate([p for p in prompts for _ in (0, 1)], cfg.generation,
                                                          seeds=seeds)]
        pairs = [(texts[2 * k], texts[2 * k + 1]) for k in range(len(items))]
    else:
        pairs = [(it["first"], it["second"]) for it in items]
    principles = [[constitution.sample(random.Random(_seed(cfg.seed, i, f"principle{j}")))
                   for j in range(cfg.principles_per_pair)] for i in indices]
    probs = judge.compare([(prompt, a, b, p) for prompt, (a, b), ps in zip(prompts, pairs, principles, strict=True)
                           for p in ps])
    rows = []
    for k, (i, item) in enumerate(zip(indices, items, strict=True)):
        per = probs[k * cfg.principles_per_pair:(k + 1) * cfg.principles_per_pair]
        rows.append({**{key: v for key, v in item.items() if key not in ("prompt", "first", "second")},
                     "index": i, "prompt": prompts[k], "first": pairs[k][0], "second": pairs[k][1],
                     "principles": [p.name for p in principles[k]], "probs": [round(p, 6) for p in per],
                     "prob_first": round(sum(per) / len(per), 6), "judge": (cfg.judging or constitution.judge).mode})
    return rows


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(cfg: FeedbackConfig, rows: list[dict[str, Any]], out: Path, run_dir: RunDir) -> dict[str, Any]:
    meta = ("id", "family", "split", "gold", "tags")
    prefs, ties, unsure = [], 0, 0
    for r in rows:
        p = r["prob_first"]
        if r["first"] == r["second"]:
            ties += 1  # identical samples say nothing about preference
            continue
        if abs(p - 0.5) < cfg.min_confidence:
            unsure += 1
            continue
        chosen, rejected = (r["first"], r["second"]) if p >= 0.5 else (r["second"], r["first"])
        prefs.append({"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}], "ai_prob": round(max(p, 1 - p), 6),
                      "principles": r["principles"], **{k: r[k] for k in meta if k in r}})
    write_jsonl(out / "preferences.jsonl", prefs)
    run_dir.add_output("feedback", out / "feedback.jsonl")
    run_dir.add_output("preferences", out / "preferences.jsonl")
    summary: dict[str, Any] = {"comparisons": len(rows), "preferences": len(prefs), "identical_pairs": ties,
                               "below_confidence": unsure,
                               "mean_confidence": round(sum(p["ai_prob"] for p in prefs) / max(len(prefs), 1), 4)}
    return summary | gold_agreement(rows)


def gold_agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the judge's preferred response is gold's, over pairs gold does not tie (world prompts only)."""
    if not rows or not all("family" in r and "gold" in r for r in rows):
        return {}
    from tether.world.families import WorldItem
    from tether.world.grader import grade

    agree = total = 0
    for r in rows:
        item = WorldItem.from_metadata(r["prompt"], r)
        first, second = grade(item, r["first"]).reward, grade(item, r["second"]).reward
        if first == second:
            continue
        total += 1
        agree += (first > second) == (r["prob_first"] >= 0.5)
    return {"gold_decided_pairs": total, "gold_agreement": round(agree / total, 4) if total else None}
