"""``tether align``: shape a model with its own outputs: critique -> revise, AI feedback, context distillation."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import typer

from tether.cli.common import ConfigOpt, OutOpt, ResumeOpt, SetOpt, SkipBadOpt, build_config, echo_main

app = typer.Typer(help="Constitutional AI (critique -> revise, AI feedback) and context distillation.",
                  no_args_is_help=True)


def _run(module: str, config_class: str, config: str | None, set_: list[str] | None, out: Path | None, *,
         resume: bool, skip_bad: bool) -> None:
    stage = importlib.import_module(f"tether.align.{module}")  # heavy imports only for the command that runs
    cfg = build_config(getattr(stage, config_class), config, set_, out, skip_bad=skip_bad)
    echo_main(json.dumps(stage.run(cfg, resume=resume), indent=2))
    echo_main(f"out: {cfg.out}")


@app.command()
def critique(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
             skip_bad: SkipBadOpt = False) -> None:
    """Critique -> revise against a constitution: revisions.jsonl, sft.jsonl, pairs.jsonl.

    Example: tether align critique --config critique/world --out runs/critique
    """
    _run("critique", "CritiqueConfig", config, set_, out, resume=resume, skip_bad=skip_bad)


@app.command()
def feedback(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
             skip_bad: SkipBadOpt = False) -> None:
    """AI feedback: a judge model picks the better of two responses per principle: preferences.jsonl.

    Example: tether align feedback --config feedback/world --out runs/feedback
    """
    _run("feedback", "FeedbackConfig", config, set_, out, resume=resume, skip_bad=skip_bad)


@app.command()
def distill(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
            skip_bad: SkipBadOpt = False) -> None:
    """Context distillation: sample with a context, train without it (SFT on samples or token-level KL).

    Example: tether align distill --config distill/world-character --out runs/distill
    """
    _run("distill", "DistillConfig", config, set_, out, resume=resume, skip_bad=skip_bad)


@app.command("character-first")
def character_first(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None) -> None:
    """The character-first recipe: seed prompts, light-touch character training at the base checkpoint,
    RLVR through the same seed prompts, optional fine-tuning; every model measured bare and seeded.

    Example: tether align character-first --config character-first/world --out runs/character-first
    Resumes: finished stages are skipped. Writes OUT/character_first.json.
    """
    from tether.pipelines import character_first as pipeline

    cfg = build_config(pipeline.CharacterFirstConfig, config, set_, out)
    results = pipeline.run(cfg)
    rows = {stage: {cond: {k: v["value"] for k, v in r["metrics"].items()} for cond, r in conds.items()}
            for stage, conds in results["evals"].items()}
    echo_main(json.dumps(rows, indent=2))
    echo_main(f"results: {cfg.out}/character_first.json")
