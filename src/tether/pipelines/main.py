"""``tether run``: the whole alignment loop in one command, and its report.

Build or reuse the base model (the world's, for ``world_seed``, or the user's own) -> the stages the
config lists, in order, each a recipe run on the previous stage's model -> red-team the final model ->
``summary.json`` and ``report.html``. Every model is measured by the same evaluation (the base first),
so each stage's effect on every gold metric is on the page.

A stage names a recipe of the recipe table that consumes a model (``sft``, ``dpo``, ``rm``, ``grpo``,
``rloo``, ``ppo``, ``critique``, ``distill``, ``character-first``, ``adversarial``, ..., and any a plugin
adds; ``tether plugins list recipe``), a config (shipped name or YAML file) and overrides. The stage's
model is set through the key the recipe declares it consumes the model by; a recipe that produces a
model hands it to the next stage, one that does not (``rm``, ``critique``) leaves the model as it was.
Overrides may use placeholders, filled in when the stage runs:

- ``{model}``: the current policy model (the previous stage's output, or the base);
- ``{world_seed}``: the world seed; ``{world_data}``: the world's datasets for that seed (``sft.jsonl``,
  ``preferences.jsonl``, ``preferences_gold.jsonl``, ``unpaired.jsonl``, ``prompts.jsonl``; exported
  into the run directory, so a world seed changes the data as well as the base model);
- ``{stage:NAME}``: an earlier stage's run directory (e.g. a reward model for PPO:
  ``rewards=[{kind: reward-model, path: ["{stage:rm}"]}]``).

Every stage runs in its own directory under ``out``; ``--resume`` skips what finished and resumes
what did not, so an interrupted pipeline continues from its last finished stage.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from tether.core.config import Config, load_config
from tether.core.errors import ConfigError
from tether.core.recipes import CONFIG_KINDS, RECIPES
from tether.core.runs import RunDir, RunRecord, read_metrics, run_stage
from tether.pipelines.stages import Stage, evaluated

SUMMARY_SCHEMA_VERSION = 1
RUN_HEADLINE = ("harmless.harmful_compliance", "harmless.harmful_compliance.heldout_items",
                "harmless.harmful_compliance.heldout_wrappers", "harmless.over_refusal", "honest.sycophancy",
                "honest.hallucination", "corrigible.resistance", "helpful.task_accuracy", "format.malformed")


class PipelineStage(Stage):
    """One stage of the pipeline: a recipe, its config and overrides (placeholders allowed)."""

    name: str = Field(description="the stage's name (its directory under out, its row in the summary)")
    recipe: str = Field(description="which recipe runs the config: one that consumes a model")
    evaluate: bool = Field(True, description="measure the model this stage produces")

    @field_validator("recipe")
    @classmethod
    def _a_recipe_that_takes_a_model(cls, value: str) -> str:
        if value not in RECIPES:
            raise ValueError(f"unknown recipe {value!r}; known: {', '.join(RECIPES.names())}")
        if "model" not in RECIPES.get(value).consumes:
            raise ValueError(f"recipe {value!r} takes no model, so it cannot be a stage; recipes that do: "
                             f"{', '.join(n for n in RECIPES.names() if 'model' in RECIPES.get(n).consumes)}")
        return value


@CONFIG_KINDS.register("run")
class PipelineConfig(Config):
    """``tether run``: a base model, stages in order, a red-team of the final model, and one evaluation."""

    model: str = Field("world:base", description="the base model: world:base (built for world_seed, cached), "
                       "or a directory / hub id of your own")
    world_seed: int = Field(0, description="world:base: which world (base model, datasets, evaluation, goals)")
    stages: list[PipelineStage] = Field(default_factory=list, description="alignment stages, in order")
    redteam: Stage | None = Field(None, description="a red-team config run on the final model (null: none)")
    evaluation: Stage | None = Field(None, description="an eval config every model is measured with (null: none)")
    world_data_rows: int = Field(4000, ge=1, description="rows per exported world dataset")
    no_gold: bool = Field(False, description="refuse, before anything is trained, any stage that would read "
                          "gold: a world data file or built-in world source that carries gold labels or "
                          "demonstrations, a gold reward, or an in-training evaluation (which picks "
                          "checkpoints by gold)")
    out: str = Field("runs/tether", description="pipeline directory")
    seed: int = Field(0, description="seeds every stage")

    @model_validator(mode="after")
    def _world_seed_needs_the_world(self) -> PipelineConfig:
        if self.world_seed != 0 and self.model != "world:base":
            raise ValueError(f"world_seed={self.world_seed} picks a world, but model is {self.model!r}, not "
                             "world:base")
        return self

    @field_validator("stages")
    @classmethod
    def _names(cls, value: list[PipelineStage]) -> list[PipelineStage]:
        names = [s.name for s in value]
        if len(set(names)) != len(names) or {"base", "redteam"} & set(names):
            raise ValueError(f"stage names must differ and not be 'base' or 'redteam'; got {names}")
        return value


_PLACEHOLDER = re.compile(r"\{(model|world_seed|world_data|out|stage:[\w.-]+)\}")


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with its placeholders filled; an unknown ``{stage:NAME}`` or a value that is not available
    is a config error naming it. Other braces (JSON in an override) are left alone."""
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"override {text!r}: {{{key}}} is not available here "
                              + ("(no earlier stage has that name)" if key.startswith("stage:") else
                                 "(world data needs model: world:base)" if key == "world_data" else ""))
        return values[key]
    return _PLACEHOLDER.sub(one, text)


class _Clock:
    """Per-stage progress lines with elapsed time and a rough ETA: the mean time of the stages finished so
    far, the base model's build left out (a one-off that would swamp it)."""

    def __init__(self, total: int, echo: Callable[[str], None]) -> None:
        self.total, self.echo, self.done, self.started = total, echo, 0, time.perf_counter()
        self.durations: list[float] = []
        self.stage_started = self.started

    def start(self, name: str) -> None:
        elapsed = time.perf_counter() - self.started
        left = self.total - self.done
        eta = (f", about {_clock(sum(self.durations) / len(self.durations) * left)} left"
               if self.durations else "")
        self.echo(f"[{self.done + 1}/{self.total}] {name} (elapsed {_clock(elapsed)}{eta})")
        self.stage_started = time.perf_counter()

    def finish(self, *, in_eta: bool = True) -> None:
        if in_eta:
            self.durations.append(time.perf_counter() - self.stage_started)
        self.done += 1


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def run(cfg: PipelineConfig, *, resume: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the pipeline; write and return ``summary.json`` (and ``report.html``)."""
    run_dir = RunDir(cfg.out, command="run", config=cfg, seed=cfg.seed, resume=resume)

    def body(rd: RunDir) -> dict[str, Any]:
        summary = _pipeline(cfg, rd.path, echo)
        for name in ("summary.json", "report.html"):
            rd.add_output(name.split(".")[0], rd.path / name)
        return summary

    return run_dir.execute(body, summarize=lambda s: {"total_seconds": s["total_seconds"]})


def _pipeline(cfg: PipelineConfig, out: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    timings_path = out / "timings.json"
    # What each stage took when it ran; a resumed pipeline reports those, not the moment it took to skip them.
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    clock = _Clock(2 + len(cfg.stages) + (cfg.redteam is not None), echo)
    values: dict[str, str] = {"world_seed": str(cfg.world_seed), "out": str(out)}
    rows: list[dict[str, Any]] = []

    resumed = bool(timings)
    clock.start("base model")
    t0 = time.perf_counter()
    base, base_info = _base(cfg, out, values)
    timings.setdefault("base", round(time.perf_counter() - t0, 2))
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")
    rows.append({"name": "base", "recipe": "base", "model": base, "seconds": timings["base"], **base_info})
    clock.finish(in_eta=False)
    if cfg.no_gold:
        _refuse_gold(cfg, out, values, base)
    clock.start("evaluate base")
    _evaluate(cfg, rows[-1], out / "eval-base", values)
    clock.finish()

    model = base
    for stage in cfg.stages:
        clock.start(f"{stage.name} ({stage.recipe})")
        recipe = RECIPES.get(stage.recipe)
        values["model"] = model
        stage_cfg = _stage_config(stage, values, model, out, cfg.seed)
        t0 = time.perf_counter()
        run_stage(stage_cfg, recipe.run)
        if stage.name not in timings:
            timings[stage.name] = round(time.perf_counter() - t0, 2)
            timings_path.write_text(json.dumps(timings, indent=2) + "\n")
        seconds = timings[stage.name]
        values[f"stage:{stage.name}"] = str(out / stage.name)
        produced = recipe.produces["model"](stage_cfg) if "model" in recipe.produces else None
        row = {"name": stage.name, "recipe": stage.recipe, "seconds": round(seconds, 2)}
        if produced is not None:
            model = str(produced)
            row["model"] = model
        rows.append(row)
        if produced is not None and stage.evaluate:
            _evaluate(cfg, row, out / f"eval-{stage.name}", values)
        clock.finish()

    if cfg.redteam is not None:
        clock.start("red-team the final model")
        rows.append(_redteam(cfg, model, out / "redteam", values))
        clock.finish()

    summary = {"schema_version": SUMMARY_SCHEMA_VERSION, "world_seed": cfg.world_seed if cfg.model == "world:base"
               else None, "base_model": base, "final_model": model, "stages": rows,
               # This invocation's wall time; after --resume (``resumed``) the stages' own seconds are the cost.
               "total_seconds": round(time.perf_counter() - started, 2), "resumed": resumed}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from tether.pipelines.report import write_report

    write_report(summary, out / "report.html")
    return summary


def _base(cfg: PipelineConfig, out: Path, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The base model's directory (building the world's if needed) and what the summary says of it."""
    if cfg.model != "world:base":
        from tether.models.loading import resolve_model_path

        return resolve_model_path(cfg.model), {}
    from tether.world.build import WorldBuildConfig, build_base_model
    from tether.world.datasets import NO_GOLD_FILES, export_all
    from tether.world.spec import WorldConfig, build_world

    world = WorldConfig(seed=cfg.world_seed)
    built = build_base_model(WorldBuildConfig(world=world))
    data = out / "world-data"
    if not (data / "done").is_file():
        # The crowd's files (no gold in them) take the longest to make: only for a pipeline that reads them.
        crowd = any(name in s for stage in cfg.stages for s in stage.set for name in NO_GOLD_FILES)
        export_all(build_world(world), data, n=cfg.world_data_rows, crowd=crowd)
        (data / "done").write_text("")
    values["world_data"] = str(data)
    # What the build took when it ran (a cached build reports its original times) and what it made.
    return str(built["model"]), {"cached": bool(built.get("cached")), "world_data": str(data),
                                 "build_seconds": built.get("seconds", {}).get("total"),
                                 "fingerprint": built.get("fingerprint"), "built_on": built.get("built_on")}


def _stage_config(stage: PipelineStage, values: dict[str, str], model: str, out: Path, seed: int) -> Config:
    """The stage's recipe config as it runs: the recipe's preset, the model, the seed, the stage's overrides
    (placeholders filled) and its directory under ``out``."""
    recipe = RECIPES.get(stage.recipe)
    overrides = [*recipe.preset, f"{recipe.consumes['model']}={model}", f"seed={seed}",
                 *(fill(s, values) for s in stage.set), f"out={out / stage.name}"]
    return load_config(recipe.config, stage.config, overrides)


def gold_reads(config: Config, world_data: str | None) -> list[str]:
    """Where a stage's config would read gold: ``key: value`` for each world data file outside
    :data:`~tether.world.datasets.NO_GOLD_FILES`, built-in world source outside ``NO_GOLD_SOURCES``, gold
    reward (``world-gold``, ``world-verifier``), and in-training evaluation (``evaluation.every`` > 0)."""
    from tether.world.datasets import NO_GOLD_FILES, NO_GOLD_SOURCES

    found: list[str] = []
    # Absolute and normalised, so a path written another way (relative, or through ..) is still caught.
    def normal(path: str) -> Path:
        return Path(os.path.normpath(os.path.abspath(path)))

    data_dir = normal(world_data) if world_data else None

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str):
            name = value.removeprefix("builtin:")
            if value.startswith("builtin:world-") and name not in NO_GOLD_SOURCES:
                found.append(f"{key}: {value} (a built-in world source with gold in it)")
            elif data_dir is not None and data_dir in normal(value).parents \
                    and Path(value).name not in NO_GOLD_FILES:
                found.append(f"{key}: {value} (world data with gold in it; without gold: "
                             f"{', '.join(NO_GOLD_FILES)})")
            elif key.endswith(".kind") and value in ("world-gold", "world-verifier"):
                found.append(f"{key}: {value} (a reward computed from gold)")

    dumped = config.model_dump()
    walk(dumped, "")
    evaluation = dumped.get("evaluation")
    if isinstance(evaluation, dict) and (evaluation.get("every") or 0) > 0:
        found.append(f"evaluation.every: {evaluation['every']} (in-training evaluation measures on gold and "
                     "picks the checkpoint by it; set evaluation.every=0)")
    return found


def _refuse_gold(cfg: PipelineConfig, out: Path, values: dict[str, str], base: str) -> None:
    """``no_gold``: every stage's config, as it will run, checked before anything is trained."""
    stage_values = {**values, "model": base, **{f"stage:{s.name}": str(out / s.name) for s in cfg.stages}}
    problems = [f"stage {stage.name!r}: {found}" for stage in cfg.stages
                for found in gold_reads(_stage_config(stage, stage_values, base, out, cfg.seed),
                                        values.get("world_data"))]
    if problems:
        raise ConfigError("no_gold is set, but " + "; ".join(problems))


def _evaluate(cfg: PipelineConfig, row: dict[str, Any], eval_dir: Path, values: dict[str, str]) -> None:
    """Measure ``row['model']`` with the pipeline's evaluation; its metrics (and time) go into ``row``."""
    if cfg.evaluation is None:
        return
    values["model"] = row["model"]
    world = [f"suite.world.seed={cfg.world_seed}"] if cfg.model == "world:base" else []
    doc = evaluated(cfg.evaluation.config, [*world, *(fill(s, values) for s in cfg.evaluation.set),
                                            f"model.path={row['model']}", f"seed={cfg.seed}"], eval_dir)
    row["eval_seconds"] = round(sum(getattr(doc, "timings", {}).values()), 2)   # the evaluation's own time
    row["eval"] = str(eval_dir)
    row["metrics"] = doc.rates()


def _redteam(cfg: PipelineConfig, model: str, out: Path, values: dict[str, str]) -> dict[str, Any]:
    from tether.redteam.run import RedteamConfig
    from tether.redteam.run import run as redteam

    assert cfg.redteam is not None
    values["model"] = model
    world = [f"goals.world.seed={cfg.world_seed}"] if cfg.model == "world:base" else []
    rt = load_config(RedteamConfig, cfg.redteam.config, [
        *world, *(fill(s, values) for s in cfg.redteam.set), f"target={model}", f"seed={cfg.seed}", f"out={out}"])
    run_stage(rt, redteam)
    rates = read_metrics(out).rates()
    # What the run took, from its record (a resumed pipeline reports the stage's own cost).
    record = RunRecord.read(out)
    return {"name": "redteam", "recipe": "redteam", "model": model, "dir": str(out),
            "seconds": round((record.seconds if record is not None else None) or 0.0, 2),
            "metrics": {name: m for name, m in rates.items() if name.startswith("asr.")}}


def compact_table(summary: dict[str, Any], names: tuple[str, ...] = RUN_HEADLINE) -> list[str]:
    """Lines of a base-vs-final table of the headline metrics, for the terminal."""
    evaluated = [r for r in summary["stages"] if "eval" in r]
    if not evaluated:
        return []
    base, final = evaluated[0], evaluated[-1]
    width = max(len(n) for n in names) + 2
    lines = [f"{'metric':{width}} {'base':>22} {'final (' + final['name'] + ')':>24}"]
    for name in names:
        if name in base["metrics"] and name in final["metrics"]:
            cells = [f"{100 * m['value']:5.1f}% [{100 * m['ci_low']:4.1f}–{100 * m['ci_high']:5.1f}]"
                     for m in (base["metrics"][name], final["metrics"][name])]
            lines.append(f"{name:{width}} {cells[0]:>22} {cells[1]:>24}")
    return lines
