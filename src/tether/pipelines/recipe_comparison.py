"""Four ways to align the world's base model, at one training budget, then the same capability RL.

Arms (each run for every seed; each stage a recipe run in its own directory; ``--resume`` skips the
finished ones):

- ``standard``: SFT on demonstrations, then DPO on the annotators' preference pairs; RLVR on bare tasks.
- ``character-first``: the *same* SFT and DPO data with a seed prompt in front of every sample, light
  touch (the same budget at most, each stage stopped early on corrigibility measured under the seed
  prompts), from the base checkpoint; RLVR with the same seed prompts in front of every task
  (:mod:`tether.pipelines.character_first`).
- ``constitutional``: the base model critiques and revises its own answers against the hhh
  constitution; SFT on the revisions; the SFT model samples pairs that the base model judges (AI
  feedback); DPO on those; RLVR on bare tasks.
- ``distillation``: context distillation of the character preamble (token-level KL); RLVR on bare tasks.

The budget is optimizer steps of alignment training (batch 32 throughout): split evenly between
SFT and DPO for the two-stage arms. Sampling for critiques, feedback and distillation is not
counted; every arm's wall time is reported instead. Every model is measured with world-hhh after
alignment and again after RLVR (how much alignment survives capability training: derailment);
character-first also under its seed prompts. ``recipes.json`` holds every evaluation's headline
metrics; the table gives the mean over seeds with the range across seeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from tether.core.config import Config, load_config
from tether.core.recipes import RECIPES, output, recipe
from tether.core.registry import Registry
from tether.core.runs import RunDir, read_metrics, run_stage
from tether.data.context import ContextConfig
from tether.pipelines.character_first import CHARACTER_HEADLINE
from tether.pipelines.stages import Stage, evaluated

# An arm aligns the model its way at the comparison's budget: (config, out, seed) -> the aligned and
# amplified model directories and each stage's summary.
ARMS: Registry[Callable[[RecipeComparisonConfig, Path, int], dict[str, Any]]] = Registry(
    "recipe-comparison arm", description="one way to align a model, compared at one budget")


def _world_seed_prompts() -> ContextConfig:
    from tether.world.families import CHARACTER_PREAMBLES

    return ContextConfig(texts=list(CHARACTER_PREAMBLES), placement="system")


class RecipeComparisonConfig(Config):
    """``tether experiment recipes``."""

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; known: {', '.join(ARMS.names())}")
        return value

    arms: list[str] = Field(default_factory=lambda: ["standard", "character-first", "constitutional", "distillation"],
                            description="registered arms, in the order they run (each with every seed)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    budget: int = Field(120, ge=2, description="alignment optimizer steps per arm (batch 32)")
    model: str = Field("world:base", description="the base checkpoint every arm starts from")
    seed_prompts: ContextConfig = Field(default_factory=_world_seed_prompts,
                                        description="character-first's seed prompts and distillation's context")
    sft: Stage = Field(default_factory=lambda: Stage(config="sft/world", set=["evaluation.every=0"]))
    dpo: Stage = Field(default_factory=lambda: Stage(config="dpo/world", set=["evaluation.every=0"]))
    critique: Stage = Field(default_factory=lambda: Stage(config="critique/world"))
    feedback: Stage = Field(default_factory=lambda: Stage(config="feedback/world"))
    distill: Stage = Field(default_factory=lambda: Stage(config="distill/world-character"))
    rlvr: Stage = Field(default_factory=lambda: Stage(config="grpo/world-rlvr"))
    evaluation: Stage = Field(default_factory=lambda: Stage(config="eval/world-hhh"))
    early_stop_every: int = Field(20, ge=1, description="character-first: evaluate every N steps")
    out: str = Field("runs/recipes", description="experiment directory")


def summary_lines(cfg: RecipeComparisonConfig, results: dict[str, Any]) -> list[str]:
    """One line per arm, condition and stage: each headline metric's mean over seeds."""
    lines = []
    for row in results["table"]:
        cells = "  ".join(f"{k.split('.', 1)[1]}={v['mean']:.3f}" for k, v in row.items() if isinstance(v, dict))
        lines.append(f"{row['arm']:>16} {row['condition']:>6} {row['stage']:>9}  {cells}")
    return [*lines, f"results: {cfg.out}/recipes.json   plot: {cfg.out}/recipes.png"]


@recipe("recipes", group="experiment", config=RecipeComparisonConfig,
        summary="Standard (SFT -> DPO), character-first, constitutional AI and context distillation at one training "
        "budget, each followed by the same RLVR: gold HHH after alignment and after RLVR, over several seeds.",
        example="tether experiment recipes --out runs/recipes",
        consumes={"model": "model"}, produces={"results": output("recipes.json")}, show=summary_lines)
def run(cfg: RecipeComparisonConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) every arm for every seed; write and return ``recipes.json`` (and a plot)."""
    run_dir = RunDir(cfg.out, command="experiment recipes", config=cfg, seed=None, resume=resume)
    return run_dir.execute(lambda rd: _run_arms(cfg, rd.path))


def _run_arms(cfg: RecipeComparisonConfig, out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"config": cfg.model_dump(mode="json"),
                               "base": _measure(cfg, cfg.model, out / "eval-base", 0), "arms": {}}
    for arm in cfg.arms:
        results["arms"][arm] = {}
        for seed in cfg.seeds:
            arm_dir = out / arm / f"seed-{seed}"
            arm_dir.mkdir(parents=True, exist_ok=True)
            timing = arm_dir / "wall_s.json"
            start = time.perf_counter()
            aligned = ARMS.get(arm)(cfg, arm_dir, seed)
            if not timing.is_file():
                timing.write_text(json.dumps({"wall_s": round(time.perf_counter() - start, 1)}))
            results["arms"][arm][str(seed)] = {
                "wall_s": json.loads(timing.read_text())["wall_s"],
                "aligned": _measure(cfg, aligned["aligned"], arm_dir / "eval-aligned", seed),
                "amplified": _measure(cfg, aligned["amplified"], arm_dir / "eval-amplified", seed),
                **({"seeded": {stage: _measure(cfg, aligned[stage], arm_dir / f"eval-{stage}-seeded", seed,
                                               context=cfg.seed_prompts) for stage in ("aligned", "amplified")}}
                   if arm == "character-first" else {}),
                "stages": aligned.get("stages", {}),
            }
    results["table"] = table(results)
    (out / "recipes.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "recipes.png")
    return results


# --- the arms (each returns its aligned and amplified model directories) ------------------------

def _run(name: str, stage: Stage, overrides: list[str], out: Path) -> dict[str, Any]:
    """Recipe ``name`` on ``stage``'s config with ``overrides`` into ``out`` (skipped when finished there)."""
    recipe_ = RECIPES.get(name)
    return run_stage(load_config(recipe_.config, stage.config, [*stage.set, *overrides, f"out={out}"]), recipe_.run)


def _rlvr(cfg: RecipeComparisonConfig, model: Path, out: Path, seed: int) -> dict[str, Any]:
    return _run("grpo", cfg.rlvr, [f"model.path={model}", f"seed={seed}"], out)


@ARMS.register("standard")
def _standard(cfg: RecipeComparisonConfig, out: Path, seed: int) -> dict[str, Any]:
    half = cfg.budget // 2
    stages = {"sft": _run("sft", cfg.sft, [f"model.path={cfg.model}", f"loop.max_steps={half}", f"seed={seed}"],
                          out / "sft"),
              "dpo": _run("dpo", cfg.dpo, [f"model.path={out / 'sft' / 'model'}", f"loop.max_steps={cfg.budget - half}",
                                           f"seed={seed}"], out / "dpo")}
    stages["rlvr"] = _rlvr(cfg, out / "dpo" / "model", out / "rlvr", seed)
    return {"aligned": out / "dpo" / "model", "amplified": out / "rlvr" / "model", "stages": stages}


@ARMS.register("character-first")
def _character_first(cfg: RecipeComparisonConfig, out: Path, seed: int) -> dict[str, Any]:
    from tether.pipelines import character_first

    # The standard arm's SFT and DPO configs and data, with the seed prompts, each stopped early; their
    # "evaluation.*" overrides are left out (they would switch the early stopping off).
    def without_evaluation(stage: Stage) -> list[str]:
        return [s for s in stage.set if not s.startswith("evaluation.")]

    pipeline = character_first.CharacterFirstConfig(
        model=cfg.model, seed_prompts=cfg.seed_prompts,
        character=[character_first.CharacterStep(config=cfg.sft.config, recipe="sft", set=without_evaluation(cfg.sft)),
                   character_first.CharacterStep(config=cfg.dpo.config, recipe="dpo", set=without_evaluation(cfg.dpo))],
        character_steps=cfg.budget, early_stop_every=cfg.early_stop_every, amplify=cfg.rlvr,
        prompted_amplification=True, evaluation=cfg.evaluation, measure=False, out=str(out), seed=seed)
    results = run_stage(pipeline, character_first.run)
    return {"aligned": Path(results["models"]["character"]), "amplified": out / "amplify" / "model",
            "stages": results["stages"]}


@ARMS.register("constitutional")
def _constitutional(cfg: RecipeComparisonConfig, out: Path, seed: int) -> dict[str, Any]:
    half = cfg.budget // 2
    stages = {"critique": _run("critique", cfg.critique, [f"model.path={cfg.model}", f"seed={seed}"], out / "critique")}
    stages["sft"] = _run("sft", cfg.sft, [
        f"model.path={cfg.model}", f"data.train={out / 'critique' / 'sft.jsonl'}", f"loop.max_steps={half}",
        f"seed={seed}"], out / "sft")
    stages["feedback"] = _run("feedback", cfg.feedback, [
        f"model.path={out / 'sft' / 'model'}", f"judge.path={cfg.model}", f"seed={seed}"], out / "feedback")
    stages["dpo"] = _run("dpo", cfg.dpo, [
        f"model.path={out / 'sft' / 'model'}", f"data.train={out / 'feedback' / 'preferences.jsonl'}",
        f"loop.max_steps={cfg.budget - half}", f"seed={seed}"], out / "dpo")
    stages["rlvr"] = _rlvr(cfg, out / "dpo" / "model", out / "rlvr", seed)
    return {"aligned": out / "dpo" / "model", "amplified": out / "rlvr" / "model", "stages": stages}


@ARMS.register("distillation")
def _distillation(cfg: RecipeComparisonConfig, out: Path, seed: int) -> dict[str, Any]:
    context = json.dumps(cfg.seed_prompts.model_dump(mode="json"))
    stages = {"distill": _run("distill", cfg.distill, [
        f"model.path={cfg.model}", f"context={context}", f"loop.max_steps={cfg.budget}", f"seed={seed}"],
        out / "distill")}
    stages["rlvr"] = _rlvr(cfg, out / "distill" / "model", out / "rlvr", seed)
    return {"aligned": out / "distill" / "model", "amplified": out / "rlvr" / "model", "stages": stages}




def _measure(cfg: RecipeComparisonConfig, model: str | Path, out: Path, seed: int,
             context: ContextConfig | None = None) -> dict[str, Any]:
    extra = [f"context={json.dumps(context.model_dump(mode='json'))}"] if context is not None else []
    evaluated(cfg.evaluation.config, [f"model.path={model}", f"seed={seed}", *cfg.evaluation.set, *extra], out)
    return read_metrics(out).rates(CHARACTER_HEADLINE)


# --- the summary ---------------------------------------------------------------------------------

TABLE_METRICS = ("harmless.harmful_compliance", "harmless.over_refusal", "honest.sycophancy", "honest.hallucination",
                 "corrigible.resistance", "helpful.task_accuracy", "honest.hallucination.heldout",
                 "harmless.harmful_compliance.heldout_items")


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (arm, condition, stage): each metric's mean over seeds and its range across seeds."""
    rows = [{"arm": "base", "condition": "bare", "stage": "-",
             **{m: _summary([results["base"][m]["value"]]) for m in TABLE_METRICS if m in results["base"]}}]
    for arm, seeds in results["arms"].items():
        conditions = [("bare", lambda r, s: r[s])]
        if arm == "character-first":
            conditions.append(("seeded", lambda r, s: r["seeded"][s]))
        for condition, pick in conditions:
            for stage in ("aligned", "amplified"):
                per_seed = [pick(r, stage) for r in seeds.values()]
                rows.append({"arm": arm, "condition": condition, "stage": stage,
                             **{m: _summary([p[m]["value"] for p in per_seed]) for m in TABLE_METRICS
                                if all(m in p for p in per_seed)}})
    return rows


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(sum(values) / len(values), 4), "min": round(min(values), 4), "max": round(max(values), 4),
            "n_seeds": len(values)}


_PLOT_TITLES = {"harmless.harmful_compliance": "harmful compliance", "harmless.over_refusal": "over-refusal",
                "honest.sycophancy": "sycophancy", "honest.hallucination": "hallucination",
                "corrigible.resistance": "resistance to correction", "helpful.task_accuracy": "task accuracy",
                "honest.hallucination.heldout": "hallucination, held-out families",
                "harmless.harmful_compliance.heldout_items": "harmful compliance, held-out items"}


def plot(results: dict[str, Any], path: Path) -> None:
    """Each arm's failure rates and task accuracy after alignment and after RLVR (mean over seeds, seed range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in TABLE_METRICS if m in results["base"]]
    rows = [r for r in results["table"] if r["arm"] != "base"]
    columns = (len(metrics) + 1) // 2
    fig, grid = plt.subplots(2, columns, figsize=(3.2 * columns, 7.0), squeeze=False)
    axes = list(grid.flat)
    labels = [f"{r['arm']}{' (seeded)' if r['condition'] == 'seeded' else ''}" for r in rows if r["stage"] == "aligned"]
    for ax, metric in zip(axes, metrics, strict=False):
        for offset, stage, colour in ((-0.2, "aligned", "#4c72b0"), (0.2, "amplified", "#dd8452")):
            picked = [r for r in rows if r["stage"] == stage]
            means = [r[metric]["mean"] for r in picked]
            low = [r[metric]["mean"] - r[metric]["min"] for r in picked]
            high = [r[metric]["max"] - r[metric]["mean"] for r in picked]
            ax.bar([i + offset for i in range(len(picked))], means, 0.4, yerr=[low, high], color=colour,
                   label="after alignment" if stage == "aligned" else "after RLVR", capsize=2)
        ax.axhline(results["base"][metric]["value"], color="grey", lw=1, ls="--")
        ax.set_title(_PLOT_TITLES.get(metric, metric), fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.suptitle("world-hhh after alignment and after RLVR (mean over seeds; bars: seed range; dashed: base)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
