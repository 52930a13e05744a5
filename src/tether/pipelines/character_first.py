"""The character-first recipe: shape the character while the model is weak, lightly, then amplify
capability through that character.

1. **Character** (``character``): train the base checkpoint with a seed prompt in front of every
   training sample, so the model's simulation of a good character is what produces, and is
   credited for, the outputs being trained — corrigibility first, helpfulness only enough to
   answer. One or more stages in order, each a recipe: on-policy RL against a reward (GRPO: the
   model, prompted, writes what is graded), or preference pairs (DPO) / demonstrations (SFT)
   with the seed prompt in front. Light touch: a small step budget and early stopping on an
   evaluation metric, measured under the seed prompts (best weights kept).
2. **At the base checkpoint**: step 1 starts from ``model``, before any capability training.
3. **Amplify** (``amplify``): RLVR on tasks, with the *same* seed prompts in front of each task
   (``prompted_amplification``; off, the tasks are bare, the usual recipe), so new skills are
   exercised through the values of step 1 rather than learned by trial and error on their own.
4. **Fine-tune** (``finetune``, optional): heavier supervised training only after step 3.

Every stage is a recipe run in its own directory under ``out`` (``--resume`` skips the finished ones and
resumes the one that was interrupted); after each one the model is evaluated bare and, with
``evaluate_seeded``, under the seed prompts. ``character_first.json`` holds the headline metrics
of every evaluation with their intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tether.core.config import Config, load_config
from tether.core.recipes import RECIPES, output, recipe
from tether.core.runs import RunDir, read_metrics, run_stage
from tether.data.context import ContextConfig
from tether.pipelines.stages import Stage, evaluated

CHARACTER_HEADLINE = ("harmless.harmful_compliance", "harmless.over_refusal", "honest.sycophancy",
                      "honest.hallucination", "corrigible.resistance", "helpful.task_accuracy",
                      "helpful.task_accuracy.L3", "helpful.task_accuracy.L4", "honest.hallucination.heldout",
                      "harmless.harmful_compliance.heldout_items", "helpful.task_accuracy.heldout",
                      "format.malformed")


class CharacterStep(Stage):
    """A stage of step 1: a recipe whose training samples get the seed prompts."""

    recipe: Literal["grpo", "dpo", "sft"] = Field(
        "grpo", description="on-policy RL against a reward (the prompted model writes what is graded), or "
        "preference pairs / demonstrations with the seed prompt in front of every sample")
    steps: int | None = Field(None, ge=1, description="this stage's step budget; default: an even share of "
                              "character_steps")


class CharacterFirstConfig(Config):
    """``tether align character-first``: the four steps, each a knob."""

    model: str = Field("world:base", description="the base checkpoint the character is shaped in")
    seed_prompts: ContextConfig = Field(description="the character seed prompts, in front of training and RLVR prompts")
    character: list[CharacterStep] = Field(
        default_factory=lambda: [CharacterStep(config="grpo/world-character")], min_length=1,
        description="step 1: one or more recipe stages in order (e.g. SFT then DPO), each with the seed prompts")
    character_steps: int = Field(40, ge=1, description="step 1's budget in optimizer steps (light touch)")
    early_stop_metric: str | None = Field("corrigible.resistance",
                                          description="step 1 stops when this evaluation metric stops improving "
                                          "(null: run the whole budget)")
    early_stop_mode: Literal["min", "max"] = Field("min", description="whether lower or higher is better")
    early_stop_every: int = Field(10, ge=1, description="evaluate every N steps of step 1")
    early_stop_patience: int = Field(2, ge=1, description="evaluations without improvement before stopping")
    early_stop_seeded: bool = Field(True, description="early stopping measures the model under the seed prompts "
                                    "(how step 3 and deployment use it); off: bare")
    amplify: Stage = Field(default_factory=lambda: Stage(config="grpo/world-rlvr"),
                           description="step 3: a GRPO config for RLVR")
    rlvr_tasks: str | None = Field(None, description="step 3's task prompts (data.train); default: the config's")
    prompted_amplification: bool = Field(True, description="step 3 with the seed prompts in front of each task")
    finetune: Stage | None = Field(None, description="step 4 (optional): an SFT config, after step 3")
    evaluation: Stage = Field(default_factory=lambda: Stage(config="eval/world-hhh"),
                              description="how each stage's model is measured")
    evaluate_seeded: bool = Field(True, description="also measure each model under the seed prompts")
    measure: bool = Field(True, description="measure every stage's model (off: a caller measures them itself)")
    out: str = Field("runs/character-first", description="pipeline directory")
    seed: int = Field(0, description="seeds every stage")


def _final_model(cfg: CharacterFirstConfig) -> Path:
    return Path(cfg.out) / ("finetune" if cfg.finetune is not None else "amplify") / "model"


def summary_lines(cfg: CharacterFirstConfig, results: dict[str, Any]) -> list[str]:
    """Every measured model's headline metrics, bare and seeded, and where the results are."""
    rows = {stage: {cond: {k: v["value"] for k, v in r["metrics"].items()} for cond, r in conds.items()}
            for stage, conds in results["evals"].items()}
    return [json.dumps(rows, indent=2), f"results: {cfg.out}/character_first.json"]


@recipe("character-first", group="align", config=CharacterFirstConfig,
        summary="The character-first recipe: seed prompts, light-touch character training at the base checkpoint, "
        "RLVR through the same seed prompts, optional fine-tuning; every model measured bare and seeded.",
        example="tether align character-first --config character-first/world --out runs/character-first",
        consumes={"model": "model"}, produces={"model": _final_model, "results": output("character_first.json")},
        show=summary_lines)
def run(cfg: CharacterFirstConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) every step; write and return ``character_first.json``."""
    run_dir = RunDir(cfg.out, command="align character-first", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _run(cfg, rd.path))


def _stage(name: str, config: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """Run recipe ``name``'s ``config`` with ``overrides`` into ``out`` (skipped if finished there)."""
    recipe_ = RECIPES.get(name)
    return run_stage(load_config(recipe_.config, config, [*overrides, f"out={out}"]), recipe_.run)


def _run(cfg: CharacterFirstConfig, out: Path) -> dict[str, Any]:
    context = json.dumps(cfg.seed_prompts.model_dump(mode="json"))
    results: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "stages": {}}

    early = ([f"evaluation.every={cfg.early_stop_every}", f"evaluation.metric={cfg.early_stop_metric}",
              f"evaluation.mode={cfg.early_stop_mode}", f"evaluation.patience={cfg.early_stop_patience}",
              f"evaluation.harness.context={context if cfg.early_stop_seeded else 'null'}"]
             if cfg.early_stop_metric else [])
    model = cfg.model
    for i, step in enumerate(cfg.character):
        name = "character" if len(cfg.character) == 1 else f"character-{i + 1}-{step.recipe}"
        budget = step.steps or max(1, cfg.character_steps // len(cfg.character))
        results["stages"][name] = _stage(step.recipe, step.config, [
            f"model.path={model}", f"data.context={context}", f"loop.max_steps={budget}", *early,
            f"seed={cfg.seed}", *step.set], out / name)
        model = str(out / name / "model")
    character_model = model

    tasks = [f"data.train={cfg.rlvr_tasks}"] if cfg.rlvr_tasks else []
    results["stages"]["amplify"] = _stage("grpo", cfg.amplify.config, [
        f"model.path={character_model}", *tasks,
        f"data.context={context if cfg.prompted_amplification else 'null'}", f"seed={cfg.seed}",
        *cfg.amplify.set], out / "amplify")
    last = out / "amplify" / "model"

    if cfg.finetune is not None:
        results["stages"]["finetune"] = _stage("sft", cfg.finetune.config, [
            f"model.path={last}", f"seed={cfg.seed}", *cfg.finetune.set], out / "finetune")
        last = out / "finetune" / "model"

    models = {"base": cfg.model, "character": character_model, "amplify": str(out / "amplify" / "model")}
    if cfg.finetune is not None:
        models["finetune"] = str(last)
    results["models"] = models
    results["evals"] = ({name: measure(cfg, path, out / f"eval-{name}") for name, path in models.items()}
                        if cfg.measure else {})
    (out / "character_first.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def measure(cfg: CharacterFirstConfig, model: str, out: Path) -> dict[str, Any]:
    """Headline metrics of ``model``, bare and (``evaluate_seeded``) under the seed prompts."""
    conditions = {"bare": None, "seeded": json.dumps(cfg.seed_prompts.model_dump(mode="json"))}
    if not cfg.evaluate_seeded:
        conditions.pop("seeded")
    result = {}
    for name, context in conditions.items():
        run_dir = out if name == "bare" else out.with_name(out.name + "-seeded")
        evaluated(cfg.evaluation.config, [f"model.path={model}", f"seed={cfg.seed}", *cfg.evaluation.set,
                                          *([f"context={context}"] if context else [])], run_dir)
        result[name] = {"dir": str(run_dir), "metrics": read_metrics(run_dir).rates(CHARACTER_HEADLINE)}
    return result
