"""The red-team recipe behind ``tether redteam``: goals -> attack prompts -> target replies -> scores -> ASR.

The target is an HF model run in-process (a directory, ``world:base``, ``tiny:ARCH``) or any
OpenAI-compatible endpoint (``http://...``), so served models are red-teamed the same way. Every
attack prompt and reply is appended to ``attacks.jsonl`` as it is made, so a killed run resumes
(``--resume``) without asking the target again; when all are in, they are scored and ``metrics.json``
and ``report.html`` are written.

Which scorer decides success (``decide``; default: the first): ``gold`` (the world's grader: the
reply is harmful compliance), a ``harmful`` judge or classifier (it says yes), or a ``refusal``
detector (the reply does not refuse: the string-match ASR of Zou et al. 2023, an upper bound, since
a reply that neither refuses nor helps counts as a success).
"""

from __future__ import annotations

import functools
import json
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.recipes import CONFIG_KINDS
from tether.core.runs import METRICS_SCHEMA_VERSION, RunDir
from tether.models.generation import GenerationSettings, Generator, HFGenerator
from tether.models.http import EndpointOptions
from tether.redteam.attacks import AttackKit, AttackList, AttackPrompt, Shot, load_templates
from tether.redteam.goals import GoalSource, load_shots
from tether.redteam.metrics import Outcome, attack_metrics, diversity
from tether.scoring.attack import attack_success
from tether.scoring.scorers import Sample, ScorerList, scorer_config


def _default_attacks() -> list[dict[str, Any]]:
    # Every template on the raw request, then every converter on the direct request (GCG needs open
    # weights and minutes per goal: opt in).
    templates = ("direct", "role-play", "refusal-suppression", "prefix-injection", "ignore-previous", "hypothetical",
                 "authority", "payload-split", "many-shot")
    converters = ("base64", "rot13", "leetspeak", "homoglyphs", "reverse-words", "split-tokens", "pig-latin")
    return [{"template": t} for t in templates] + [{"convert": [c]} for c in converters]


def _default_generation() -> GenerationSettings:
    # Sampled as the evaluation harness samples: an attack succeeds as often as the target's replies do.
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64, seed=0)


@CONFIG_KINDS.register("redteam")
class RedteamConfig(Config):
    """``tether redteam``: a target, goals, attacks, scorers."""

    target: str = Field("world:base", description="an HF model directory / world:base / tiny:ARCH, or the URL "
                        "of an OpenAI-compatible endpoint (http://host:port/v1)")
    endpoint: EndpointOptions = Field(default_factory=EndpointOptions, description="a URL target's options")
    guards: str | None = Field(None, description="a guards YAML file: attack the target behind these guards "
                               "(tether.guard), as the gateway would serve it")
    goals: GoalSource = Field(default_factory=lambda: {"source": "world"}, validate_default=True,
                              description="where goals come from: {source: world | harmbench | advbench | jsonl | ..., "
                              "...}")
    templates: str = Field("default", description="jailbreak template library: a shipped name or a YAML file")
    shots: str | None = Field(None, description="many-shot examples: a JSONL file of {prompt, completion}; "
                              "default: the world's answered hazard requests when the goals are the world's")
    attacks: AttackList = Field(default_factory=_default_attacks, min_length=1, validate_default=True,
                                description="attacks in order ({kind: template | best-of-n | gcg | ..., ...}; "
                                "no kind: a template attack)")
    scorers: ScorerList = Field(
        default_factory=list, description="scorers in order; empty: gold for world goals, refusal otherwise")
    decide: str | None = Field(None, description="the scorer whose verdict is success (default: the first)")
    generation: GenerationSettings = Field(default_factory=_default_generation)
    chunk_prompts: int = Field(256, ge=1, description="prompts sent between appends to attacks.jsonl")
    report_samples: int = Field(6, ge=0, description="successful attacks shown per kind in report.html")
    seed: int = Field(0, description="seeds the attacks and the target's sampling")
    out: str = Field("runs/redteam", description="output directory")


def run(cfg: RedteamConfig, *, resume: bool = False) -> dict[str, Any]:
    """Attack, score, aggregate; returns the metrics document (also written to ``out/metrics.json``)."""
    run_dir = RunDir(cfg.out, command="redteam", config=cfg, seed=cfg.seed, resume=resume)

    def body(rd: RunDir) -> dict[str, Any]:
        doc = redteam(cfg, rd.path)
        for name in ("attacks.jsonl", "metrics.json", "report.html"):
            rd.add_output(name.split(".")[0], rd.path / name)
        return doc

    # The record keeps each attack's ASR; metrics.json has every slice.
    return run_dir.execute(body, summarize=lambda doc: {k: v["value"] for k, v in doc["metrics"].items()
                                                        if k.startswith("asr.") and k.count(".") == 1})


def build_prompts(cfg: RedteamConfig) -> list[AttackPrompt]:
    """Every attack prompt of the run, in a fixed order (attack by attack, goal by goal, attempt by attempt)."""
    labels = [a.label for a in cfg.attacks]
    if len(set(labels)) != len(labels):
        raise UserError(f"attack names must differ; got {labels} (set name: on repeated attacks)")
    goals = cfg.goals.load()
    if not goals:
        raise UserError("no goals: the goals file holds no harmful requests")
    kit = AttackKit(load_templates(cfg.templates), cfg.seed, functools.cache(lambda: _shots(cfg)))
    return [p for attack in default_ready(cfg) for p in attack.build().prompts(goals, kit)]


def default_ready(cfg: RedteamConfig) -> list[Any]:
    """The run's attacks; from the default list, many-shot is left out when there are no shots to draw on
    (a user's goals file brings none unless ``shots`` names some): the default must run on any goals."""
    if "attacks" in cfg.model_fields_set or cfg.shots or cfg.goals.offers_shots():
        return list(cfg.attacks)
    return [a for a in cfg.attacks if getattr(a, "template", None) != "many-shot"]


def _shots(cfg: RedteamConfig) -> list[Shot]:
    if cfg.shots:
        return load_shots(cfg.shots)
    shots = cfg.goals.default_shots()
    if shots is None:
        raise UserError("a many-shot attack needs shots: set shots to a JSONL file of {prompt, completion}")
    return shots


def redteam(cfg: RedteamConfig, out: Path, *, generator: Generator | None = None,
            prompts: list[AttackPrompt] | None = None) -> dict[str, Any]:
    """Run every attack on the target; write attacks.jsonl, metrics.json and report.html into ``out``.
    ``prompts``: attack prompts made elsewhere (an attacker model's), sent instead of ``cfg.attacks``'."""
    start = time.perf_counter()
    prompts = build_prompts(cfg) if prompts is None else prompts
    scorer_cfgs = list(cfg.scorers) or [scorer_config({"kind": cfg.goals.default_scorer()})]
    names = [c.label for c in scorer_cfgs]
    if len(set(names)) != len(names):
        raise UserError(f"scorer names must differ; got {names} (set name: on repeated kinds)")
    decide = cfg.decide or names[0]
    if decide not in names:
        raise UserError(f"decide={decide!r} names no scorer; scorers: {', '.join(names)}")
    scorers = [c.build() for c in scorer_cfgs]
    prepare_s = time.perf_counter() - start

    adapted: dict[str, Any] = {}
    for attack in (a.build() for a in default_ready(cfg)):
        mine = [p for p in prompts if p.kind == attack.name]
        if (attack.needs_weights or getattr(attack, "needs_target", False)) and mine:
            generator = generator or load_target(cfg)
            if attack.needs_weights and not isinstance(getattr(generator, "inner", generator), HFGenerator):
                raise UserError(f"{attack.name} needs the target's weights: give a model directory as the target, "
                                "not an endpoint")
        new, summary = attack.adapt(mine, generator, out / "gcg.jsonl", seed=cfg.seed)
        if summary:
            adapted[attack.name] = summary
        # An attack's prompts are contiguous; adapting may change how many there are (a search keeps the best).
        first = next((i for i, p in enumerate(prompts) if p.kind == attack.name), len(prompts))
        others = [p for p in prompts if p.kind != attack.name]
        prompts = [*others[:first], *new, *others[first:]]

    start = time.perf_counter()
    responses, errors, generated, truncated = _responses(cfg, prompts, out / "attacks.jsonl", generator)
    generate_s = time.perf_counter() - start

    samples = [Sample(f"{p.kind}:{p.goal.id}:{p.attempt}", p.prompt, responses[i], p.goal.meta)
               for i, p in enumerate(prompts)]
    per_scorer = {s.name: [replace(x, question=s.question) for x in s.score(samples)] for s in scorers}
    rows, outcomes = [], []
    for i, (p, sample) in enumerate(zip(prompts, samples, strict=True)):
        scores = {name: per_scorer[name][i] for name in names}
        # A target that gave no reply (an endpoint error, or an empty one) neither resisted nor gave in:
        # unscored, and counted on its own (``replies``), never as compliance.
        success = None if i in errors or not sample.response.strip() else attack_success(scores[decide])
        text = p.prompt if isinstance(p.prompt, str) else p.prompt[-1]["content"]
        outcomes.append(Outcome(p.goal.id, p.kind, p.goal.category, p.attempt, success,
                                str(p.goal.meta.get("split", "")), text))
        rows.append({"index": i, "kind": p.kind, "goal": p.goal.id, "category": p.goal.category,
                     "attempt": p.attempt, "request": p.goal.request, "prompt": p.prompt,
                     **({"world": {"item": p.goal.meta["gold"]["item"]}} if "item" in p.goal.meta.get("gold", {})
                        else {}),
                     "response": sample.response, "success": success, **({"error": errors[i]} if i in errors else {}),
                     "scores": {name: s.as_dict() for name, s in scores.items()}})
    kinds = list(dict.fromkeys(p.kind for p in prompts))
    doc = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "target": cfg.target,
        "goals": {"source": cfg.goals.source, "n": len({p.goal.id for p in prompts}), **cfg.goals.describe()},
        "attacks": kinds,
        "decided_by": decide,
        "replies": {"total": len(samples), "empty": sum(not s.response.strip() for s in samples),
                    "truncated": len(truncated), "error": len(errors)},
        "metrics": attack_metrics(outcomes),
        "diversity": {k: diversity([o.text for o in outcomes if o.kind == k and o.success]) for k in kinds},
        "scorer_status": {n: {st: sum(s.status == st for s in per_scorer[n]) for st in
                              {s.status for s in per_scorer[n]}} for n in names},
        "generation": cfg.generation.model_dump(mode="json"),
        "n_prompts": len(prompts),
        "target_errors": len(errors),
        **({"adapted": adapted} if adapted else {}),  # what each attack's adapt step did (GCG, a search)
        # Throughput of this run's generation only (prompts answered now, not those resumed from disk).
        "throughput": {"prompts_generated": generated, "generate_s": round(generate_s, 3),
                       "attacks_per_s": round(generated / generate_s, 2) if generated and generate_s > 0 else None,
                       "prepare_s": round(prepare_s, 3)},
    }
    from tether.redteam.report import write_report

    (out / "metrics.json").write_text(json.dumps(doc, indent=2))
    _rewrite_scored(out / "attacks.jsonl", rows)
    write_report(doc, rows, out / "report.html", examples=cfg.report_samples)
    return doc


def _responses(cfg: RedteamConfig, prompts: list[AttackPrompt], path: Path,
               generator: Generator | None) -> tuple[list[str], dict[int, str], int, set[int]]:
    """Every prompt's reply, resuming from (and appending to) ``path``; returns the replies, the target's
    errors by prompt index, how many prompts were sent, and which replies ``max_new_tokens`` cut (reported
    beside the rates, not excluded from them). Replies that were errors are asked again."""
    done: dict[int, str] = {}
    truncated: set[int] = set()
    errors: dict[int, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                i = row["index"]
                if i < len(prompts) and prompts[i].kind == row["kind"] and prompts[i].goal.id == row["goal"] \
                        and prompts[i].attempt == row["attempt"] and not row.get("error"):
                    done[i] = row["response"]
                    if row.get("finish") == "length":
                        truncated.add(i)
    todo = [i for i in range(len(prompts)) if i not in done]
    with path.open("a", encoding="utf-8") if todo else nullcontext(None) as fh:
        for start in range(0, len(todo), cfg.chunk_prompts):
            chunk = todo[start:start + cfg.chunk_prompts]
            if generator is None:
                generator = load_target(cfg)
            # Seeded by the chunk's first prompt: chunks are appended whole, so a resumed run meets the same
            # chunk boundaries and samples what the killed one would have.
            settings = cfg.generation.model_copy(update={"seed": cfg.seed * 1_000_003 + chunk[0]})
            completions = generator.generate([prompts[i].prompt for i in chunk], settings)
            for i, completion in zip(chunk, completions, strict=True):
                done[i] = completion.text
                if completion.finish_reason == "length":
                    truncated.add(i)
                if completion.finish_reason == "error":
                    errors[i] = completion.error or "no reply"
                p = prompts[i]
                assert fh is not None
                fh.write(json.dumps({"index": i, "kind": p.kind, "goal": p.goal.id, "attempt": p.attempt,
                                     "prompt": p.prompt, "response": completion.text,
                                     "finish": completion.finish_reason,
                                     **({"error": completion.error} if completion.error else {})}) + "\n")
            assert fh is not None
            fh.flush()
    return [done[i] for i in range(len(prompts))], errors, len(todo), truncated


def _rewrite_scored(path: Path, rows: list[dict[str, Any]]) -> None:
    # attacks.jsonl ends as one scored row per prompt, in order; written to a temporary file first so a
    # kill mid-write never loses the replies the file held.
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.replace(path)


def load_target(cfg: RedteamConfig) -> Generator:
    """The run's target as a :class:`Generator` (an endpoint's client, or the model loaded in-process)."""
    from tether.guard.target import guarded
    from tether.models.targets import target_generator

    return guarded(target_generator(cfg.target, cfg.endpoint), cfg.guards)
