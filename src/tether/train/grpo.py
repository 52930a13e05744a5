"""Group-relative policy optimisation (GRPO; Shao et al. 2024) and RLOO / REINFORCE++ advantages.

Each step: draw ``prompts_per_step`` prompts, sample ``group_size`` completions of each with
the policy (the batched KV-cache sampler), score them (:mod:`tether.train.rewards`), turn the
rewards into advantages within each prompt's group (:mod:`tether.losses.rl`), and take one
clipped policy-gradient step with a k3 KL penalty to the frozen reference. One update per
rollout (the clipped ratio is 1 at the start of the update; it matters once an update reuses
its rollout, which the PPO recipe adds).

Logged per step: loss, total reward and each term, the gold reward where the prompts carry the
world's metadata, mean KL to the reference (k3), completion length, clip fraction, grad norm.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.collate import pad_batch
from tether.data.records import PromptRecord
from tether.data.sources import load_records
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.losses.rl import (
    clipped_surrogate,
    group_advantages,
    kl_estimate,
    reinforce_pp_advantages,
    rloo_advantages,
)
from tether.models.chat import TokenizedExample
from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.loading import ModelConfig, load_model_and_tokenizer, save_model
from tether.models.logprobs import completion_logps, inner_model
from tether.train.rewards import Rewards, RewardSpec


class PromptData(Config):
    """Prompts to roll out from."""

    train: str = Field(description="JSONL / datasets directory of prompt records, or builtin:world-prompts")
    skip_bad: bool = Field(False, description="skip malformed rows (counted in record.json) instead of failing")


class GRPOLoss(Config):
    """Advantages, clipping and the KL penalty."""

    advantage: Literal["grpo", "rloo", "reinforce++", "reinforce++-baseline"] = Field(
        "grpo", description="how rewards become advantages within a prompt's group")
    scale: Literal["group", "batch", "none"] = Field("group", description="grpo: divide by the group's std, the "
                                                     "batch's, or nothing (Dr. GRPO)")
    beta: float = Field(0.04, ge=0, description="weight of the k3 KL penalty to the reference; 0: no reference")
    clip_low: float = Field(0.2, gt=0, description="PPO clip ε")
    clip_high: float | None = Field(None, gt=0, description="asymmetric upper clip (DAPO); default: clip_low")
    aggregation: Literal["token-mean", "sequence-mean", "constant"] = Field(
        "token-mean", description="token-mean (DAPO), sequence-mean (original GRPO), constant (Dr. GRPO)")


class GRPOConfig(Config):
    """``tether train grpo``."""

    model: ModelConfig
    data: PromptData
    rewards: list[RewardSpec] = Field(description="reward terms, summed with their weights")
    loss: GRPOLoss = GRPOLoss()
    group_size: int = Field(4, ge=2, description="completions sampled per prompt")
    generation: GenerationSettings = Field(default_factory=lambda: GenerationSettings(max_new_tokens=48))
    optim: OptimConfig = OptimConfig(lr=1e-5)
    loop: LoopConfig = Field(default_factory=lambda: LoopConfig(batch_size=32),
                             description="batch_size counts completions: prompts per step x group_size")
    out: str = Field("runs/grpo", description="run directory")
    seed: int = Field(0, description="seeds prompt order, sampling and tiny: inits")


def run(cfg: GRPOConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, write the run directory and the model (``OUT/model``); return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train grpo", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd, resume))


def _train(cfg: GRPOConfig, run_dir: RunDir, resume: bool) -> dict[str, Any]:
    if cfg.loop.batch_size % cfg.group_size:
        raise DataError(f"loop.batch_size={cfg.loop.batch_size} is not a multiple of group_size={cfg.group_size}")
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    loaded = load_records(cfg.data.train, PromptRecord, seed=cfg.seed, skip_bad=cfg.data.skip_bad)
    run_dir.record_skipped(loaded.skipped)
    if not loaded.records:
        raise DataError(f"{cfg.data.train}: no usable prompts")
    prompts = [r.model_dump(mode="json") for r in loaded.records]
    reference = copy.deepcopy(model).eval().requires_grad_(False) if cfg.loss.beta > 0 else None
    rewards = Rewards(cfg.rewards, max_tokens=cfg.generation.max_new_tokens)
    gold = Rewards([RewardSpec(kind="world-gold")], max_tokens=cfg.generation.max_new_tokens)
    has_gold = all("family" in p for p in prompts)

    loop = TrainLoop(model, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)
    if resume:
        loop.resume()
    device, pad_id = loop.accelerator.device, tokenizer.pad_token_id
    if reference is not None:
        reference.to(device)
    generator = HFGenerator(inner_model(loop.model), tokenizer)
    per_process = cfg.loop.batch_size // loop.accelerator.num_processes
    if per_process % cfg.group_size:
        raise DataError("each process's share of loop.batch_size must hold whole groups (a multiple of group_size)")

    while loop.step_count < cfg.loop.max_steps:
        step = loop.step_count
        # Every process draws its own prompts (seeded by step and rank); rollouts are local.
        rng = random.Random(f"{cfg.seed}:{step}:{loop.accelerator.process_index}")
        chosen = [prompts[rng.randrange(len(prompts))] for _ in range(per_process // cfg.group_size)]
        batch, stats = _rollout(cfg, generator, rewards, gold if has_gold else None, chosen, step, loop, pad_id,
                                reference)
        result = loop.step([batch], lambda b: _loss_sum(cfg, loop.model, b), count=lambda b: b["count"],
                           num_tokens=lambda b: int(b["rows"].attention_mask.sum()))
        loop.log(result, stats | {"kl": round(batch["kl"], 6), "clip_fraction": round(batch["clip_fraction"], 6)})
        loop.maybe_checkpoint()

    summary: dict[str, Any] = {"steps": loop.step_count, "tokens_seen": loop.tokens_seen}
    last = run_dir.read_metrics()
    if last:
        summary |= {k: v for k, v in last[-1].items() if k.startswith("reward") or k in ("kl", "gold_reward")}
    if loop.is_main:
        model_dir = save_model(loop.unwrapped(), tokenizer, Path(cfg.out) / "model")  # type: ignore[arg-type]
        run_dir.add_output("model", model_dir)
    loop.close()
    return summary


def _rollout(cfg: GRPOConfig, generator: HFGenerator, rewards: Rewards, gold: Rewards | None,
             chosen: list[dict[str, Any]], step: int, loop: TrainLoop, pad_id: int,
             reference: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """Sample the groups, score them, and collate the training batch with advantages."""
    group_prompts = [p["prompt"] for p in chosen for _ in range(cfg.group_size)]
    metas = [p for p in chosen for _ in range(cfg.group_size)]
    settings = cfg.generation.model_copy(update={"seed": cfg.seed * 1_000_003 + step * 101 +
                                                 loop.accelerator.process_index})
    completions = generator.generate(group_prompts, settings)
    texts, counts = [c.text for c in completions], [len(c.token_ids) for c in completions]
    reward, terms = rewards(group_prompts, texts, counts, metas)
    advantages = _advantages(cfg, reward)
    prompt_ids = generator.encode(group_prompts)
    examples = [TokenizedExample(p + c.token_ids, [False] * len(p) + [True] * len(c.token_ids))
                for p, c in zip(prompt_ids, completions, strict=True)]
    rows = pad_batch(examples, pad_id, loop.accelerator.device)
    with torch.no_grad():
        old = completion_logps(loop.model, rows.input_ids, rows.attention_mask, rows.loss_mask).token_logps
        ref = (completion_logps(reference, rows.input_ids, rows.attention_mask, rows.loss_mask).token_logps
               if reference is not None else None)
    stats = {"reward": round(float(reward.mean()), 6), **{k: round(v, 6) for k, v in terms.items()},
             "completion_tokens": round(sum(counts) / len(counts), 2)}
    if gold is not None:
        stats["gold_reward"] = round(float(gold(group_prompts, texts, counts, metas)[0].mean()), 6)
    batch = {"rows": rows, "old": old, "ref": ref, "advantages": advantages.to(rows.input_ids.device),
             "count": _count(cfg, rows), "kl": 0.0, "clip_fraction": 0.0}
    return batch, stats


def _advantages(cfg: GRPOConfig, reward: torch.Tensor) -> torch.Tensor:
    kind = cfg.loss.advantage
    if kind == "grpo":
        return group_advantages(reward, cfg.group_size, scale=cfg.loss.scale)
    if kind == "rloo":
        return rloo_advantages(reward, cfg.group_size)
    return reinforce_pp_advantages(reward, cfg.group_size, baseline=kind == "reinforce++-baseline")


def _count(cfg: GRPOConfig, rows: Any) -> int:
    """What the loss sum is divided by, over the global batch (the loop reduces it across processes)."""
    scored = rows.loss_mask[:, 1:] & rows.attention_mask[:, :-1].bool()
    return int(scored.sum()) if cfg.loss.aggregation == "token-mean" else int(rows.input_ids.shape[0])


def _loss_sum(cfg: GRPOConfig, policy: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Summed per-token (or per-sequence) loss: clipped surrogate plus β · k3 KL."""
    rows = batch["rows"]
    logps = completion_logps(policy, rows.input_ids, rows.attention_mask, rows.loss_mask).token_logps
    mask = rows.loss_mask.clone()
    mask[:, 0] = False
    mask[:, 1:] &= rows.attention_mask[:, :-1].bool()
    per_token, clipped = clipped_surrogate(logps, batch["old"], batch["advantages"], clip_low=cfg.loss.clip_low,
                                           clip_high=cfg.loss.clip_high)
    if batch["ref"] is not None and cfg.loss.beta > 0:
        kl = kl_estimate(logps, batch["ref"], "k3")
        per_token = per_token + cfg.loss.beta * kl
        batch["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))
    batch["clip_fraction"] = float((clipped & mask).sum() / mask.sum().clamp(min=1))
    per_token = per_token * mask
    if cfg.loss.aggregation == "token-mean":
        return per_token.sum()
    if cfg.loss.aggregation == "sequence-mean":
        return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).sum()
    return per_token.sum() / cfg.generation.max_new_tokens
