"""Weak-to-strong generalisation on the world (Burns et al. 2023): how much of the gap between a weak
supervisor and a strong model trained on gold does the strong model recover when trained on the weak
model's labels?

The experiment (``tether experiment weak-to-strong``) runs each task in ``tasks`` the same way:

1. **Weak supervisor**: the weak model trained on gold for the ``weak`` part; its outputs on the
   ``student`` part are the weak labels.
2. **Strong ceiling**: the strong model trained on gold for the ``student`` part.
3. **Strong student**: the strong model trained on the weak labels of the ``student`` part.
4. Every model measured on the ``test`` part against gold: accuracy with its interval, and PGR =
   (student - weak) / (ceiling - weak) with a bootstrap interval over test items
   (:func:`tether.core.stats.performance_gap_recovered`); the weak labels' own accuracy beside them.

Two kinds of task. **Questions** (``arithmetic``, ``list``, ``count``, ``fact``:
:func:`tether.world.datasets.question_parts`): the world's task questions, answered in words; training
is SFT (``sft/world``) on gold answers or on the weak model's replies, and a second student is trained on
the supervisor's most confident share of its replies (:func:`most_confident`); accuracy is the gold
grader's.
**Statements** (``statements-facts``, ``statements-arithmetic``: :func:`tether.world.datasets.statement_rows`):
true or false, a fresh one-logit head on the pretrained model, every weight trained; the weak labels are
the supervisor's probabilities, and a second student is trained with Burns et al.'s auxiliary confidence
loss (:func:`tether.losses.w2s.confidence_loss`, warmed up over ``warmup`` of the steps).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir

Task = Literal["arithmetic", "list", "count", "fact", "statements-facts", "statements-arithmetic"]


class WeakToStrongConfig(Config):
    """``tether experiment weak-to-strong``."""

    world_seed: int = Field(0, description="which world (its statements, and world:... models of this seed)")
    tasks: list[Task] = Field(["list", "fact"], min_length=1, description="questions (arithmetic, list, "
                              "count, fact) or true/false statements (statements-facts, statements-arithmetic)")
    weak: str = Field("world:mini", description="the weak supervisor's pretrained model (any HF directory or "
                      "world:SIZE; world models take the world seed; world:mini is half the default's width "
                      "and depth)")
    strong: str = Field("world:base", description="the strong student's pretrained model")
    sft: str = Field("sft/world", description="questions: the SFT config every model is trained with")
    sft_steps: int = Field(200, ge=1, description="questions: SFT steps per model")
    max_new_tokens: int = Field(24, ge=1, description="questions: reply length")
    confident_share: float = Field(0.5, gt=0, le=1, description="questions: a second student trains on this "
                                   "share of the weak replies, those the supervisor gave the highest mean token "
                                   "log-probability")
    steps: int = Field(300, ge=1, description="statements: optimiser steps per model")
    batch_size: int = Field(32, ge=1, description="statements: batch size")
    lr: float = Field(5e-4, gt=0, description="statements: AdamW learning rate (every weight and the head)")
    aux_coef: float = Field(0.5, ge=0, le=1, description="the confidence loss's weight once warmed up")
    warmup: float = Field(0.2, ge=0, le=1, description="share of the steps over which that weight rises from 0")
    per_part: int = Field(1000, ge=10, description="items per part at most (arithmetic has thousands)")
    max_tokens: int = Field(48, ge=8, description="tokens a statement is cut to")
    seed: int = 0
    out: str = Field("runs/weak-to-strong", description="experiment directory")


def _show(cfg: WeakToStrongConfig, summary: dict[str, Any]) -> list[str]:
    lines = []
    for task, found in summary["tasks"].items():
        acc = found["accuracy"]
        aux = (f" (with the confidence loss {acc['student_aux']['value']:.3f})" if "student_aux" in acc else
               f" (on the supervisor's confident replies only {acc['student_confident']['value']:.3f})"
               if "student_confident" in acc else "")
        lines.append(f"{task}: weak {acc['weak']['value']:.3f}, ceiling {acc['ceiling']['value']:.3f}, "
                     f"student {acc['student']['value']:.3f}{aux}; weak labels right on "
                     f"{found['weak_label_accuracy']:.3f} of the student's training items")
        for name in (n for n in ("pgr", "pgr_aux", "pgr_confident") if n in found):
            p = found[name]
            shown = ("undefined (the ceiling is not above the weak model)" if p["value"] is None else
                     f"{p['value']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]"
                     + ("" if p["measurable_gap"] else " (no measurable gap: the ceiling's lead over the weak "
                                                        "model has an interval reaching zero)"))
            label = {"pgr": "PGR", "pgr_aux": "PGR with the confidence loss",
                     "pgr_confident": "PGR on confident replies only"}[name]
            lines.append(f"  {label}: {shown}")
    lines.append(f"table: {cfg.out}/weak_to_strong.json")
    return lines


@recipe("weak-to-strong", group="experiment", config=WeakToStrongConfig,
        summary="A strong world model trained on a weak model's labels: accuracy against the weak supervisor and "
        "the gold-trained ceiling, and the performance gap recovered, with and without the confidence loss.",
        example="tether experiment weak-to-strong --set world_seed=1 --out runs/w2s-1",
        produces={"weak_to_strong": output("weak_to_strong.json")}, show=_show)
def run(cfg: WeakToStrongConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``weak_to_strong.json``."""
    run_dir = RunDir(cfg.out, command="experiment weak-to-strong", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def with_world_seed(path: str, seed: int) -> str:
    """``world:SIZE`` -> ``world:SIZE?seed=N`` (a world model of the experiment's world); anything else unchanged."""
    return f"{path}?seed={seed}" if path.startswith("world:") and "?" not in path else path


def most_confident(logprobs: Sequence[Sequence[float]], share: float) -> list[int]:
    """The indices (in order) of the ``share`` of replies (at least one) whose tokens the model that wrote
    them gave the highest mean log-probability: the supervisor's most confident labels. A reply without
    tokens comes last; ties keep their order.

    Example: mean log-probs (-0.1, -2.0, -0.5, -1.0) and share 0.5 keep replies 0 and 2.
    """
    import numpy as np

    confidence = np.array([np.mean(lp) if len(lp) else -np.inf for lp in logprobs])
    return sorted(int(i) for i in np.argsort(-confidence, kind="stable")[:max(1, round(share * len(logprobs)))])


def fine_tune(base: str, texts: Sequence[str], targets: Sequence[float], cfg: WeakToStrongConfig, *,
              aux_coef: float, label: str) -> Any:
    """A one-logit classifier on ``base`` trained on ``targets`` (probabilities: gold 0/1 or a supervisor's)
    with :func:`tether.losses.w2s.confidence_loss` (``aux_coef`` 0: cross-entropy on the targets)."""
    from tether.core.errors import UserError
    from tether.core.progress import progress_bar
    from tether.core.seeding import seed_everything
    from tether.guard.classifier import SequenceModel
    from tether.losses.w2s import confidence_coef, confidence_loss

    seed_everything(cfg.seed)
    model = SequenceModel.from_base(base, cfg.max_tokens)
    chunks, _ = model.encode(list(texts))
    if len(chunks) != len(texts):  # a longer statement would be split into windows trained on separately
        raise UserError(f"max_tokens={cfg.max_tokens}: a statement is longer; raise it")
    y = torch.tensor([float(t) for t in targets])
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=cfg.lr)
    rng = random.Random(f"w2s:{label}:{cfg.seed}")
    order: list[int] = []
    model.model.train()
    with progress_bar(label, cfg.steps) as bar:
        for step in range(cfg.steps):
            if len(order) < cfg.batch_size:  # epochs of shuffled statements, a batch never spanning two
                order = rng.sample(range(len(chunks)), len(chunks))
            rows, order = order[:cfg.batch_size], order[cfg.batch_size:]
            logits = model.logits([chunks[i] for i in rows])
            coef = confidence_coef(step, warmup_steps=round(cfg.warmup * cfg.steps), coef=aux_coef)
            loss = confidence_loss(logits, y[rows], coef=coef)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.advance(loss=round(loss.item(), 4))
    model.model.eval()
    return model


def _experiment(cfg: WeakToStrongConfig, out: Path) -> dict[str, Any]:
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig(seed=cfg.world_seed))
    weak_base, strong_base = with_world_seed(cfg.weak, cfg.world_seed), with_world_seed(cfg.strong, cfg.world_seed)
    summary: dict[str, Any] = {"world_seed": cfg.world_seed, "weak": weak_base, "strong": strong_base, "tasks": {}}
    predictions: list[dict[str, Any]] = []
    for task in cfg.tasks:
        runner = _statements if task.startswith("statements-") else _questions
        found, rows = runner(cfg, world, task, weak_base, strong_base, out / task)
        summary["tasks"][task] = found
        predictions += [{"task": task, **row} for row in rows]
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    (out / "weak_to_strong.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _measured(cfg: WeakToStrongConfig, right: dict[str, Any], levels: Sequence[Any]) -> dict[str, Any]:
    """Accuracies (with intervals, and per level) and PGR of the models' 0/1 scores on the test items."""
    from tether.core.stats import performance_gap_recovered, wilson_interval

    found: dict[str, Any] = {
        "accuracy": {name: wilson_interval(int(r.sum()), len(r)).as_dict() for name, r in right.items()},
        "accuracy_by_level": {str(level): {name: round(float(r[[i for i, x in enumerate(levels) if x == level]].mean()),
                                                       4) for name, r in right.items()}
                              for level in sorted(set(levels), key=str)}}
    for key, student in (("pgr", "student"), ("pgr_aux", "student_aux"), ("pgr_confident", "student_confident")):
        if student in right:
            g = performance_gap_recovered(right["weak"], right[student], right["ceiling"], seed=cfg.seed)
            # No gap between weak and ceiling: PGR is undefined (null), not a number.
            found[key] = {name: (None if math.isnan(v) else round(v, 4))
                          for name, v in (("value", g.value), ("ci_low", g.ci_low), ("ci_high", g.ci_high),
                                          ("gap_ci_low", g.gap_ci_low), ("gap_ci_high", g.gap_ci_high))}
            found[key]["n"] = g.n
            # A gap whose interval reaches zero makes the ratio noise: reported, and marked.
            found[key]["measurable_gap"] = g.gap_ci_low > 0
    return found


def _questions(cfg: WeakToStrongConfig, world: Any, kind: str, weak_base: str, strong_base: str, where: Path
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Weak, ceiling and student trained by SFT on answers to the world's questions, graded by gold."""
    import numpy as np

    from tether.models.generation import GenerationSettings, HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.pipelines.stages import sft_on_rows
    from tether.world.datasets import question_parts
    from tether.world.grader import grade
    from tether.world.responses import respond

    parts = question_parts(world, kind, seed=cfg.seed)
    weak_items, student_items, test_items = (parts[name][:cfg.per_part] for name in ("weak", "student", "test"))
    rng = random.Random(f"w2s-answers:{cfg.world_seed}:{kind}:{cfg.seed}")
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed)

    def train(name: str, base: str, items: Sequence[Any], answers: Sequence[str]) -> str:
        rows = [{"messages": [*it.prompt, {"role": "assistant", "content": a}]}
                for it, a in zip(items, answers, strict=True)]
        return sft_on_rows(cfg.sft, base, rows, where / name, steps=cfg.sft_steps, seed=cfg.seed)

    def completions(model_dir: str, items: Sequence[Any]) -> list[Any]:
        model, tokenizer = load_model_and_tokenizer(ModelConfig(path=model_dir))
        model.eval()
        with torch.no_grad():
            return HFGenerator(model, tokenizer).generate([it.prompt for it in items], settings)

    def replies(model_dir: str, items: Sequence[Any]) -> list[str]:
        return [c.text for c in completions(model_dir, items)]

    def gold(items: Sequence[Any]) -> list[str]:
        return [respond(it, "good", rng, world) for it in items]

    weak_dir = train("weak", weak_base, weak_items, gold(weak_items))
    labelled = completions(weak_dir, student_items)
    weak_labels = [c.text for c in labelled]
    kept = most_confident([c.logprobs for c in labelled], cfg.confident_share)
    models = {"weak": weak_dir,
              "ceiling": train("ceiling", strong_base, student_items, gold(student_items)),
              "student": train("student", strong_base, student_items, weak_labels),
              "student_confident": train("student_confident", strong_base, [student_items[i] for i in kept],
                                         [weak_labels[i] for i in kept])}
    said = {name: replies(directory, test_items) for name, directory in models.items()}
    right = {name: np.array([grade(it, text).label == "correct" for it, text in zip(test_items, texts, strict=True)],
                            dtype=float) for name, texts in said.items()}
    levels = [it.tags.get("difficulty") if kind == "arithmetic" else it.gold.get("op", kind) for it in test_items]
    label_right = np.array([grade(it, text).label == "correct" for it, text in zip(student_items, weak_labels,
                                                                                      strict=True)])
    found = {"items": {"weak": len(weak_items), "student": len(student_items), "test": len(test_items),
                       "confident": len(kept)},
             "weak_label_accuracy": round(float(label_right.mean()), 4),
             "confident_label_accuracy": round(float(label_right[kept].mean()), 4),
             **_measured(cfg, right, levels)}
    rows = [{"id": it.id, "prompt": it.user_text, "answer": it.gold["answer"],
             **{name: said[name][i] for name in models}, **{f"{name}_correct": bool(right[name][i]) for name in models}}
            for i, it in enumerate(test_items)]
    return found, rows


def _statements(cfg: WeakToStrongConfig, world: Any, task: str, weak_base: str, strong_base: str, where: Path
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Weak, ceiling and students as true/false classifiers of statements, the students with and without the
    confidence loss."""
    import numpy as np

    from tether.world.datasets import statement_rows

    parts = statement_rows(world, task.removeprefix("statements-"), seed=cfg.seed)
    weak_rows, student_rows, test_rows = (parts[name][:cfg.per_part] for name in ("weak", "student", "test"))

    def texts(rows: Sequence[dict[str, Any]]) -> list[str]:
        return [r["text"] for r in rows]

    def gold(rows: Sequence[dict[str, Any]]) -> list[float]:
        return [float(r["label"]) for r in rows]

    supervisor = fine_tune(weak_base, texts(weak_rows), gold(weak_rows), cfg, aux_coef=0.0, label=f"{task}: weak")
    weak_labels = supervisor.scores(texts(student_rows))
    trained = {"weak": supervisor,
               "ceiling": fine_tune(strong_base, texts(student_rows), gold(student_rows), cfg, aux_coef=0.0,
                                    label=f"{task}: strong on gold"),
               "student": fine_tune(strong_base, texts(student_rows), weak_labels, cfg, aux_coef=0.0,
                                    label=f"{task}: strong on weak labels"),
               "student_aux": fine_tune(strong_base, texts(student_rows), weak_labels, cfg, aux_coef=cfg.aux_coef,
                                        label=f"{task}: strong on weak labels, confidence loss")}
    truth = np.array(gold(test_rows)) > 0.5
    probs = {name: np.array(m.scores(texts(test_rows))) for name, m in trained.items()}
    right = {name: ((p > 0.5) == truth).astype(float) for name, p in probs.items()}
    found = {"items": {"weak": len(weak_rows), "student": len(student_rows), "test": len(test_rows)},
             "weak_label_accuracy": round(float(np.mean((np.array(weak_labels) > 0.5)
                                                        == (np.array(gold(student_rows)) > 0.5))), 4),
             **_measured(cfg, right, [row["level"] for row in test_rows])}
    rows = [{**row, **{name: round(float(p[i]), 4) for name, p in probs.items()}} for i, row in enumerate(test_rows)]
    return found, rows
