"""The attacker-model loop (Perez et al. 2022): a red-team model writes attacks, the target answers, a
scorer judges, and the attacker gets better — by stochastic few-shot (successful attacks so far become
examples in its prompt) and by RL (reward = success + a diversity bonus).

Stages, each in its own directory under ``out`` (``--resume`` skips the finished ones):

1. ``target`` (optional ``target_train``: an SFT config run on ``target`` first, e.g. the world's
   helpful-only assistant, the model attacked);
2. ``init`` (optional): supervised learning that teaches a small attacker the format — the attacker
   prompt -> a goal's request in one of ``init_kinds``' jailbreak templates, imitating its examples
   when it has some (:func:`tether.redteam.attacker.init_rows`); a capable attacker skips it;
3. ``measure-init``: the attacker writes ``samples`` attacks per goal, the target answers, the scorer
   judges (a red-team run: ``attacks.jsonl``, ``metrics.json``, ``report.html``);
4. ``few-shot-1..few_shot_rounds``: the same attacker, with ``shots`` successful attacks on *other*
   goals drawn from the pool of everything that has succeeded so far as examples in its prompt;
5. ``rl``: GRPO on the attacker with an ``attack`` reward (the target, the scorer, ``novelty``), then
   ``measure-rl`` without examples.

``attacker.json`` tabulates per stage: attack success per attempt and per goal (any of ``samples``),
how many distinct successful attacks were found and how diverse they are, and which template
families the attacker's messages use.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tether.core.config import Config, load_config
from tether.core.recipes import RECIPES, output, recipe
from tether.core.runs import RunDir, read_metrics, run_stage
from tether.data.io import write_jsonl
from tether.models.generation import GenerationSettings
from tether.models.http import EndpointOptions
from tether.pipelines.stages import Stage
from tether.redteam.attacker import DEFAULT_INSTRUCTION
from tether.redteam.goals import GoalSource


def _attacker_generation() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=64, temperature=1.0, batch_size=64)


def _target_generation() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64)


class AttackerConfig(Config):
    """``tether redteam attacker``: an attacker model against a target, improved by few-shot and by RL."""

    attacker: str = Field("world:base", description="the attacker model (a directory, world:base, tiny:ARCH)")
    target: str = Field("world:base", description="the model attacked: a directory, world:base, or a URL")
    endpoint: EndpointOptions = Field(default_factory=EndpointOptions, description="a URL target's options")
    target_train: Stage | None = Field(None, description="an SFT config run on ``target`` first; the result is "
                                       "attacked")
    goals: GoalSource = Field(default_factory=lambda: {"source": "world"}, validate_default=True,
                              description="the requests the attacker works on ({source: world | jsonl | ..., ...})")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="the attacker's instruction ({request})")
    scorer: Literal["auto", "gold", "refusal"] = Field(
        "auto", description="who judges a reply: gold (world goals), refusal, or auto (gold for world goals)")
    init: Stage | None = Field(None, description="an SFT config teaching the attacker the format (null: none)")
    init_templates: str = Field("world", description="the template library the format is taught with")
    init_kinds: list[str] = Field(default_factory=lambda: ["direct", "role-play", "ignore-previous",
                                                           "prefix-injection", "hypothetical"],
                                  description="the template kinds the format is taught with")
    few_shot_rounds: int = Field(2, ge=0, description="stochastic few-shot rounds after the first measurement")
    shots: int = Field(3, ge=1, description="successful attacks shown to the attacker per prompt")
    rl: Stage | None = Field(None, description="a GRPO config for the attacker (null: no RL)")
    novelty: float = Field(0.5, ge=0, description="RL: weight of the diversity bonus")
    samples: int = Field(4, ge=1, description="attacks written per goal at each measurement")
    generation: GenerationSettings = Field(default_factory=_attacker_generation,
                                           description="how the attacker samples")
    target_generation: GenerationSettings = Field(default_factory=_target_generation,
                                                  description="how the target replies")
    out: str = Field("runs/attacker", description="pipeline directory")
    seed: int = Field(0, description="seeds every stage")


def summary_lines(cfg: AttackerConfig, results: dict[str, Any]) -> list[str]:
    """One line per measurement: ASR per attack and per goal, distinct successes, template families."""
    lines = []
    for m in results["measurements"]:
        attempt, goal = m["asr_per_attempt"], m["asr_per_goal"]
        lines.append(f"{m['stage']:>12}  ASR per attack {100 * attempt['value']:.1f}% "
                     f"[{100 * attempt['ci_low']:.1f}-{100 * attempt['ci_high']:.1f}]  per goal (any of "
                     f"{cfg.samples}) {100 * goal['value']:.1f}%  distinct successes {m['found']}  "
                     f"families {m['families']}")
    return [*lines, f"results: {cfg.out}/attacker.json"]


@recipe("attacker", group="redteam", config=AttackerConfig,
        summary="An attacker model writes the attacks (Perez et al. 2022): measured as it starts, after rounds of "
        "stochastic few-shot (successful attacks as examples), and after RL against the target (reward = success "
        "+ a diversity bonus).",
        example="tether redteam attacker --config attacker/world --out runs/attacker",
        consumes={"model": "target", "attacker": "attacker"}, produces={"results": output("attacker.json")},
        show=summary_lines)
def run(cfg: AttackerConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) every stage; write and return ``attacker.json``."""
    run_dir = RunDir(cfg.out, command="redteam attacker", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _run(cfg, rd.path))


def _run(cfg: AttackerConfig, out: Path) -> dict[str, Any]:
    from tether.redteam.attacks import load_templates

    sft, grpo = RECIPES.get("sft"), RECIPES.get("grpo")
    goals = cfg.goals.load()
    results: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "stages": {}, "measurements": []}

    target = cfg.target
    if cfg.target_train is not None:
        train = load_config(sft.config, cfg.target_train.config, [
            f"model.path={cfg.target}", f"seed={cfg.seed}", *cfg.target_train.set, f"out={out / 'target'}"])
        results["stages"]["target"] = run_stage(train, sft.run)
        target = str(out / "target" / "model")

    attacker = cfg.attacker
    if cfg.init is not None:
        from tether.redteam.attacker import init_rows

        library = load_templates(cfg.init_templates)
        shots = cfg.goals.default_shots() or []
        rows = init_rows(goals, library, cfg.init_kinds, seed=cfg.seed, shots=shots, instruction=cfg.instruction)
        write_jsonl(out / "init.jsonl", rows, only_if_changed=True)
        init = load_config(sft.config, cfg.init.config, [
            f"model.path={cfg.attacker}", f"data.train={out / 'init.jsonl'}", f"seed={cfg.seed}",
            *cfg.init.set, f"out={out / 'init'}"])
        results["stages"]["init"] = run_stage(init, sft.run)
        attacker = str(out / "init" / "model")

    pool: list[tuple[str, str]] = []   # (goal id, attack) of every success so far
    names = ["init", *(f"few-shot-{i}" for i in range(1, cfg.few_shot_rounds + 1))]
    for i, name in enumerate(names):
        row = measure(cfg, attacker, target, goals, out / f"measure-{name}", pool=pool if i else [], seed=cfg.seed + i)
        pool += [(a["goal"], a["attack"]) for a in row.pop("successes")]
        results["measurements"].append({"stage": name, **row})
        _save(out, results)

    if cfg.rl is not None:
        from tether.redteam.attacker import attacker_rows

        write_jsonl(out / "attacker-prompts.jsonl", attacker_rows(goals, cfg.instruction), only_if_changed=True)
        reward = {"kind": "attack", "target": target, "scorer": cfg.scorer, "novelty": cfg.novelty,
                  "target_tokens": cfg.target_generation.max_new_tokens}
        rl = load_config(grpo.config, cfg.rl.config, [
            f"model.path={attacker}", f"data.train={out / 'attacker-prompts.jsonl'}",
            f"rewards={json.dumps([reward])}", f"generation.max_new_tokens={cfg.generation.max_new_tokens}",
            f"seed={cfg.seed}", *cfg.rl.set, f"out={out / 'rl'}"])
        results["stages"]["rl"] = run_stage(rl, grpo.run)
        row = measure(cfg, str(out / "rl" / "model"), target, goals, out / "measure-rl", pool=[], seed=cfg.seed)
        row.pop("successes")
        results["measurements"].append({"stage": "rl", **row})
    _save(out, results)
    return results


def measure(cfg: AttackerConfig, attacker: str, target: str, goals: list[Any], out: Path, *,
            pool: list[tuple[str, str]], seed: int) -> dict[str, Any]:
    """The attacker writes ``samples`` attacks per goal (with up to ``shots`` examples from ``pool`` on other
    goals), and a red-team run sends them to the target; the run's figures and its successful attacks."""
    from tether.models.targets import target_generator
    from tether.redteam.attacker import attacker_prompt
    from tether.redteam.attacks import AttackPrompt
    from tether.redteam.run import RedteamConfig, redteam

    proposals = out / "proposals.jsonl"
    if not (out / "metrics.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}:{out.name}")
        asks = []
        for goal in goals:
            others = [attack for goal_id, attack in pool if goal_id != goal.id]
            for attempt in range(cfg.samples):
                examples = rng.sample(others, min(cfg.shots, len(others))) if others else []
                asks.append((goal, attempt, attacker_prompt(goal.request, examples, cfg.instruction)))
        generator = target_generator(attacker)
        settings = cfg.generation.model_copy(update={"seed": seed})
        written = generator.generate([a[2] for a in asks], settings)
        del generator
        prompts = [AttackPrompt(goal, "attacker", [{"role": "user", "content": c.text}], attempt)
                   for (goal, attempt, _), c in zip(asks, written, strict=True)]
        write_jsonl(proposals, [{"goal": goal.id, "attempt": attempt, "attacker_prompt": ask, "attack": c.text}
                                for (goal, attempt, ask), c in zip(asks, written, strict=True)])
        rt = RedteamConfig.model_validate({
            "target": target, "endpoint": cfg.endpoint.model_dump(), "goals": cfg.goals.model_dump(),
            "scorers": [] if cfg.scorer == "auto" else [{"kind": cfg.scorer}],
            "generation": cfg.target_generation.model_dump(), "seed": seed, "out": str(out)})
        redteam(rt, out, prompts=prompts)
    return summarise(out, cfg.init_templates)


def summarise(run_dir: Path, templates: str) -> dict[str, Any]:
    """A measurement's figures from its red-team run directory."""
    from tether.redteam.attacks import load_templates

    doc = read_metrics(run_dir)
    rows = [json.loads(line) for line in (run_dir / "attacks.jsonl").read_text().splitlines() if line.strip()]
    library = load_templates(templates)
    attacks = [r["prompt"][-1]["content"] if isinstance(r["prompt"], list) else r["prompt"] for r in rows]
    successes = [{"goal": r["goal"], "attack": a} for r, a in zip(rows, attacks, strict=True) if r["success"]]
    metrics = doc.rates()
    per_attempt = next((v for k, v in metrics.items() if k.startswith("hit@1.")), metrics.get("asr.attacker"))
    return {
        "asr_per_attempt": per_attempt,
        "asr_per_goal": metrics.get("asr.attacker"),
        "attempts": len(rows),
        "successes": successes,
        "found": len({s["attack"] for s in successes}),
        "diversity": getattr(doc, "diversity", {}).get("attacker", {}),
        "families": dict(Counter(family(a, library, r["request"]) for r, a in zip(rows, attacks, strict=True))),
        "families_of_successes": dict(Counter(family(a, library, r["request"]) for r, a in zip(rows, attacks,
                                                                                             strict=True)
                                              if r["success"])),
    }


def family(attack: str, library: Any, request: str) -> str:
    """Which template of ``library`` an attack is written in: the first whose fixed text is all in it; the
    request unchanged is ``direct``; anything else is ``other``."""
    for t in library.templates:
        parts = [p.strip() for p in t.template.replace("{shots}", "{request}").split("{request}") if p.strip()]
        if parts and all(p in attack for p in parts):
            return str(t.kind)
    return "direct" if attack.strip() == request.strip() else "other"


def _save(out: Path, results: dict[str, Any]) -> None:
    (out / "attacker.json").write_text(json.dumps(results, indent=2) + "\n")
