"""Evaluation while training: a registered evaluator every N steps, and early stopping on one of its metrics.

Light-touch training (the character-first recipe's first step) stops when a behaviour metric
stops improving; the weights kept are the best evaluation's, not the last step's.

The evaluator is found by name in :data:`EVALUATORS` (tether's evaluation harness registers itself as
``eval``), so training recipes configure it without importing the evaluation layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.registry import Kind, Registry
from tether.core.runs import RunDir
from tether.models.logprobs import inner_model

DEFAULT_EVALUATOR = "eval"


class Evaluator(Protocol):
    """Measures an in-training model: every metric's value, written under ``out`` (when ``write``)."""

    headline: tuple[str, ...]  # metrics logged at every evaluation (besides the watched one), where present

    def __call__(self, model: Any, tokenizer: Any, out: Path, *, label: str, write: bool) -> dict[str, float]:
        """``{metric: value}`` for ``model``; ``label`` names it in the outputs."""
        ...


class EvaluatorConfig(Protocol):
    """What a registered evaluator's config class offers."""

    def build(self) -> Evaluator:
        """The evaluator this config describes."""
        ...

    @classmethod
    def training_default(cls) -> Any:
        """The config used when a recipe asks for evaluation and names no harness (small and quick)."""
        ...


EVALUATORS: Registry[Any] = Registry(
    "evaluator", description="a config class per kind; its build() measures an in-training model")


class TrainingEval(Config):
    """Evaluate with the harness every N steps; optionally stop early on one metric."""

    every: int = Field(0, ge=0, description="evaluate every N steps (and after the last); 0: never")
    harness: Annotated[Config, Kind(EVALUATORS, default=DEFAULT_EVALUATOR)] | None = Field(
        None, description="the evaluator's config: an eval config (suite, generation, scorers; model and out "
        "are ignored); null: the evaluator's quick default (50 world-hhh prompts per family)")
    metric: str = Field("harmless.harmful_compliance", description="metric early stopping watches")
    mode: Literal["min", "max"] = Field("min", description="whether lower or higher is better")
    patience: int = Field(0, ge=0, description="evaluations without improvement before stopping; 0: never stop")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    restore_best: bool = Field(True, description="with patience: end with the best evaluation's weights")

    def evaluator(self) -> Evaluator:
        """The configured evaluator (the default harness when none is named)."""
        harness: Any = self.harness or EVALUATORS.get(DEFAULT_EVALUATOR).training_default()
        return harness.build()  # type: ignore[no-any-return]


class EarlyStopping:
    """Tracks the watched metric; says when to stop and keeps the best weights (trainable ones, on CPU)."""

    def __init__(self, cfg: TrainingEval) -> None:
        self.cfg = cfg
        self.best: float | None = None
        self.best_step = 0
        self.bad_evals = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, value: float, step: int, model: Any) -> bool:
        """Record an evaluation; returns True when training should stop."""
        sign = 1.0 if self.cfg.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.cfg.min_delta:
            self.best, self.best_step, self.bad_evals = value, step, 0
            if self.cfg.patience and self.cfg.restore_best:
                self.best_state = {name: p.detach().to("cpu", copy=True)
                                   for name, p in inner_model(model).named_parameters() if p.requires_grad}
            return False
        self.bad_evals += 1
        return bool(self.cfg.patience) and self.bad_evals >= self.cfg.patience

    def state_dict(self) -> dict[str, Any]:
        """The best value and step, the evaluations since, and the best weights if kept."""
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state_dict`."""
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]
        self.best_state = state["best_state"]

    def restore(self, model: Any) -> bool:
        """Put the best evaluation's weights back; False if there is nothing to restore."""
        if self.best_state is None:
            return False
        inner = inner_model(model)
        with torch.no_grad():
            for name, p in inner.named_parameters():
                if name in self.best_state:
                    p.copy_(self.best_state[name].to(p.device))
        return True

    def summary(self) -> dict[str, Any]:
        """What early stopping saw, for the run record."""
        return {"best_step": self.best_step, f"best_{self.cfg.metric}": self.best}


def evaluate_during_training(cfg: TrainingEval, evaluator: Evaluator, model: Any, tokenizer: Any, step: int,
                             run_dir: RunDir) -> dict[str, float]:
    """Run ``evaluator`` on the in-training model; its outputs go under ``OUT/evals/step-N``.

    Returns ``{"eval/<metric>": value}`` for the watched metric and the evaluator's headline metrics.
    """
    out = Path(run_dir.path) / "evals" / f"step-{step:06d}"
    metrics = evaluator(inner_model(model), tokenizer, out, label=f"{run_dir.path} at step {step}",
                        write=run_dir.writer)
    if cfg.metric not in metrics:
        raise UserError(f"evaluation.metric {cfg.metric!r} is not a metric of the evaluation; "
                        f"it has: {', '.join(sorted(metrics))}")
    return {f"eval/{name}": metrics[name] for name in (cfg.metric, *evaluator.headline) if name in metrics}


class EvalSchedule:
    """Periodic evaluation and early stopping, as a recipe's loop uses them::

        schedule = loop.track(EvalSchedule(cfg.evaluation, tokenizer, run_dir))  # before loop.resume()
        for step, micro_batches in loop.plan(n):
            ...
            extra, stop = schedule.after_step(loop.model, loop.step_count)
            loop.log(stats, extra)
            if stop:
                break
        summary |= schedule.finish(loop.model, loop.step_count)
    """

    def __init__(self, cfg: TrainingEval, tokenizer: Any, run_dir: RunDir) -> None:
        self.cfg, self.tokenizer, self.run_dir = cfg, tokenizer, run_dir
        self._evaluator: Evaluator | None = None
        self.stopper = EarlyStopping(cfg)
        self.last_evaluated = -1
        self.stopped_at: int | None = None

    def state_dict(self) -> dict[str, Any]:
        """Early stopping's state and the last evaluated step (checkpointed with the run; see TrainLoop.track)."""
        return {"stopper": self.stopper.state_dict(), "last_evaluated": self.last_evaluated,
                "stopped_at": self.stopped_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state_dict`."""
        self.stopper.load_state_dict(state["stopper"])
        self.last_evaluated, self.stopped_at = state["last_evaluated"], state["stopped_at"]

    def _evaluate_with(self) -> Evaluator:
        # Built at the first evaluation: a resumed run that had already stopped never loads it.
        if self._evaluator is None:
            self._evaluator = self.cfg.evaluator()
        return self._evaluator

    def after_step(self, model: Any, step: int) -> tuple[dict[str, float], bool]:
        """Evaluate if this step is due; returns the metrics to log and whether to stop."""
        if not self.cfg.every or step % self.cfg.every:
            return {}, False
        metrics = evaluate_during_training(self.cfg, self._evaluate_with(), model, self.tokenizer, step, self.run_dir)
        self.last_evaluated = step
        stop = self.stopper.update(metrics[f"eval/{self.cfg.metric}"], step, model)
        if stop:
            self.stopped_at = step
        return metrics, stop

    def finish(self, model: Any, step: int) -> dict[str, Any]:
        """Evaluate the last step if it was not, restore the best weights if asked; the summary entries."""
        if not self.cfg.every:
            return {}
        summary: dict[str, Any] = {}
        if self.last_evaluated != step:
            final = evaluate_during_training(self.cfg, self._evaluate_with(), model, self.tokenizer, step,
                                             self.run_dir)
            self.stopper.update(final[f"eval/{self.cfg.metric}"], step, model)
            summary["final_eval"] = final
        summary |= self.stopper.summary()
        if self.stopped_at is not None:
            summary["stopped_early_at"] = self.stopped_at
        if self.cfg.patience and self.cfg.restore_best and self.stopper.best_step != step:
            summary["restored_step"] = self.stopper.best_step if self.stopper.restore(model) else None
        return summary
