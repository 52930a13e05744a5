"""What multi-stage pipelines share: a stage is a recipe's config (shipped name or file) plus overrides, run
into its own directory with :func:`tether.core.runs.run_stage` (skipped when that directory already holds a
finished run), an evaluation of a stage's model, SFT of a model on rows the pipeline made, a model asked
questions, and a rate shown on the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def sft_on_rows(sft_config: str, base: str, rows: Sequence[dict[str, Any]], out: Path, *, steps: int,
                seed: int) -> str:
    """SFT ``base`` on ``rows`` (``{"messages": ...}``, written to ``out``.jsonl beside the run) with the SFT
    ``sft_config``, into ``out`` unless ``out`` already holds the model (a partial run there is resumed); the
    model directory either way."""
    data = out.with_suffix(".jsonl")
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not (out / "model").exists():
        from tether.train.sft import SFTConfig
        from tether.train.sft import run as sft

        sft(load_config(SFTConfig, sft_config, [f"model.path={base}", f"data.train={data}", "evaluation.every=0",
                                                f"loop.max_steps={steps}", f"seed={seed}", f"out={out}"]),
            resume=out.exists())
    return str(out / "model")


def asker(model_dir: str, settings: Any) -> Callable[[list[str]], list[str]]:
    """A function from questions (each a lone user turn) to ``model_dir``'s replies under the generation
    ``settings``."""
    import torch

    from tether.models.generation import HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=model_dir))
    model.eval()
    generator = HFGenerator(model, tokenizer)

    def ask(questions: list[str]) -> list[str]:
        with torch.no_grad():
            return [c.text for c in generator.generate([[{"role": "user", "content": q}] for q in questions],
                                                       settings)]

    return ask


def shown_rate(rate: dict[str, Any]) -> str:
    """A rate with its interval as a run's closing lines show it: ``"12.5% [8.0, 18.1]"``."""
    return f"{100 * rate['value']:.1f}% [{100 * rate['ci_low']:.1f}, {100 * rate['ci_high']:.1f}]"
