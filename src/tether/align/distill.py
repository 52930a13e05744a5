"""Context distillation: put a prompt's effect into the weights (Askell et al. 2021, Snell et al. 2022).

The teacher (by default the starting model itself, frozen) answers every training prompt with a
*context* in front (e.g. a character preamble as the system turn); the student is then trained
on the same prompts *without* the context to produce what the teacher produced:

- ``loss: sft``: NLL of the teacher's sampled completion tokens (distil the samples);
- ``loss: kl``: at every completion position, the KL between the teacher's full next-token
  distribution (with the context) and the student's (without it) (``tether.losses.distill``):
  more signal per sample than the sampled token alone.

``run(cfg)``: load -> sample under the context (``samples.jsonl``, appended chunk by chunk, so a
resumed run does not sample again; ``sft.jsonl`` holds the same data for ``tether train sft``) ->
loop (batch -> loss -> step -> log -> eval / early stop -> checkpoint) -> save ``OUT/model``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.progress import progress_bar
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.collate import TokenBatch, pad_batch
from tether.data.context import ContextConfig, context_for, with_context
from tether.data.io import write_jsonl
from tether.data.records import TokenizedExample
from tether.data.sources import PromptData, load_prompts
from tether.engine.evaluation import EvalSchedule, TrainingEval
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.losses.distill import Direction, token_kl
from tether.losses.sft import sft_loss
from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.loading import ModelConfig, load_model_and_tokenizer, save_model
from tether.models.logprobs import completion_logits, completion_logps, inner_model, run_inside


def _samples() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64)


class DistillConfig(Config):
    """``tether align distill``."""

    model: ModelConfig = Field(description="the student's starting point (and, by default, the teacher)")
    teacher: ModelConfig | None = Field(None, description="a separate teacher; default: the starting model, frozen "
                                        "(with LoRA: the student with its adapters off)")
    context: ContextConfig
    data: PromptData
    limit: int | None = Field(None, ge=1, description="the first N prompts only")
    samples_per_prompt: int = Field(1, ge=1, description="teacher completions per prompt")
    generation: GenerationSettings = Field(default_factory=_samples, description="the teacher's sampling")
    loss: Literal["sft", "kl"] = Field("kl", description="sft on the samples, or token-level KL to the teacher")
    direction: Direction = Field("forward", description="kl: forward KL(teacher || student) or reverse")
    temperature: float = Field(1.0, gt=0, description="kl: both distributions at this temperature")
    optim: OptimConfig = OptimConfig()
    loop: LoopConfig = LoopConfig()
    evaluation: TrainingEval = Field(default_factory=TrainingEval,
                                     description="evaluation harness every N steps, early stopping")
    chunk_prompts: int = Field(256, ge=1, description="prompts sampled between appends to samples.jsonl")
    out: str = Field("runs/distill", description="run directory")
    seed: int = Field(0, description="seeds context draws, sampling, data order")


@dataclass
class Pair:
    """One sample as the student sees it and as the teacher saw it: the same completion tokens."""

    student: TokenizedExample
    teacher: TokenizedExample


@recipe("distill", group="align", config=DistillConfig,
        summary="Context distillation: sample with a context, train without it (SFT on samples or token-level KL).",
        example="tether align distill --config distill/world-character --out runs/distill",
        consumes={"model": "model.path", "prompts": "data.train"}, produces={"model": output("model")})
def run(cfg: DistillConfig, *, resume: bool = False) -> dict[str, Any]:
    """Sample, train, write the run directory and ``OUT/model``; return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="align distill", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd, resume))


class _Teacher:
    """The teacher's forward: a separate model, a frozen copy of the start, or the student's adapters off."""

    def __init__(self, cfg: DistillConfig, student: Any) -> None:
        self.adapters_off = cfg.teacher is None and hasattr(student, "disable_adapter")
        if cfg.teacher is not None:
            self.model: Any = load_model_and_tokenizer(cfg.teacher)[0]
        else:
            self.model = None if self.adapters_off else copy.deepcopy(student)
        if self.model is not None:
            self.model.eval().requires_grad_(False)

    @contextmanager
    def use(self, student: Any) -> Any:
        """The teacher as a model to call (no gradients)."""
        with torch.no_grad():
            if self.model is not None:
                yield self.model
            else:
                with inner_model(student).disable_adapter():
                    yield student


def _train(cfg: DistillConfig, run_dir: RunDir, resume: bool) -> dict[str, Any]:
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    teacher = _Teacher(cfg, model)
    prompts = load_prompts(cfg.data, cfg.seed, run_dir)[: cfg.limit]
    with teacher.use(model) as t:
        rows = sample_under_context(cfg, HFGenerator(t, tokenizer), prompts, Path(cfg.out), run_dir)
    pairs = [tokenize_pair(HFGenerator(model, tokenizer), r, cfg.context.placement) for r in rows]
    pairs = [p for p in pairs if any(p.student.loss_mask)]
    if not pairs:
        raise DataError(f"{cfg.data.train}: the teacher produced no completion tokens to distil")

    loop = TrainLoop(model, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)
    schedule = loop.track(EvalSchedule(cfg.evaluation, tokenizer, run_dir))
    if resume:
        loop.resume()
    device = loop.accelerator.device
    if teacher.model is not None:
        teacher.model.to(device)
    pad_id = tokenizer.pad_token_id

    def collate(batch: list[Pair]) -> tuple[TokenBatch, TokenBatch]:
        return (pad_batch([p.student for p in batch], pad_id, device),
                pad_batch([p.teacher for p in batch], pad_id, device))

    def loss_sum(batch: tuple[TokenBatch, TokenBatch]) -> torch.Tensor:
        student, teacher_rows = batch
        if cfg.loss == "sft":
            logps = completion_logps(loop.model, student.input_ids, student.attention_mask, student.loss_mask)
            return sft_loss(logps.token_logps, student.loss_mask).loss_sum
        with teacher.use(loop.unwrapped()) as t:
            target = completion_logits(t, teacher_rows.input_ids, teacher_rows.attention_mask, teacher_rows.loss_mask)
        logits = run_inside(loop.model, _student_logits, rows=student)
        return token_kl(logits, target, direction=cfg.direction, temperature=cfg.temperature).sum()

    for _step, micro_batches in loop.plan(len(pairs)):
        if schedule.stopped_at is not None:  # resumed after early stopping had ended it
            break
        batches = [collate([pairs[i] for i in ids]) for ids in micro_batches]
        stats = loop.step(batches, loss_sum, count=lambda b: b[0].scored_tokens(),
                          num_tokens=lambda b: int(b[0].attention_mask.sum()))
        harness, stop = schedule.after_step(loop.model, loop.step_count)
        loop.log(stats, harness)
        loop.maybe_checkpoint()
        if stop:
            break

    evaluation = schedule.finish(loop.model, loop.step_count)
    summary: dict[str, Any] = {"steps": loop.step_count, "samples": len(pairs), "loss_kind": cfg.loss,
                               "tokens_seen": loop.tokens_seen}
    last = loop.last_metrics()
    if last:
        summary["train_loss"] = last["loss"]
    summary |= evaluation
    if loop.is_main:
        model_dir = save_model(loop.unwrapped(), tokenizer, Path(cfg.out) / "model")  # type: ignore[arg-type]
        run_dir.add_output("model", model_dir)
    loop.close()
    return summary


def _student_logits(model: Any, *, rows: TokenBatch) -> torch.Tensor:
    return completion_logits(model, rows.input_ids, rows.attention_mask, rows.loss_mask)


def sample_under_context(cfg: DistillConfig, teacher: HFGenerator, prompts: Sequence[dict[str, Any]], out: Path,
                         run_dir: RunDir) -> list[dict[str, Any]]:
    """The teacher's completions, with the context, of every prompt: ``samples.jsonl`` (resumable) and ``sft.jsonl``.

    Every process computes the same samples (per-sample seeds); only the main one writes them.
    """
    path = out / "samples.jsonl"
    done = {(r["index"], r["sample"]): r for r in _read(path)} if run_dir.writer else {}
    todo = [(i, j) for i in range(len(prompts)) for j in range(cfg.samples_per_prompt) if (i, j) not in done]
    with progress_bar("sample under context", len(prompts) * cfg.samples_per_prompt, completed=len(done)) as bar:
        for start in range(0, len(todo), cfg.chunk_prompts):
            chunk = todo[start:start + cfg.chunk_prompts]
            contexted = [with_context(prompts[i]["prompt"], context_for(cfg.context, cfg.seed, i),
                                      cfg.context.placement)
                         for i, _ in chunk]
            seeds = [random.Random(f"{cfg.seed}:{i}:{j}:sample").randrange(2**31) for i, j in chunk]
            completions = teacher.generate(contexted, cfg.generation, seeds=seeds)
            rows = [{"index": i, "sample": j, "prompt": prompts[i]["prompt"], "context": context_for(cfg.context,
                                                                                                     cfg.seed, i),
                     "completion": c.text, "completion_ids": c.token_ids, "finish_reason": c.finish_reason,
                     **{k: v for k, v in prompts[i].items() if k != "prompt"}}
                    for (i, j), c in zip(chunk, completions, strict=True)]
            if run_dir.writer:
                with path.open("a") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in rows)
            done |= {(r["index"], r["sample"]): r for r in rows}
            bar.advance(len(chunk))
    rows = [done[key] for key in sorted(done)]
    if run_dir.writer:
        write_jsonl(out / "sft.jsonl", [_sft_row(r) for r in rows if r["completion"].strip()])
        run_dir.add_output("samples", path)
        run_dir.add_output("sft", out / "sft.jsonl")
    return rows


def _sft_row(row: dict[str, Any]) -> dict[str, Any]:
    prompt = row["prompt"]
    if isinstance(prompt, str):
        return {"prompt": prompt, "completion": row["completion"]}
    return {"messages": [*prompt, {"role": "assistant", "content": row["completion"]}]}


def tokenize_pair(generator: HFGenerator, row: dict[str, Any], placement: str) -> Pair:
    """The sampled completion's tokens after the bare prompt (student) and after the contexted one (teacher)."""
    completion = list(row["completion_ids"])
    student_prompt = generator.encode([row["prompt"]])[0]
    teacher_prompt = generator.encode([with_context(row["prompt"], row["context"], placement)])[0]
    return Pair(TokenizedExample(student_prompt + completion, [False] * len(student_prompt) + [True] * len(completion)),
                TokenizedExample(teacher_prompt + completion, [False] * len(teacher_prompt) + [True] * len(completion)))


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
