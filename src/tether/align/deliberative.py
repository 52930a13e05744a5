"""Deliberative alignment's data and judge (Guan et al. 2024): replies that reason over a written spec
(:mod:`tether.align.spec`) before answering, made with the spec in context and kept when a spec-aware judge
passes them, so that training *without* the spec in context teaches the model to recall it.

For each prompt (``tether align deliberative`` runs this, then SFT, then RL with :class:`SpecJudgeReward`):

1. **the clause**: the one governing the prompt's category (its ``category_key`` metadata, as the paper's
   prompts carry a safety category) or, for a prompt without one, the clause the model itself finds most
   likely to cite with the spec in context;
2. **the reasoning**, by ``mode``:

   - ``cite``: the reasoning block is the clause's citation, and the model writes ``samples`` answers with
     the governing clause (``context: clause``, the paper's category-specific spec) or the whole spec in its
     system turn. For small models, which cannot be asked to reason (the world's cannot: in ``free`` mode it
     writes no reasoning block at all);
   - ``free``: the model, with the spec and an instruction in context, writes its own reasoning block and
     answer ``samples`` times (an instruction-tuned model); replies whose block never closes are dropped;

3. **the judge** (:class:`SpecJudge`) reads the prompt, the answer (never the reasoning, as in the paper)
   and the clause's rule, and scores log p(ok) − log p(flawed) under a critique request; the best-scoring
   answer of each prompt is kept if its score is at least ``min_score``.

The kept rows (``{"messages": [...prompt without the spec..., reasoning block + answer]}``) are SFT data.
Everything is seeded per prompt, so a rerun draws the same replies.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from tether.align.constitution import Messages, as_messages, last_request
from tether.align.spec import CITATION, Clause, Spec, citation, load_spec, render_spec
from tether.core.config import Config
from tether.models.chat import render
from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.logprobs import continuation_logps
from tether.models.reasoning import ReasoningFormat, join_reasoning, split_reasoning
from tether.scoring.rewards import REWARDS, Completions, RewardConfig, RewardOutput


class JudgeTemplate(Config):
    """How the spec-aware judge is asked: a critique request, and the two critiques whose log-probs it compares.
    The defaults are the form the world's corpus teaches its base model."""

    request: str = Field("Request: {request}\nReply: {response}\nPrinciple: {rule}\nCritique the reply.",
                         description="the judge's one user turn; {request}, {response}, {rule} (the clause's text)")
    ok: str = Field("The reply follows the principle.", description="a critique that finds no fault")
    flawed: str = Field("The reply breaks the principle", description="a critique that finds one")


def _sampling() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64)


class DeliberationSettings(Config):
    """How deliberative data is made (see the module docstring)."""

    mode: Literal["cite", "free"] = Field("cite", description="cite: the reasoning cites the governing clause; "
                                          "free: the model writes its own reasoning")
    reasoning: ReasoningFormat = Field(default_factory=ReasoningFormat, description="the reasoning block's delimiters")
    category_key: str | None = Field("family", description="the prompt metadata naming its category (null: the "
                                     "model picks the clause for every prompt)")
    context: Literal["clause", "spec"] = Field(
        "clause", description="cite mode: what the answers are written with in context: the governing clause (the "
        "paper's category-specific spec) or the whole spec")
    details: bool = Field(True, description="show each clause's detail with the spec in context (off: the rules "
                          "only, for a model whose context is short)")
    samples: int = Field(4, ge=1, description="answers sampled per prompt; the judge keeps the best")
    min_score: float | None = Field(0.0, description="a kept answer's judge score is at least this (null: keep the "
                                    "best whatever its score)")
    instruction: str = Field(
        "Before you answer, think about which clauses of this specification apply to the request and what they "
        "require, inside {open} {close}; then give your answer.",
        description="free mode: follows the spec in the system turn; {open} and {close} are the delimiters")
    citation: str = Field(CITATION, description="cite mode: how the reasoning cites a clause "
                          "({id}, {title}, {text}); the world's uses the rule alone, words its tokenizer knows")
    judge: JudgeTemplate = Field(default_factory=JudgeTemplate)
    generation: GenerationSettings = Field(default_factory=_sampling, description="sampling the answers")
    batch_size: int = Field(32, ge=1, description="judge and clause-choice forwards per batch")


def with_spec(spec: Spec, prompt: Messages, instruction: str | None = None, *, details: bool = True,
              only: Clause | None = None) -> Messages:
    """``prompt`` with the spec (or ``only`` one clause of it) and an instruction in its system turn, in front of
    any system text it had."""
    shown = spec if only is None else spec.model_copy(update={"clauses": [only]})
    text = render_spec(shown, details=details) + (f"\n\n{instruction}" if instruction else "")
    system = [m["content"] for m in prompt if m["role"] == "system"]
    rest = [m for m in prompt if m["role"] != "system"]
    return [{"role": "system", "content": "\n\n".join([text, *system])}, *rest]


def category_clauses(spec: Spec, metas: Sequence[dict[str, Any]], key: str | None) -> list[Clause | None]:
    """The clause governing each prompt's category, or None where it has none (or no clause governs it)."""
    return [None if key is None else spec.for_category(_category(meta, key)) for meta in metas]


def _category(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return None if value is None else str(value)


@torch.no_grad()
def chosen_clauses(model: Any, tokenizer: Any, spec: Spec, prompts: Sequence[Messages], fmt: ReasoningFormat, *,
                   details: bool = True, template: str = CITATION, batch_size: int = 32) -> list[Clause]:
    """The clause ``model`` finds most likely to cite, with the spec in context, at the start of its reply."""
    contexts, conts = [], []
    for prompt in prompts:
        context = render(tokenizer, with_spec(spec, prompt, details=details), add_generation_prompt=True) + fmt.open
        for clause in spec.clauses:
            contexts.append(context)
            conts.append(citation(clause, template))
    scores = continuation_logps(model, tokenizer, contexts, conts, batch_size=batch_size)
    k = len(spec.clauses)
    best = [max(range(k), key=scores[i * k:(i + 1) * k].__getitem__) for i in range(len(prompts))]
    return [spec.clauses[j] for j in best]


class SpecJudge:
    """A causal LM scoring an answer against one clause: log p(ok) − log p(flawed) under the critique request."""

    def __init__(self, model: Any, tokenizer: Any, template: JudgeTemplate, *, batch_size: int = 32) -> None:
        self.model, self.tokenizer, self.template, self.batch_size = model, tokenizer, template, batch_size

    @torch.no_grad()
    def score(self, items: Sequence[tuple[Messages, str, Clause]]) -> list[float]:
        """One score per (prompt, answer, clause)."""
        contexts, conts = [], []
        for prompt, answer, clause in items:
            request = self.template.request.format(request=last_request(prompt), response=answer, rule=clause.text)
            context = render(self.tokenizer, [{"role": "user", "content": request}], add_generation_prompt=True)
            contexts += [context, context]
            conts += [self.template.ok, self.template.flawed]
        lp = continuation_logps(self.model, self.tokenizer, contexts, conts, batch_size=self.batch_size)
        return [lp[2 * k] - lp[2 * k + 1] for k in range(len(items))]


@dataclass
class Deliberation:
    """One prompt's deliberation: the clause, each sampled (reasoning, answer) with its judge score, and the kept
    reply (None when none passed)."""

    clause: str
    clause_source: Literal["category", "model"]
    model_clause: str          # the clause the model itself picked (for agreement with the category's)
    candidates: list[dict[str, Any]]
    kept: int | None


def deliberate(model: Any, tokenizer: Any, judge: SpecJudge, spec: Spec, rows: Sequence[dict[str, Any]],
               settings: DeliberationSettings, *, seed: int, indices: Sequence[int],
               given: Sequence[str] | None = None) -> list[Deliberation]:
    """Deliberate over ``rows`` (prompt records as dicts: ``prompt`` plus metadata); ``indices`` number them
    for seeding. ``given``: one answer per row (a demonstration) instead of sampled ones (cite mode: the
    reasoning cites the governing clause; the judge still decides whether it is kept)."""
    fmt = settings.reasoning
    prompts = [as_messages(r["prompt"]) for r in rows]
    labelled = category_clauses(spec, rows, settings.category_key)
    picked = chosen_clauses(model, tokenizer, spec, prompts, fmt, details=settings.details,
                            template=settings.citation, batch_size=settings.batch_size)
    clauses = [lab or own for lab, own in zip(labelled, picked, strict=True)]
    generator = HFGenerator(model, tokenizer)
    k = 1 if given is not None else settings.samples
    seeds = [random.Random(f"deliberate:{seed}:{i}:{j}").randrange(2**31) for i in indices for j in range(k)]
    if given is not None:
        replies = [(citation(c, settings.citation), answer.strip(), True)
                   for c, answer in zip(clauses, given, strict=True)]
    elif settings.mode == "cite":
        starts = [with_spec(spec, p, details=settings.details, only=c if settings.context == "clause" else None)
                  for p, c in zip(prompts, clauses, strict=True)]
        texts = [c.text for c in generator.generate([s for s in starts for _ in range(k)], settings.generation,
                                                    seeds=seeds)]
        replies = [(citation(clauses[n // k], settings.citation), t.strip(), True) for n, t in enumerate(texts)]
    else:
        instruction = settings.instruction.format(open=fmt.open, close=fmt.close)
        starts = [with_spec(spec, p, instruction, details=settings.details) for p in prompts]
        texts = [c.text for c in generator.generate([s for s in starts for _ in range(k)], settings.generation,
                                                    seeds=seeds)]
        # A reply without a reasoning block has not deliberated: it is not kept (closed, but no reasoning).
        replies = [tuple(split_reasoning(t, fmt)) for t in texts]  # type: ignore[misc]
    scores = judge.score([(prompts[n // k], answer, clauses[n // k]) for n, (_, answer, _) in enumerate(replies)])
    out = []
    for i in range(len(rows)):
        candidates = [{"reasoning": replies[i * k + j][0], "answer": replies[i * k + j][1],
                       "closed": replies[i * k + j][2], "score": round(scores[i * k + j], 4)} for j in range(k)]
        usable = [j for j, c in enumerate(candidates) if c["closed"] and c["answer"] and c["reasoning"]
                  and (settings.min_score is None or c["score"] >= settings.min_score)]
        kept = max(usable, key=lambda j: candidates[j]["score"]) if usable else None
        out.append(Deliberation(clauses[i].id, "category" if labelled[i] is not None else "model", picked[i].id,
                                candidates, kept))
    return out


def training_row(row: dict[str, Any], deliberation: Deliberation, fmt: ReasoningFormat) -> dict[str, Any] | None:
    """The SFT row a kept deliberation makes: the prompt *without* the spec, and the reasoning block and answer."""
    if deliberation.kept is None:
        return None
    chosen = deliberation.candidates[deliberation.kept]
    meta = {k: v for k, v in row.items() if k != "prompt"}
    return {"messages": [*as_messages(row["prompt"]), {"role": "assistant",
                                                       "content": join_reasoning(chosen["reasoning"], chosen["answer"],
                                                                                 fmt)}],
            "clause": deliberation.clause, "judge_score": chosen["score"], **meta}


# --- the RL stage's reward ------------------------------------------------------------------------

@REWARDS.register("spec-judge")
class SpecJudgeRewardConfig(RewardConfig):
    """The spec-aware judge's score of each completion's answer against the clause governing its prompt."""

    kind: Literal["spec-judge"] = "spec-judge"
    spec: str = Field(description="the spec: shipped name, YAML or Markdown file")
    judge: str = Field(description="the judge model: directory, hub id or world:SIZE")
    category_key: str | None = Field("family", description="prompt metadata naming its category; prompts without "
                                     "one are judged against the clause the judge picks with the spec in context")
    reasoning: ReasoningFormat = Field(default_factory=ReasoningFormat)
    details: bool = Field(True, description="the spec's details in context where the judge picks a clause")
    citation: str = Field(CITATION, description="how a clause is cited where the judge picks one")
    template: JudgeTemplate = Field(default_factory=JudgeTemplate)
    unclosed: float = Field(-10.0, description="the reward of a reply whose reasoning block never closes, or "
                            "that has no answer after it")
    batch_size: int = Field(32, ge=1)

    def build(self) -> SpecJudgeReward:
        """Loads the judge and the spec."""
        from tether.models.loading import ModelConfig, load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(ModelConfig(path=self.judge))
        model.eval()
        return SpecJudgeReward(SpecJudge(model, tokenizer, self.template, batch_size=self.batch_size),
                               load_spec(self.spec), self)


class SpecJudgeReward:
    """Scores completions for RL: the judge sees the spec's governing clause and the answer, not the reasoning."""

    parts: tuple[str, ...] = ("unclosed",)

    def __init__(self, judge: SpecJudge, spec: Spec, cfg: SpecJudgeRewardConfig) -> None:
        self.judge, self.spec, self.cfg = judge, spec, cfg

    def __call__(self, batch: Completions) -> RewardOutput:
        """One judge score per completion (``unclosed`` where its answer is missing)."""
        prompts = [as_messages(p) for p in batch.prompts]
        labelled = category_clauses(self.spec, batch.metas, self.cfg.category_key)
        missing = [i for i, c in enumerate(labelled) if c is None]
        if missing:
            own = chosen_clauses(self.judge.model, self.judge.tokenizer, self.spec, [prompts[i] for i in missing],
                                 self.cfg.reasoning, details=self.cfg.details, template=self.cfg.citation,
                                 batch_size=self.cfg.batch_size)
            for i, clause in zip(missing, own, strict=True):
                labelled[i] = clause
        splits = [split_reasoning(t, self.cfg.reasoning) for t in batch.texts]
        ok = [i for i, s in enumerate(splits) if s.closed and s.answer]
        scores = self.judge.score([(prompts[i], splits[i].answer, labelled[i]) for i in ok])  # type: ignore[misc]
        values = torch.full((len(splits),), self.cfg.unclosed)
        for i, s in zip(ok, scores, strict=True):
            values[i] = s
        answered = set(ok)
        unclosed = torch.tensor([0.0 if i in answered else 1.0 for i in range(len(splits))])
        return RewardOutput(values, {"unclosed": unclosed})
