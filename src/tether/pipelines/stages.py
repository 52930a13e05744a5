"""What multi-stage pipelines share: a stage is a recipe's config (shipped name or file) plus overrides,
run into its own directory, skipped when that directory already holds a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config, load_config
from tether.core.runs import MetricsDocument, RunRecord, finished_summary, read_metrics


class Stage(Config):
    """One stage: a recipe config and overrides on top of it."""

    config: str = Field(description="shipped config name (tether config list) or YAML file")
    set: list[str] = Field(default_factory=list, description="overrides, as --set takes them")


def evaluated(config: str, overrides: list[str], out: Path) -> MetricsDocument:
    """Evaluate with the eval ``config`` and ``overrides`` into ``out`` unless ``out`` already holds the
    metrics (a partial evaluation there is resumed); the metrics document either way."""
    if not (out / "metrics.json").is_file():
        from tether.evals.run import EvalConfig
        from tether.evals.run import run as evaluate

        evaluate(load_config(EvalConfig, config, [*overrides, f"out={out}"]), resume=RunRecord.read(out) is not None)
    return read_metrics(out)


def run_stage(cfg: Any, run: Any) -> dict[str, Any]:
    """Run one recipe (its config with an ``out``, and its ``run``) unless that directory already holds a
    finished run; resume it when it holds an unfinished one. The run's summary either way."""
    done = finished_summary(cfg.out)
    if done is not None:
        return done
    return run(cfg, resume=RunRecord.read(cfg.out) is not None)  # type: ignore[no-any-return]
