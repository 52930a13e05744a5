"""Inverse RL from demonstrations (``tether train irl``): recover a reward and a policy from demonstrations
alone, with inverse soft-Q learning (IQ-Learn as Wulfmeier et al. 2024 apply it to language models;
:mod:`tether.losses.irl`).

The loop, data and outputs are SFT's (:mod:`tether.train.supervised`); the loss is IQ-Learn's, whose
``alpha = null`` case is SFT itself (for any ``gamma``: the value terms cancel). The trained model is both
the policy and, through its logits read as soft Q-values, the reward: :func:`recovered_rewards` scores any
reply with it, and the run reports how often that reward prefers the chosen reply of ``pairs`` (preference
records, if given).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.collate import Grouped, pad_batch
from tether.losses.irl import iq_learn_loss, next_states
from tether.models.chat import tokenize_prompt_completion
from tether.models.logprobs import completion_logits, run_inside, scored_positions
from tether.train.supervised import SFTConfig, train_supervised


class IRLConfig(SFTConfig):
    """``tether train irl``."""

    gamma: float = Field(0.9, ge=0, le=1, description="discount: how much each token answers for the soft value of "
                         "the state it leads to, through the regulariser (with alpha null the loss is plain SFT's "
                         "for any gamma)")
    alpha: float | None = Field(1.0, gt=0, description="scale of the χ² regulariser on the recovered rewards "
                                "(null: none)")
    pairs: str | None = Field(None, description="preference records (JSONL or builtin:NAME) whose chosen reply the "
                              "recovered reward should prefer: the run reports how often it does")
    out: str = Field("runs/irl", description="run directory")


def objective(cfg: IRLConfig) -> Any:
    """The IQ-Learn loss of a collated micro-batch (summed over its demonstrated tokens)."""

    def loss_sum(model: Any, batch: Grouped) -> torch.Tensor:
        total = None
        for b in batch.batches:
            logits = run_inside(model, completion_logits, input_ids=b.input_ids, attention_mask=b.attention_mask,
                                loss_mask=b.loss_mask)
            scored = scored_positions(b.attention_mask, b.loss_mask)
            loss = iq_learn_loss(logits, b.input_ids[scored], next_states(scored[:, 1:]), gamma=cfg.gamma,
                                 alpha=cfg.alpha).loss_sum
            total = loss if total is None else total + loss
        assert total is not None
        return total

    return loss_sum


@torch.no_grad()
def recovered_rewards(model: Any, tokenizer: Any, prompts: Sequence[Any], replies: Sequence[Any], *,
                      gamma: float, batch_size: int = 32) -> list[float]:
    """Each reply's recovered reward: the sum over its tokens of ``Q(s, a) − γ V(s')`` under ``model``'s
    logits (prompts and replies as text or messages)."""
    examples = [tokenize_prompt_completion(tokenizer, p, r) for p, r in zip(prompts, replies, strict=True)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for start in range(0, len(examples), batch_size):
            b = pad_batch(examples[start: start + batch_size], tokenizer.pad_token_id, device)
            logits = completion_logits(model, b.input_ids, b.attention_mask, b.loss_mask)
            scored = scored_positions(b.attention_mask, b.loss_mask)
            rewards = iq_learn_loss(logits, b.input_ids[scored], next_states(scored[:, 1:]), gamma=gamma,
                                    alpha=None).rewards
            rows = torch.arange(scored.shape[0], device=device)[:, None].expand_as(scored)[scored]
            out.extend(torch.zeros(scored.shape[0], device=device).index_add_(0, rows, rewards).tolist())
    finally:
        model.train(was_training)
    return out


def pair_accuracy(model: Any, tokenizer: Any, pairs: str, *, gamma: float, seed: int) -> dict[str, Any]:
    """How often the recovered reward strictly prefers each pair's chosen reply, with a Wilson interval."""
    from tether.core.stats import wilson_interval
    from tether.data.records import PreferenceRecord
    from tether.data.sources import load_records

    records = load_records(pairs, PreferenceRecord, seed=seed).records
    prompts = [r.prompt if isinstance(r.prompt, str) else [m.model_dump() for m in r.prompt] for r in records]

    def reply(value: Any) -> Any:
        return value if isinstance(value, str) else [m.model_dump() for m in value]

    chosen = recovered_rewards(model, tokenizer, prompts, [reply(r.chosen) for r in records], gamma=gamma)
    rejected = recovered_rewards(model, tokenizer, prompts, [reply(r.rejected) for r in records], gamma=gamma)
    return wilson_interval(sum(c > r for c, r in zip(chosen, rejected, strict=True)), len(records)).as_dict()


@recipe("irl", group="train", config=IRLConfig,
        summary="Inverse RL from demonstrations (IQ-Learn): a policy and the reward it implies, from demonstrations "
        "alone.",
        example="tether train irl --config sft/world --set loop.max_steps=200 --out runs/irl",
        consumes={"model": "model.path", "demonstrations": "data.train"}, produces={"model": output("model")})
def run(cfg: IRLConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train; write the run directory and the model (``OUT/model``: the policy, and the reward through
    :func:`recovered_rewards`); return the summary."""
    from tether.core.errors import ConfigError

    if cfg.data.packing != "none":
        raise ConfigError("data.packing: IQ-Learn reads each reply's next state, which packing does not keep; "
                          "set data.packing=none")
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train irl", config=cfg, seed=cfg.seed, resume=resume)

    def body(rd: RunDir) -> dict[str, Any]:
        summary = train_supervised(cfg, rd, resume, objective(cfg))
        if cfg.pairs is not None:
            from tether.models.loading import ModelConfig, load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(ModelConfig(path=str(Path(cfg.out) / "model")))
            summary["pair_accuracy"] = pair_accuracy(model, tokenizer, cfg.pairs, gamma=cfg.gamma, seed=cfg.seed)
        return summary

    return run_dir.execute(body)
