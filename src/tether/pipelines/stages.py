"""What multi-stage pipelines share: a stage is a recipe's config (shipped name or file) plus overrides,
run into its own directory, skipped when that directory already holds a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config, load_config


class Stage(Config):
    """One stage: a recipe config and overrides on top of it."""

    config: str = Field(description="shipped config name (tether config list) or YAML file")
    set: list[str] = Field(default_factory=list, description="overrides, as --set takes them")


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``run_dir``; None if it holds no finished run."""
    record = run_dir / "record.json"
    if record.is_file():
        data = json.loads(record.read_text())
        if data.get("status") == "finished":
            return data.get("summary") or {}
    return None


def evaluated(config: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """Evaluate with the eval ``config`` and ``overrides`` into ``out`` unless ``out`` already holds the
    metrics (a partial evaluation there is resumed); the metrics document either way."""
    if not (out / "metrics.json").is_file():
        from tether.evals.run import EvalConfig
        from tether.evals.run import run as evaluate

        evaluate(load_config(EvalConfig, config, [*overrides, f"out={out}"]), resume=out.exists())
    return json.loads((out / "metrics.json").read_text())  # type: ignore[no-any-return]


def headline(metrics_json: Path, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """``{metric: {value, ci_low, ci_high, n}}`` for the named metrics of an evaluation's ``metrics.json``."""
    metrics = json.loads(metrics_json.read_text())["metrics"]
    return {name: metrics[name] for name in names if name in metrics}


def run_stage(cfg: Any, run: Any) -> dict[str, Any]:
    """Run one recipe (its config with an ``out``, and its ``run``) unless that directory already holds a
    finished run; resume it when it holds an unfinished one. The run's summary either way."""
    done = finished(Path(cfg.out))
    if done is not None:
        return done
    if Path(cfg.out, "record.json").is_file():
        return run(cfg, resume=True)  # type: ignore[no-any-return]
    return run(cfg)  # type: ignore[no-any-return]
