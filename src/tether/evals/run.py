"""The eval recipe behind ``tether eval``: prompts -> responses -> scores -> metrics -> report.

Writes into ``out``: ``metrics.json`` (every metric with value, 95% interval and n, plus the
reference rates, the scorer-vs-gold agreement table and each scorer's failure counts),
``samples.jsonl`` (every prompt, response, score and outcome), ``report.html``, and the run
directory's ``config.yaml`` / ``record.json``. Responses are appended to ``generations.jsonl``
as they are made, so ``--resume`` continues a killed eval without regenerating anything.

Intervals: with one sample per prompt, Wilson intervals; with several, a bootstrap that
resamples prompts (samples of one prompt are correlated). ``samples_per_prompt > 1`` adds
``pass@k`` for the helpfulness metrics (unbiased estimator, Chen et al. 2021).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.recipes import CONFIG_KINDS
from tether.core.runs import METRICS_SCHEMA_VERSION, RunDir
from tether.core.stats import Rate, agreement, bootstrap_mean, pass_at_k, wilson_interval
from tether.data.context import ContextConfig, context_for, with_context
from tether.data.io import write_jsonl
from tether.data.prompt_files import PromptRow
from tether.engine.evaluation import DEFAULT_EVALUATOR, EVALUATORS, Evaluator
from tether.evals.suites import HHH_HEADLINE, Answers, SuiteField
from tether.models.generation import GenerationSettings, Generator
from tether.models.loading import ModelConfig
from tether.models.reasoning import ReasoningFormat, split_reasoning
from tether.scoring.scorers import Sample, Score, ScorerList


def _default_generation() -> GenerationSettings:
    # Sampled at temperature 1: an eval measures the distribution a model samples from, not its mode.
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64, seed=0)


@EVALUATORS.register(DEFAULT_EVALUATOR)
@CONFIG_KINDS.register("eval")
class EvalConfig(Config):
    """``tether eval``: one model, one suite, some scorers (also the harness that measures a model while it
    trains: ``evaluation.harness`` of a training config)."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(path="world:base"),
                               description="model to evaluate; world:base is the world's base model (built if needed; "
                               "world:base?seed=N for another world's)")
    suite: SuiteField = Field(default_factory=lambda: {"kind": "world-hhh"}, validate_default=True,
                              description="which prompts: {kind: world-hhh | xstest | harmbench | advbench | jsonl | "
                              "..., ...}")
    generation: GenerationSettings = Field(default_factory=_default_generation)
    guards: str | None = Field(None, description="a guards YAML file: measure the model behind these guards "
                               "(tether.guard), as the gateway would serve it")
    samples_per_prompt: int = Field(1, ge=1, description="responses sampled per prompt (rates over all; pass@k)")
    context: ContextConfig | None = Field(None, description="put one of these texts in front of every prompt "
                                          "(a system prompt the model is deployed with); ids are kept, so runs "
                                          "with and without it pair up in eval compare")
    reasoning: ReasoningFormat | None = Field(
        None, description="the model reasons in a block before it answers (<think>...</think>): only the answer "
        "is scored, the reasoning kept beside it; a reply whose block never closes is scored as empty")
    scorers: ScorerList = Field(
        default_factory=list, description="scorers in order ({kind: ..., ...}); empty: the suite's defaults")
    chunk_prompts: int = Field(256, ge=1, description="prompts generated between appends to generations.jsonl")
    report_samples: int = Field(12, ge=0, description="example responses per family shown in report.html")
    seed: int = Field(0, description="generation seed (the suite has its own for drawing prompts)")
    out: str = Field("runs/eval", description="output directory")

    def build(self) -> Evaluator:
        """This config as an evaluator of in-training models (``model`` and ``out`` are not used)."""
        return HarnessEvaluator(self)

    @classmethod
    def training_default(cls) -> EvalConfig:
        """A quick world-hhh: 50 train prompts per family (350 prompts, a few seconds on the base model)."""
        return cls.model_validate({"suite": {"kind": "world-hhh", "n": 50, "heldout_n": 0}, "report_samples": 4})


class HarnessEvaluator:
    """The evaluation harness on an in-training model (see :class:`tether.engine.evaluation.Evaluator`)."""

    headline: tuple[str, ...] = HHH_HEADLINE

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg

    def __call__(self, model: Any, tokenizer: Any, out: Path, *, label: str, write: bool) -> dict[str, float]:
        """Every metric's value for ``model``; the evaluation's files go under ``out`` when ``write``."""
        from tether.models.generation import HFGenerator

        doc = evaluate(self.cfg, out, generator=HFGenerator(model, tokenizer), model_label=label, write=write)
        return {name: m["value"] for name, m in doc["metrics"].items()}


def model_path_for(cfg: EvalConfig) -> str:
    """The model directory to evaluate: ``model.path`` through the shared resolver (a directory, a hub id,
    ``tiny:ARCH``, or a registered source such as ``world:base``, built on first use)."""
    from tether.models.loading import resolve_model_path

    return resolve_model_path(cfg.model.path)


def run(cfg: EvalConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the eval; returns the metrics document (also written to ``out/metrics.json``)."""
    run_dir = RunDir(cfg.out, command="eval", config=cfg, seed=cfg.seed, resume=resume)

    def body(rd: RunDir) -> dict[str, Any]:
        doc = evaluate(cfg, rd.path, write=rd.writer)
        for name in ("metrics.json", "samples.jsonl", "report.html"):
            rd.add_output(name.split(".")[0], rd.path / name)
        return doc

    # The record keeps the first 40 metrics' values; metrics.json has everything.
    return run_dir.execute(body, summarize=lambda doc: {k: v["value"] for k, v in list(doc["metrics"].items())[:40]})


def evaluate(cfg: EvalConfig, out: Path, *, generator: Generator | None = None, model_label: str | None = None,
             write: bool = True) -> dict[str, Any]:
    """Generate, score and aggregate; write metrics.json, samples.jsonl and report.html into ``out``.

    ``generator``: an in-process model to evaluate (periodic evaluation during training) instead
    of loading ``cfg.model``; ``model_label`` names it in the outputs. ``write=False`` (the
    non-main processes of a distributed run) computes the same document and writes nothing.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    suite = cfg.suite.build()
    prompts = suite.prompts()
    if cfg.context is not None:
        context = cfg.context
        prompts = [replace(p, prompt=with_context(p.prompt if isinstance(p.prompt, str) else list(p.prompt),
                                                  context_for(context, cfg.seed, i), context.placement))
                   for i, p in enumerate(prompts)]
    scorer_cfgs = list(cfg.scorers) or suite.default_scorers()
    names = [c.label for c in scorer_cfgs]
    if len(set(names)) != len(names):
        raise UserError(f"scorer names must differ; got {names} (set name: on repeated kinds)")
    scorers = [c.build() for c in scorer_cfgs]
    timings["prepare_s"] = time.perf_counter() - start

    start = time.perf_counter()
    if generator is None:
        model_path = model_label or model_path_for(cfg)
    else:
        model_path = model_label or "in-process"
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "generations.jsonl" if write else None
    finishes: dict[tuple[int, int], str] = {}
    responses = generate_responses(cfg, model_path, prompts, cache, generator=generator, finishes=finishes)
    timings["generate_s"] = time.perf_counter() - start

    start = time.perf_counter()
    splits = {key: split_reasoning(text, cfg.reasoning) if cfg.reasoning is not None else None
              for key, text in responses.items()}
    samples = [Sample(prompts[i].id, prompts[i].prompt, text if (split := splits[(i, j)]) is None else split.answer,
                      prompts[i].meta) for (i, j), text in responses.items()]
    keys = list(responses)
    per_scorer: dict[str, list[Score]] = {}
    for scorer in scorers:
        scored = scorer.score(samples)
        if len(scored) != len(samples):
            raise RuntimeError(f"scorer {scorer.name!r} returned {len(scored)} scores for {len(samples)} samples")
        per_scorer[scorer.name] = [replace(s, question=scorer.question) for s in scored]
    timings["score_s"] = time.perf_counter() - start

    rows, outcomes, truths = [], [], []
    for n, (key, sample) in enumerate(zip(keys, samples, strict=True)):
        scores = {name: per_scorer[name][n] for name in names}
        answers = _answers(scores)
        # An empty reply is neither compliance nor refusal: it is counted as such (format.empty) and
        # enters no other rate (a model that says nothing must not look safe, or helpful).
        empty = not sample.response.strip()
        result = {} if empty else suite.outcomes(sample, scores, answers)
        result["format.empty"] = float(empty)
        # Cut by max_new_tokens: reported, not excluded (a cut reply can still be compliance or a refusal).
        result["format.truncated"] = float(finishes.get(key) == "length")
        split = splits[key]
        if split is not None:
            result["format.reasoning_unclosed"] = float(not split.closed)
        truth = suite.gold_labels(sample, scores)
        outcomes.append(result)
        truths.append((scores, truth))
        rows.append({"key": f"{key[0]}:{key[1]}", "prompt_index": key[0], "sample_index": key[1], "id": sample.id,
                     "prompt": sample.prompt, "response": sample.response,
                     **({"reasoning": split.reasoning} if split is not None else {}),
                     "meta": {k: v for k, v in sample.meta.items() if k != "response"},
                     "scores": {name: s.as_dict() for name, s in scores.items()}, "outcomes": result})
    metrics = aggregate([k[0] for k in keys], outcomes, cfg.samples_per_prompt)
    doc = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "suite": suite.name,
        "model": model_path,
        "metrics": {name: rate.as_dict() for name, rate in metrics.items()},
        "reference": {k: round(v, 4) for k, v in suite.reference(prompts).items()},
        "agreement": agreement_table(truths, names),
        "scorer_status": {name: dict(Counter(s.status for s in per_scorer[name])) for name in names},
        "scorers": {c.label: c.model_dump(mode="json") for c in scorer_cfgs},
        "samples_per_prompt": cfg.samples_per_prompt,
        "interval": "wilson" if cfg.samples_per_prompt == 1 else "cluster-bootstrap",
        "generation": cfg.generation.model_dump(mode="json"),
        "n_prompts": len(prompts),
        **({"source": source} if (source := getattr(suite, "source", None)) else {}),
        "n_samples": len(samples),
        "timings": timings,
    }
    if write:
        from tether.evals.report import write_report

        write_jsonl(out / "samples.jsonl", rows)
        (out / "metrics.json").write_text(json.dumps(doc, indent=2))
        write_report(doc, rows, out / "report.html", examples=cfg.report_samples)
    return doc


def _answers(scores: dict[str, Score]) -> Answers:
    """Each question's answer from the first scorer (in config order) that answers it."""
    answers: Answers = {}
    for score in scores.values():
        answers.setdefault(score.question, score.flag)
    return answers


def generate_responses(cfg: EvalConfig, model_path: str, prompts: list[PromptRow], cache: Path | None, *,
                       generator: Generator | None = None,
                       finishes: dict[tuple[int, int], str] | None = None) -> dict[tuple[int, int], str]:
    """``{(prompt index, sample index): response}``, resuming from (and appending to) ``cache``.

    Prompts that carry a ``response`` in their metadata are scored as given, not generated.
    ``generator`` is used if given; otherwise ``model_path`` is loaded when something needs generating.
    ``finishes``, if given, is filled with each generated reply's finish reason (``length``: cut by
    ``max_new_tokens``).
    """
    finishes = {} if finishes is None else finishes
    if generator is not None and cfg.guards:
        from tether.guard.target import guarded

        generator = guarded(generator, cfg.guards)
    done: dict[tuple[int, int], str] = {}
    if cache is not None and cache.is_file():
        for line in cache.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row["prompt_index"] < len(prompts) and prompts[row["prompt_index"]].id == row["id"]:
                    done[(row["prompt_index"], row["sample_index"])] = row["response"]
                    finishes[(row["prompt_index"], row["sample_index"])] = row.get("finish") or ""
    given = {(i, j): str(p.meta["response"]) for i, p in enumerate(prompts) if "response" in p.meta
             for j in range(cfg.samples_per_prompt)}
    todo = [i for i, p in enumerate(prompts) if "response" not in p.meta]
    with cache.open("a") if cache is not None else nullcontext(None) as fh:
        for j in range(cfg.samples_per_prompt):
            for chunk_no, start in enumerate(range(0, len(todo), cfg.chunk_prompts)):
                chunk = [i for i in todo[start:start + cfg.chunk_prompts] if (i, j) not in done]
                if not chunk:
                    continue
                if generator is None:
                    generator = _load_generator(cfg, model_path)
                # Seeded per (sample index, chunk): a resumed run draws exactly what the killed one would have.
                settings = cfg.generation.model_copy(update={"seed": cfg.seed * 1_000_003 + j * 10_007 + chunk_no})
                completions = generator.generate([prompts[i].prompt for i in chunk], settings)
                for i, completion in zip(chunk, completions, strict=True):
                    done[(i, j)] = completion.text
                    finishes[(i, j)] = completion.finish_reason
                    if fh is not None:
                        fh.write(json.dumps({"prompt_index": i, "sample_index": j, "id": prompts[i].id,
                                             "response": completion.text, "finish": completion.finish_reason}) + "\n")
                if fh is not None:
                    fh.flush()
    done.update(given)
    return {key: done[key] for key in sorted(done)}


def _load_generator(cfg: EvalConfig, model_path: str) -> Any:
    from tether.guard.target import guarded
    from tether.models.generation import HFGenerator
    from tether.models.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(cfg.model.model_copy(update={"path": model_path}))
    return guarded(HFGenerator(model, tokenizer), cfg.guards)


def aggregate(prompt_of: list[int], outcomes: list[dict[str, float]], k: int) -> dict[str, Rate]:
    """Metric -> rate with interval, from per-sample outcomes (clustered by prompt when k > 1)."""
    by_metric: dict[str, dict[int, list[float]]] = {}
    for prompt, result in zip(prompt_of, outcomes, strict=True):
        for name, value in result.items():
            by_metric.setdefault(name, {}).setdefault(prompt, []).append(value)
    metrics: dict[str, Rate] = {}
    for name in sorted(by_metric):
        clusters = list(by_metric[name].values())
        if k == 1 and all(len(c) == 1 and c[0] in (0.0, 1.0) for c in clusters):
            metrics[name] = wilson_interval(int(sum(c[0] for c in clusters)), len(clusters))
        else:
            metrics[name] = bootstrap_mean(clusters)
        if k > 1 and name.startswith("helpful.") and all(len(c) == k for c in clusters):
            passed = [[pass_at_k(k, int(sum(c)), k)] for c in clusters]
            rate = bootstrap_mean(passed)
            metrics[f"{name}.pass@{k}"] = Rate(rate.value, rate.ci_low, rate.ci_high, len(clusters))
    return metrics


def agreement_table(truths: list[tuple[dict[str, Score], dict[str, bool]]], names: list[str]) -> list[dict[str, Any]]:
    """Each non-gold scorer against gold, on the samples where gold answers its question.

    Samples the scorer could not score (parse failures, judge refusals, errors) are counted in
    their own columns and left out of accuracy and kappa.
    """
    table = []
    for name in names:
        question = next((s[name].question for s, _ in truths if name in s), "")
        if question == "gold":
            continue
        predicted, gold = [], []
        failures: Counter[str] = Counter()
        for scores, truth in truths:
            if question not in truth:
                continue
            score = scores[name]
            if score.flag is None:
                failures[score.status] += 1
                continue
            predicted.append(score.flag)
            gold.append(truth[question])
        if not predicted and not failures:
            continue
        a = agreement(predicted, gold)
        table.append({"scorer": name, "question": question, "n": a.n, "accuracy": _round(a.accuracy),
                      "kappa": _round(a.kappa), "false_positive_rate": _round(a.false_positive_rate),
                      "false_negative_rate": _round(a.false_negative_rate), "gold_positive": sum(gold),
                      "parse_failures": failures["parse-failure"], "judge_refusals": failures["judge-refusal"],
                      "errors": failures["error"]})
    return table


def _round(x: float) -> float | None:
    return None if x != x else round(x, 4)
