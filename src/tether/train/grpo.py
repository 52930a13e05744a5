"""Group-relative policy optimisation (GRPO; Shao et al. 2024), RLOO and REINFORCE++ advantages.

Each step: draw ``loop.batch_size / group_size`` prompts, sample ``group_size`` completions of
each with the policy (the batched KV-cache sampler, per-completion seeds), score them
(:mod:`tether.scoring.rewards`), turn the rewards into advantages within each prompt's group
(:mod:`tether.losses.rl`), and take one clipped policy-gradient step with a k3 KL penalty to the
reference (a frozen copy, or the policy with its LoRA adapters off). One update per rollout by
default, so the clipped ratio is 1 at the update; ``iterations`` > 1 reuses each rollout for
several updates, where the clip matters.

Logged per step (:func:`tether.train.online.signals`): loss, total reward and each term, the
watched gold reward, KL to the reference, entropy, reward-model disagreement, completion
length, clip fraction, grad norm. The watchdog (:mod:`tether.train.watchdog`) can stop the run
or roll it back to its best point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_validator

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.recipes import output, recipe
from tether.core.registry import Kind
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.collate import PrefixBatch, TokenBatch, prompt_groups
from tether.data.sources import PromptData, load_prompts
from tether.engine.evaluation import EvalSchedule, TrainingEval
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.losses.rl import ADVANTAGES, aggregate_sum, clipped_surrogate, kl_estimate
from tether.models.generation import GenerationSettings, build_generator
from tether.models.loading import ModelConfig, load_model_and_tokenizer, save_model
from tether.models.logprobs import completion_logps, inner_model, prefix_logps, prefix_sharing_supported
from tether.scoring.rewards import Rewards, RewardTerm
from tether.train import online
from tether.train.watchdog import WatchConfig


class GRPOLoss(Config):
    """Advantages, clipping and the KL penalty."""

    advantage: Annotated[Config, Kind(ADVANTAGES, default="grpo")] = Field(
        default_factory=lambda: ADVANTAGES.get("grpo").config(),
        description="how rewards become advantages within a prompt's group: grpo (scale: group, batch, none), "
        "rloo, reinforce++, reinforce++-baseline, ... (a name, or {kind: NAME, knob: value})")
    beta: float = Field(0.04, ge=0, description="weight of the k3 KL penalty to the reference")
    clip_low: float = Field(0.2, gt=0, description="PPO clip ε")
    clip_high: float | None = Field(None, gt=0, description="asymmetric upper clip (DAPO); default: clip_low")
    aggregation: Literal["token-mean", "sequence-mean", "constant"] = Field(
        "token-mean", description="token-mean (DAPO), sequence-mean (original GRPO), constant (Dr. GRPO)")


class GRPOConfig(Config):
    """``tether train grpo`` (and ``tether train rloo``: the same recipe with RLOO advantages)."""

    model: ModelConfig
    data: PromptData
    rewards: list[RewardTerm] = Field(description="reward terms ({kind: ..., ...}), summed with their weights")
    loss: GRPOLoss = GRPOLoss()
    group_size: int = Field(4, ge=2, description="completions sampled per prompt")
    iterations: int = Field(1, ge=1, description="updates per rollout (TRL's num_iterations); above 1 the "
                            "clipped ratio matters and the sampling-time log-probs are recomputed")
    generation: GenerationSettings = Field(default_factory=lambda: GenerationSettings(max_new_tokens=48))
    watch: WatchConfig = WatchConfig()
    evaluation: TrainingEval = Field(default_factory=TrainingEval,
                                     description="evaluation harness every N steps, early stopping")
    optim: OptimConfig = OptimConfig(lr=1e-5)
    loop: LoopConfig = Field(default_factory=lambda: LoopConfig(batch_size=32),
                             description="batch_size counts completions: prompts per step x group_size")
    out: str = Field("runs/grpo", description="run directory")
    seed: int = Field(0, description="seeds prompt order, sampling and tiny: inits")

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        if self.loop.checkpoint_every % self.iterations:
            raise ValueError("loop.checkpoint_every must be a multiple of iterations: checkpoints are taken "
                             "between rollouts")
        return self


@recipe("rloo", group="train", config=GRPOConfig, preset=("loss.advantage=rloo",),
        summary="RLOO (Ahmadian et al. 2024): the GRPO recipe with leave-one-out advantages (loss.advantage=rloo).",
        example="tether train rloo --config grpo/world-rlvr --out runs/rloo-rlvr",
        consumes={"model": "model.path", "prompts": "data.train"}, produces={"model": output("model")})
@recipe("grpo", group="train", config=GRPOConfig,
        summary="Online RL with group-relative advantages (GRPO, RLOO, REINFORCE++ or any registered estimator) "
        "and a k3 KL to the reference.",
        example="tether train grpo --config grpo/world-rlvr --set loop.max_steps=50 --out runs/grpo",
        consumes={"model": "model.path", "prompts": "data.train"}, produces={"model": output("model")})
def run(cfg: GRPOConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, write the run directory and the model (``OUT/model``); return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train grpo", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd, resume))


def _train(cfg: GRPOConfig, run_dir: RunDir, resume: bool) -> dict[str, Any]:
    if cfg.loop.batch_size % cfg.group_size:
        raise DataError(f"loop.batch_size={cfg.loop.batch_size} is not a multiple of group_size={cfg.group_size}")
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    prompts = load_prompts(cfg.data, cfg.seed, run_dir)
    reference = online.RolloutReference(model, adapters_off=cfg.model.lora is not None)
    rewards = Rewards(cfg.rewards, max_tokens=cfg.generation.max_new_tokens)
    gold = online.watched_gold(cfg.watch, prompts, cfg.generation.max_new_tokens)

    loop = TrainLoop(model, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)
    policy = inner_model(loop.model)
    watch = loop.track(online.Watch(cfg.watch, policy, rewards))
    schedule = loop.track(EvalSchedule(cfg.evaluation, tokenizer, run_dir))
    if resume:
        loop.resume()
    acc, pad_id = loop.accelerator, tokenizer.pad_token_id
    if (cfg.loop.batch_size // cfg.group_size) % acc.num_processes:
        raise DataError(f"the {cfg.loop.batch_size // cfg.group_size} prompts per step must split evenly over "
                        f"{acc.num_processes} processes")
    reference.to(acc.device)
    generator = build_generator(policy, tokenizer, cfg.generation, path=cfg.model.path, seed=cfg.seed)
    shared_prompts = cfg.data.share_prompts and prefix_sharing_supported(policy)

    stop = watch.stopped or schedule.stopped_at is not None  # a resumed run that had already stopped
    while loop.step_count < cfg.loop.max_steps and not stop:
        step = loop.step_count
        chosen = online.step_prompts(prompts, cfg.loop.batch_size // cfg.group_size, seed=cfg.seed, step=step)
        first, mine = online.process_share(chosen, acc.process_index, acc.num_processes)
        local, timing = online.roll_out(
            policy, generator, cfg.generation, mine, first_slot=first, samples_per_prompt=cfg.group_size,
            seed=cfg.seed, step=step, rewards=rewards, gold=gold, reference=reference, device=acc.device,
            pad_id=pad_id, length_groups=cfg.data.length_groups, recompute_old=cfg.iterations > 1,
            share_prompts=cfg.data.share_prompts)
        samples = online.gather(acc, local)
        advantages = _advantages(cfg, torch.tensor([s.reward for s in samples]))
        for s, a in zip(samples, advantages.tolist(), strict=True):
            s.extra["advantages"] = torch.full((len(s.completion_ids),), a)
        _, share = online.process_share(samples, acc.process_index, acc.num_processes)
        lengths = [len(s.prompt_ids) + len(s.completion_ids) for s in share]
        if shared_prompts and all(s.prompt_ids for s in share):  # a prompt's forward and backward run once
            groups = prompt_groups([s.prompt_ids for s in share], lengths, cfg.data.length_groups, len(share))
            batches = [_Batch(*online.collate_prefix([share[i] for i in g], pad_id, acc.device, ["advantages"]))
                       for g in groups]
        else:
            groups = online.by_length(lengths, cfg.data.length_groups, len(share))
            batches = [_Batch(*online.collate([share[i] for i in g], pad_id, acc.device, ["advantages"]))
                       for g in groups]
        sig = online.signals(samples)
        for _ in range(cfg.iterations):
            result = loop.step(batches, lambda b: _loss_sum(cfg, loop.model, b), count=lambda b: _count(cfg, b),
                               num_tokens=lambda b: b.rows.num_tokens())
            tokens = sum(int(b.mask.sum()) for b in batches)
            clipped = sum(b.clip_fraction * int(b.mask.sum()) for b in batches) / max(tokens, 1)
            harness, stop = schedule.after_step(loop.model, loop.step_count)
            loop.log(result, sig | timing | {"clip_fraction": round(clipped, 6)} | harness)
            if loop.step_count >= cfg.loop.max_steps or stop:
                break
        stop = stop or watch.observe(loop.step_count, sig)
        loop.maybe_checkpoint()  # after the watchdog has seen this rollout: its state is in the checkpoint

    summary: dict[str, Any] = {"steps": loop.step_count, "tokens_seen": loop.tokens_seen, "watch": watch.summary()}
    summary |= schedule.finish(loop.model, loop.step_count)
    last = loop.last_metrics()
    if last:
        summary |= {k: v for k, v in last.items() if k.startswith("reward") or k in ("kl", "gold_reward")}
    if loop.is_main:
        model_dir = save_model(loop.unwrapped(), tokenizer, Path(cfg.out) / "model")  # type: ignore[arg-type]
        run_dir.add_output("model", model_dir)
    loop.close()
    return summary


class _Batch:
    """A length group of one process's share of a rollout, collated, and the clip fraction its loss saw."""

    def __init__(self, rows: TokenBatch | PrefixBatch, mask: torch.Tensor, fields: dict[str, torch.Tensor]) -> None:
        self.rows, self.mask, self.fields = rows, mask, fields
        self.clip_fraction = 0.0


def _advantages(cfg: GRPOConfig, reward: torch.Tensor) -> torch.Tensor:
    estimator = cfg.loss.advantage
    knobs = {k: v for k, v in estimator.model_dump().items() if k != "kind"}
    return ADVANTAGES.get(estimator.kind).fn(reward, cfg.group_size, **knobs)  # type: ignore[attr-defined]


def _count(cfg: GRPOConfig, batch: _Batch) -> int:
    """What the loss sum is divided by, over the global batch (the loop reduces it across processes)."""
    return int(batch.mask.sum()) if cfg.loss.aggregation == "token-mean" else int(batch.mask.shape[0])


def _loss_sum(cfg: GRPOConfig, policy: Any, batch: _Batch) -> torch.Tensor:
    """Summed per-token (or per-sequence) loss: clipped surrogate plus β · k3 KL.

    With one update per rollout the "old" log-probs are the current ones, detached (the ratio is 1
    and the gradient is the policy gradient), so no separate forward computes them (as TRL does).
    """
    rows, mask, fields = batch.rows, batch.mask, batch.fields
    if isinstance(rows, PrefixBatch):
        logps = prefix_logps(policy, rows)
    else:
        logps = completion_logps(policy, rows.input_ids, rows.attention_mask, rows.loss_mask).token_logps
    old = fields["old_logps"] if cfg.iterations > 1 else logps.detach()
    per_token, clipped = clipped_surrogate(logps, old, fields["advantages"], clip_low=cfg.loss.clip_low,
                                           clip_high=cfg.loss.clip_high)
    batch.clip_fraction = float((clipped & mask).sum() / mask.sum().clamp(min=1))
    if cfg.loss.beta > 0:
        per_token = per_token + cfg.loss.beta * kl_estimate(logps, fields["ref_logps"], "k3")
    return aggregate_sum(per_token, mask, cfg.loss.aggregation, cfg.generation.max_new_tokens)
