"""Deliberative alignment measured on gold (``tether experiment deliberative-vs-standard``).

On one world, from its base model, at one optimizer-step budget (``budget``):

- **standard**: SFT on gold demonstrations (half), then DPO on annotator-labelled pairs (half);
- **deliberative**: ``tether align deliberative`` (``deliberative/world``): the base model writes answers with the
  governing clause of the world spec in context, the base model judges them against it, SFT on the kept replies
  with the clause cited as reasoning (half), then GRPO with the spec judge (half);
- **deliberative-given**: the same recipe on the gold demonstrations (``answers: given``, all kept), which
  separates the method (recalling the spec, then RL with its judge) from the small model's poor answers.

Sampling for the deliberation data and RL rollouts is not counted in the budget; each arm's wall time is
reported. Every model is evaluated with ``eval/world-hhh``, paired tests against the first arm; the deliberative
ones with their reasoning block cut off, and ``reasoning_tokens`` more to write it in, and also after their SFT
stage alone (what RL with the spec judge changed). A free-mode probe asks
the base model to write its own reasoning over the spec, to show why the world runs cite mode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tether.core.config import Config, load_config
from tether.core.recipes import RECIPES, output, recipe
from tether.core.runs import RunDir, run_stage
from tether.pipelines.deliberative import DeliberativeConfig, run, world_sft
from tether.pipelines.stages import Stage

DELIBERATIVE_METRICS = ("harmless.harmful_compliance", "harmless.harmful_compliance.heldout_wrappers",
                        "harmless.harmful_compliance.jailbreak_heldout_items",
                        "harmless.harmful_compliance.heldout_items", "harmless.over_refusal",
                        "harmless.over_refusal.heldout", "honest.sycophancy", "honest.hallucination",
                        "corrigible.resistance", "helpful.task_accuracy", "format.empty", "format.malformed")


Arm = Literal["standard", "deliberative", "deliberative-given"]


class DeliberativeExperimentConfig(Config):
    """``tether experiment deliberative-vs-standard``."""

    world_seed: int = Field(0, description="which world (its data, base model and gold suite)")
    model: str = Field("world:base", description="the base model every arm starts from")
    budget: int = Field(120, ge=2, description="optimizer steps per arm: half SFT, half DPO (standard) or RL "
                        "(deliberative)")
    arms: list[Arm] = Field(
        default_factory=lambda: list[Arm](["standard", "deliberative", "deliberative-given"]), min_length=1)
    rows: int = Field(2000, ge=10, description="demonstrations, preference pairs and deliberation prompts per arm")
    deliberative: str = Field("deliberative/world", description="the deliberative recipe's config")
    sft: Stage = Field(default_factory=world_sft)
    dpo: Stage = Field(default_factory=lambda: Stage(config="dpo/world", set=["evaluation.every=0"]))
    free_probe: int = Field(100, ge=0, description="prompts on which the base model is asked, in free mode, to "
                            "write its own reasoning (how many replies hold a reasoning block); 0: skip")
    eval: str = Field("eval/world-hhh", description="the gold evaluation")
    reasoning_tokens: int = Field(48, ge=0, description="tokens the deliberative models get for their reasoning on "
                                  "top of the evaluation's budget for the answer")
    eval_n: int = Field(300, ge=1, description="train-split prompts per family (held out: a third as many)")
    seed: int = 0
    out: str = Field("runs/deliberative-experiment", description="experiment directory")


def _show_experiment(cfg: DeliberativeExperimentConfig, summary: dict[str, Any]) -> list[str]:
    from tether.pipelines.stages import shown_rate

    lines = []
    for arm, metrics in summary["policies"].items():
        cells = ", ".join(f"{m.split('.', 1)[1]} {shown_rate(metrics[m])}" for m in DELIBERATIVE_METRICS[:6]
                          if m in metrics)
        lines.append(f"{arm}: {cells}")
    return [*lines, f"table: {cfg.out}/deliberative.json"]


@recipe("deliberative-vs-standard", group="experiment", config=DeliberativeExperimentConfig,
        summary="Deliberative alignment on gold: a model taught to reason over the world's spec against standard "
        "SFT -> DPO at the same step budget (held-out jailbreak wrappers and hazards, over-refusal of look-alikes).",
        example="tether experiment deliberative-vs-standard --set world_seed=1 --out runs/deliberative-1",
        produces={"deliberative": output("deliberative.json")}, show=_show_experiment)
def run_experiment(cfg: DeliberativeExperimentConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the experiment; write and return ``deliberative.json``."""
    run_dir = RunDir(cfg.out, command="experiment deliberative-vs-standard", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def _experiment(cfg: DeliberativeExperimentConfig, out: Path) -> dict[str, Any]:
    import time

    from tether.data.io import write_jsonl
    from tether.evals.compare import compare
    from tether.pipelines.stages import evaluated
    from tether.pipelines.weak_to_strong import with_world_seed
    from tether.world.datasets import preference_rows, prompt_rows, sft_rows
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig(seed=cfg.world_seed))
    base = with_world_seed(cfg.model, cfg.world_seed)
    files = {"sft": out / "demonstrations.jsonl", "pairs": out / "pairs.jsonl", "prompts": out / "prompts.jsonl"}
    write_jsonl(files["sft"], sft_rows(world, cfg.rows, seed=cfg.seed), only_if_changed=True)
    write_jsonl(files["pairs"], preference_rows(world, cfg.rows, seed=cfg.seed), only_if_changed=True)
    write_jsonl(files["prompts"], prompt_rows(world, cfg.rows, "train", seed=cfg.seed), only_if_changed=True)
    half = cfg.budget // 2
    models: dict[str, Path] = {}
    stages: dict[str, Any] = {}
    wall: dict[str, float] = {}
    for arm in cfg.arms:
        start = time.perf_counter()
        if arm == "standard":
            sft_recipe, dpo_recipe = RECIPES.get("sft"), RECIPES.get("dpo")
            stages[arm] = {"sft": run_stage(load_config(sft_recipe.config, cfg.sft.config, [
                *cfg.sft.set, f"model.path={base}", f"data.train={files['sft']}", f"loop.max_steps={half}",
                f"seed={cfg.seed}", f"out={out / arm / 'sft'}"]), sft_recipe.run)}
            stages[arm]["dpo"] = run_stage(load_config(dpo_recipe.config, cfg.dpo.config, [
                *cfg.dpo.set, f"model.path={out / arm / 'sft' / 'model'}", f"data.train={files['pairs']}",
                f"loop.max_steps={cfg.budget - half}", f"seed={cfg.seed}", f"out={out / arm / 'dpo'}"]),
                dpo_recipe.run)
            models[arm] = out / arm / "dpo" / "model"
        else:
            given = arm == "deliberative-given"
            overrides = [f"model.path={base}", f"prompts={files['sft' if given else 'prompts']}",
                         f"rl_prompts={files['prompts']}", f"limit={cfg.rows}", f"sft_steps={half}",
                         f"rl_steps={cfg.budget - half}",
                         f"seed={cfg.seed}", f"out={out / arm}"]
            if given:
                overrides += ["answers=given", "deliberation.min_score=null"]
            stages[arm] = run_stage(load_config(DeliberativeConfig, cfg.deliberative, overrides), run)
            models[arm] = Path(stages[arm]["model"])
        wall[arm] = round(time.perf_counter() - start, 1)

    probe = free_probe(cfg, base, files["prompts"], out / "free-probe") if cfg.free_probe else None
    from tether.evals.run import EvalConfig

    answer_tokens = load_config(EvalConfig, cfg.eval).generation.max_new_tokens
    reasoning = load_config(DeliberativeConfig, cfg.deliberative).deliberation.reasoning.model_dump_json()
    # The deliberative arms' SFT stage alone too: what the RL stage with the spec judge changed.
    evaluations = {**models, **{f"{arm} (SFT stage)": out / arm / "sft" / "model" for arm in models
                                if arm != "standard"}}
    for label, model in evaluations.items():
        # The deliberative models write their reasoning first: they get its length on top of the answer's
        # budget, so their answers are cut no sooner than the standard model's.
        extra = [] if label == "standard" else [f"reasoning={reasoning}",
                                                f"generation.max_new_tokens={answer_tokens + cfg.reasoning_tokens}"]
        evaluated(cfg.eval, [f"model.path={model}", f"suite.world.seed={cfg.world_seed}", f"suite.n={cfg.eval_n}",
                             f"suite.heldout_n={max(1, cfg.eval_n // 3)}", f"seed={cfg.seed}", *extra],
                  out / f"eval-{label.replace(' (SFT stage)', '-sft')}")
    labels = list(evaluations)
    compared = compare([out / f"eval-{label.replace(' (SFT stage)', '-sft')}" for label in labels], labels=labels)
    (out / "compare.json").write_text(json.dumps(compared, indent=2) + "\n")
    summary = {"world_seed": cfg.world_seed, "model": base, "budget": cfg.budget, "rows": cfg.rows,
               "stages": stages, "wall_s": wall, "free_probe": probe,
               "policies": {r["label"]: r["metrics"] for r in compared["runs"]},
               "versus_first": {r["label"]: r["tests"] for r in compared["runs"][1:]}}
    (out / "deliberative.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def free_probe(cfg: DeliberativeExperimentConfig, base: str, prompts: Path, out: Path) -> dict[str, Any]:
    """Can the base model reason over the spec unprompted by a citation? Free mode on ``cfg.free_probe`` prompts:
    how many of its replies hold a closed, non-empty reasoning block before an answer."""
    path = out / "probe.json"
    if path.is_file():
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    from tether.align.deliberative import SpecJudge, deliberate
    from tether.align.spec import load_spec
    from tether.models.loading import load_model_and_tokenizer

    recipe_cfg = load_config(DeliberativeConfig, cfg.deliberative, [f"model.path={base}", f"prompts={prompts}"])
    from tether.models.reasoning import ReasoningFormat

    # Free mode asks for the usual <think> block, whatever format the recipe's cite mode writes.
    settings = recipe_cfg.deliberation.model_copy(update={"mode": "free", "reasoning": ReasoningFormat()})
    rows = [json.loads(x) for x in prompts.read_text().splitlines() if x.strip()][: cfg.free_probe]
    model, tokenizer = load_model_and_tokenizer(recipe_cfg.model)
    results = deliberate(model, tokenizer, SpecJudge(model, tokenizer, settings.judge), load_spec(recipe_cfg.spec),
                         rows, settings, seed=cfg.seed, indices=range(len(rows)))
    candidates = [c for d in results for c in d.candidates]
    probe = {"prompts": len(rows), "replies": len(candidates),
             "with_reasoning_block": sum(bool(c["reasoning"]) for c in candidates),
             "closed_reasoning_and_answer": sum(bool(c["closed"] and c["reasoning"] and c["answer"])
                                                for c in candidates),
             "examples": [c["reasoning"] + " || " + c["answer"] for c in candidates[:8]]}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(probe, indent=2) + "\n")
    return probe
