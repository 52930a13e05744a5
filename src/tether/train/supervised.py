"""The supervised loop SFT and IRL share: demonstrations in, a loss on completion / assistant tokens, a
fine-tuned model out.

Prompt tokens, and in multi-turn conversations every non-assistant turn, are masked out of the loss (see
:mod:`tether.models.chat`). :func:`train_supervised` reads top to bottom: load -> data -> loop (batch -> loss
-> step -> log -> eval -> checkpoint) -> save; its ``objective`` is the NLL unless a recipe passes another
(``tether train irl``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.runs import RunDir
from tether.data.collate import Grouped, collate_grouped, pad_batch, truncate
from tether.data.context import ContextConfig, context_for, with_context
from tether.data.records import SFTRecord, TokenizedExample
from tether.data.sources import load_records
from tether.engine.evaluation import EvalSchedule, TrainingEval
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.losses.sft import sft_loss
from tether.models.chat import tokenize_conversation, tokenize_prompt_completion
from tether.models.loading import ModelConfig, load_model_and_tokenizer, save_model
from tether.models.logprobs import completion_logps, grouped_completion_logps


class SFTData(Config):
    """Demonstrations to train on."""

    train: str = Field(description="JSONL / datasets directory of SFT records, or builtin:NAME")
    eval: str | None = Field(None, description="held-out records for eval loss")
    max_length: int = Field(1024, ge=2, description="tokens per example; longer ones are cut at the end")
    packing: Literal["none", "padding-free"] = Field(
        "none", description="padding-free: each micro-batch is one row of concatenated examples, attention "
        "isolated per example; pays off with a varlen attention kernel (flash-attention), not SDPA/eager")
    length_groups: int = Field(4, ge=1, description="split each micro-batch into up to N groups of similar "
                               "length, each padded on its own: the same loss, less compute spent on padding")
    skip_bad: bool = Field(False, description="skip malformed rows (counted in record.json) instead of failing")
    context: ContextConfig | None = Field(None, description="put one of these texts in front of every example's "
                                          "prompt (the character-first recipe's seed prompts)")


class SFTConfig(Config):
    """``tether train sft``."""

    model: ModelConfig
    data: SFTData
    optim: OptimConfig = OptimConfig()
    loop: LoopConfig = LoopConfig()
    eval_every: int = Field(0, ge=0, description="eval loss every N steps; 0: only at the end")
    evaluation: TrainingEval = Field(default_factory=TrainingEval,
                                     description="evaluation harness every N steps, early stopping")
    out: str = Field("runs/sft", description="run directory")
    seed: int = Field(0, description="seeds the model init (tiny:), data order and dropout")


def tokenize_sft(record: SFTRecord, tokenizer: Any, max_length: int, context: tuple[str, str] | None = None
                 ) -> TokenizedExample:
    """One SFT record as ids with the loss on assistant / completion tokens; ``context``: (text, placement)
    put in front of the prompt."""
    if record.messages is not None:
        messages: Any = [m.model_dump() for m in record.messages]
        if context is not None:
            messages = with_context(messages, *context)
        example = tokenize_conversation(tokenizer, messages)
    else:
        prompt: Any = record.prompt if isinstance(record.prompt, str) else [m.model_dump() for m in record.prompt or []]
        if context is not None:
            prompt = with_context(prompt, *context)
        completion = (record.completion if isinstance(record.completion, str)
                      else [m.model_dump() for m in record.completion or []])
        example = tokenize_prompt_completion(tokenizer, prompt, completion)
    return truncate(example, max_length)


# (model, one collated micro-batch) -> the loss summed over its scored tokens
Objective = Callable[[Any, Grouped], torch.Tensor]


def train_supervised(cfg: SFTConfig, run_dir: RunDir, resume: bool, objective: Objective | None = None
                     ) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data`` into ``run_dir``; ``objective`` replaces the NLL."""
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    train_set = _load(cfg.data.train, cfg, tokenizer, run_dir)
    eval_set = _load(cfg.data.eval, cfg, tokenizer, run_dir) if cfg.data.eval else []

    loop = TrainLoop(model, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)
    schedule = loop.track(EvalSchedule(cfg.evaluation, tokenizer, run_dir))
    if resume:
        loop.resume()
    device = loop.accelerator.device
    pad_id = tokenizer.pad_token_id

    def collate(examples: list[TokenizedExample]) -> Grouped:
        return collate_grouped(examples, pad_id=pad_id, device=device, groups=cfg.data.length_groups,
                               packing=cfg.data.packing)

    def loss_sum(batch: Grouped) -> torch.Tensor:
        if objective is not None:
            return objective(loop.model, batch)
        outs = grouped_completion_logps(loop.model, batch.batches)
        return sum((sft_loss(o.token_logps, b.loss_mask).loss_sum for o, b in zip(outs, batch.batches, strict=True)),
                   torch.zeros((), device=device))

    eval_loss = None
    for _step, micro_batches in loop.plan(len(train_set)):
        if schedule.stopped_at is not None:  # resumed after early stopping had ended it
            break
        batches = [collate([train_set[i] for i in ids]) for ids in micro_batches]
        stats = loop.step(batches, loss_sum, count=Grouped.scored_tokens, num_tokens=Grouped.real_tokens)
        extra: dict[str, float] = {}
        if eval_set and cfg.eval_every and loop.step_count % cfg.eval_every == 0:
            eval_loss = evaluate_loss(loop.model, eval_set, pad_id, device)
            extra["eval_loss"] = round(eval_loss, 6)
        harness, stop = schedule.after_step(loop.model, loop.step_count)
        loop.log(stats, extra | harness)
        loop.maybe_checkpoint()
        if stop:
            break

    evaluation = schedule.finish(loop.model, loop.step_count)
    if eval_set:
        eval_loss = evaluate_loss(loop.model, eval_set, pad_id, device)
    summary: dict[str, Any] = {"steps": loop.step_count, "tokens_seen": loop.tokens_seen}
    last = loop.last_metrics()
    if last:
        summary["train_loss"] = last["loss"]
    if eval_loss is not None:
        summary["eval_loss"] = round(eval_loss, 6)
    summary |= evaluation
    if loop.is_main:
        model_dir = save_model(loop.unwrapped(), tokenizer, Path(cfg.out) / "model")  # type: ignore[arg-type]
        run_dir.add_output("model", model_dir)
    loop.close()
    return summary


def _load(spec: str, cfg: SFTConfig, tokenizer: Any, run_dir: RunDir) -> list[TokenizedExample]:
    loaded = load_records(spec, SFTRecord, seed=cfg.seed, skip_bad=cfg.data.skip_bad)
    run_dir.record_skipped(loaded.skipped)
    if not loaded.records:
        from tether.core.errors import DataError

        raise DataError(f"{spec}: no usable records")
    ctx = cfg.data.context
    return [tokenize_sft(r, tokenizer, cfg.data.max_length,
                         None if ctx is None else (context_for(ctx, cfg.seed, i), ctx.placement))
            for i, r in enumerate(loaded.records)]


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, examples: list[TokenizedExample], pad_id: int,
                  device: torch.device, batch_size: int = 32) -> float:
    """Mean NLL per completion token over ``examples``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = pad_batch(examples[start:start + batch_size], pad_id, device)
        logps = completion_logps(model, batch.input_ids, batch.attention_mask, batch.loss_mask)  # type: ignore[arg-type]
        loss = sft_loss(logps.token_logps, batch.loss_mask)
        total += float(loss.loss_sum)
        count += int(loss.num_tokens)
    model.train(was_training)
    return total / max(count, 1)
