"""What multi-stage pipelines share: a stage is a recipe's config (shipped name or file) plus overrides, run
into its own directory with :func:`tether.core.runs.run_stage` (skipped when that directory already holds a
finished run), and an evaluation of a stage's model."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from tether.core.config import Config, load_config
from tether.core.runs import MetricsDocument, RunRecord, read_metrics


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
