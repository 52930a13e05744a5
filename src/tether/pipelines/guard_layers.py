"""What a guard adds on top of a model, measured as layers: base alone, base + guard, aligned alone,
aligned + guard, each under the same evaluation and the same attacks.

The experiment (``tether experiment guard-layers``):

1. **models**: the main job (``pipeline``, ``tether run``'s config, for ``world_seed``) makes the base model
   and the aligned one (its final stage); a finished pipeline directory is reused;
2. **guard**: ``tether guard train`` (``guard``) on the same world's gold-labelled prompts; the guards file
   the guarded arms use puts it in front of the model as an input guard (``guards``: more guards, as
   YAML mappings, after it);
3. **per arm**: the evaluation (``evaluation``: harmful compliance, over-refusal and the rest), the attack
   library (``redteam``: every template and converter, the kinds the guard and the model never trained on
   included) and an **adaptive** attack (``adaptive``: :mod:`tether.redteam.guard_search`, candidates
   ranked by the target's own guards and the ones they like best sent, so an attempt counts only when
   it passes the guard and the reply leaks the secret: the guard is attacked, not only the model).

Every step is a run in its own directory under ``out`` (``--resume`` skips the finished ones);
``layers.json`` holds the table: one row per arm, the headline metrics with their intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from tether.core.config import Config, load_config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir, read_metrics, run_stage
from tether.pipelines.stages import Stage

EVAL_METRICS = ("harmless.harmful_compliance", "harmless.over_refusal", "harmless.harmful_compliance.heldout_items",
                "harmless.harmful_compliance.heldout_wrappers", "helpful.task_accuracy")


class GuardLayersConfig(Config):
    """``tether experiment guard-layers``."""

    world_seed: int = Field(0, description="which world: base model, data, guard data, evaluation, goals")
    pipeline: Stage = Field(default_factory=lambda: Stage(config="run/world", set=["redteam=null",
                                                                                    "evaluation=null"]),
                            description="the main job that makes the base and the aligned model")
    guard: Stage = Field(default_factory=lambda: Stage(config="guard/world"),
                         description="tether guard train's config (its world_seed is set here)")
    guards: list[dict[str, Any]] = Field(default_factory=list, description="more guards after the trained one")
    evaluation: Stage = Field(default_factory=lambda: Stage(config="eval/world-hhh"))
    redteam: Stage = Field(default_factory=lambda: Stage(config="redteam/world", set=["goals.split=heldout"]),
                           description="the attack library (its target and guards are set here); by default on "
                           "the held-out hazard items, which neither the guard nor the model trained on")
    adaptive: Stage | None = Field(default_factory=lambda: Stage(config="redteam/world", set=[
        "goals.split=heldout", "templates=world", "attacks=[{kind: guard-search, candidates: 64, keep: 8}]"]),
        description="the adaptive attack (null: none): by default 64 candidates per goal from the world's own "
        "wrappers, converters and augmentations, the 8 the target's guards score lowest sent")
    out: str = Field("runs/guard-layers", description="experiment directory")
    seed: int = 0


def _show(cfg: GuardLayersConfig, summary: dict[str, Any]) -> list[str]:
    names = ("harmless.harmful_compliance", "harmless.over_refusal", "redteam.asr.all", "adaptive.asr.all")
    lines = [f"{'arm':16}" + "".join(f"{n:>26}" for n in ("harmful compliance", "over-refusal", "attack library ASR",
                                                            "adaptive ASR"))]
    for arm in summary["arms"]:
        cells = []
        for name in names:
            m = arm["metrics"].get(name)
            cells.append(f"{100 * m['value']:.1f}% [{100 * m['ci_low']:.1f}-{100 * m['ci_high']:.1f}]" if m else "-")
        lines.append(f"{arm['arm']:16}" + "".join(f"{c:>26}" for c in cells))
    lines.append(f"table: {cfg.out}/layers.json")
    return lines


@recipe("guard-layers", group="experiment", config=GuardLayersConfig,
        summary="Base, base + guard, aligned, aligned + guard: harmful compliance and over-refusal, the attack "
        "library and an adaptive attack with the guard in the loop, side by side.",
        example="tether experiment guard-layers --set world_seed=1 --out runs/guard-layers-1",
        produces={"layers": output("layers.json")}, show=_show)
def run(cfg: GuardLayersConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the experiment; write and return ``layers.json``."""
    run_dir = RunDir(cfg.out, command="experiment guard-layers", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def _experiment(cfg: GuardLayersConfig, out: Path) -> dict[str, Any]:
    from tether.evals.run import EvalConfig
    from tether.evals.run import run as evaluate
    from tether.pipelines.main import PipelineConfig
    from tether.pipelines.main import run as pipeline
    from tether.redteam.run import RedteamConfig
    from tether.redteam.run import run as redteam
    from tether.train.guard import GuardTrainConfig
    from tether.train.guard import run as train_guard

    models = run_stage(load_config(PipelineConfig, cfg.pipeline.config, [
        *cfg.pipeline.set, f"world_seed={cfg.world_seed}", f"seed={cfg.seed}", f"out={out / 'models'}"]), pipeline)
    summary_path = out / "models" / "summary.json"
    built = json.loads(summary_path.read_text()) if summary_path.is_file() else models
    guard_cfg = load_config(GuardTrainConfig, cfg.guard.config, [
        *cfg.guard.set, f"world_seed={cfg.world_seed}", f"seed={cfg.seed}", f"out={out / 'guard'}"])
    guard_summary = run_stage(guard_cfg, train_guard)
    guards_file = out / "guards.yaml"
    guards_file.write_text(yaml.safe_dump([{"kind": "classifier", "name": "trained", "on": "input",
                                            "path": str(out / "guard" / "guard")}, *cfg.guards]))

    arms = []
    for model_name, model in (("base", built["base_model"]), ("aligned", built["final_model"])):
        for guarded in (False, True):
            arm = f"{model_name}{' + guard' if guarded else ''}"
            slug = f"{model_name}{'-guard' if guarded else ''}"
            guards = [f"guards={guards_file}"] if guarded else []
            metrics: dict[str, Any] = {}
            ev = load_config(EvalConfig, cfg.evaluation.config, [
                f"suite.world.seed={cfg.world_seed}", *cfg.evaluation.set, f"model.path={model}", *guards,
                f"seed={cfg.seed}", f"out={out / slug / 'eval'}"])
            run_stage(ev, evaluate)
            got = read_metrics(out / slug / "eval").metrics
            metrics.update({name: got[name].as_dict() for name in EVAL_METRICS if name in got})
            for name, stage in (("redteam", cfg.redteam), ("adaptive", cfg.adaptive)):
                if stage is None:
                    continue
                rt = load_config(RedteamConfig, stage.config, [f"goals.world.seed={cfg.world_seed}", *stage.set,
                                                               f"target={model}", *guards,
                                                               f"seed={cfg.seed}", f"out={out / slug / name}"])
                run_stage(rt, redteam)
                got = read_metrics(out / slug / name).metrics
                metrics.update({f"{name}.{k}": v.as_dict() for k, v in got.items()
                                if k.startswith(("asr.", "hit@")) and ".category." not in k and ".split." not in k})
            arms.append({"arm": arm, "model": model, "guarded": guarded, "metrics": metrics})
    summary = {"world_seed": cfg.world_seed, "guard": {"model": guard_cfg.model, "heldout": guard_summary.get(
        "heldout")}, "arms": arms}
    (out / "layers.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
