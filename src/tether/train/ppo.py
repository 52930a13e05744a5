"""PPO for language models (Schulman et al. 2017; as RLHF uses it: Ziegler et al. 2019, Ouyang et al. 2022).

Each rollout: draw ``loop.batch_size / samples_per_prompt`` prompts, sample completions
(per-completion seeds), score them with the configured rewards, and record the policy's,
the reference's and the value model's per-token estimates. Then:

- per-token reward: ``-kl_coef * (log π_old − log π_ref)`` at every completion token (k1, the
  KL penalty in the reward) plus the sequence reward on the last token; or, with
  ``loss.kl: loss``, only the sequence reward, and ``kl_coef * k3`` in the loss instead;
- GAE (γ, λ) over the completion tokens gives advantages and value targets; advantages are
  whitened over the rollout;
- ``epochs`` passes over the rollout in ``minibatches`` shuffled minibatches, one optimizer
  step each, on ``clipped policy loss + value.coef * clipped value loss``;
- the adaptive controller (``loss.kl_target``) moves ``kl_coef`` towards the target KL.

The value model is a separate scalar-head model (by default started from the policy's
weights with a new head) or a linear head on the policy's own final hidden states
(``value.mode: shared``). Both train with the policy under one optimizer, in one module, so
DDP / FSDP see one model. ``loop.max_steps`` counts optimizer steps:
``epochs * minibatches`` per rollout.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from tether.core.config import Config
from tether.core.errors import DataError, UserError
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.sources import PromptData, load_prompts
from tether.engine.evaluation import EvalSchedule, TrainingEval
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.losses.rl import (
    AdaptiveKL,
    aggregate_sum,
    clipped_surrogate,
    gae,
    kl_estimate,
    value_loss_per_token,
    whiten,
)
from tether.models.generation import GenerationSettings, build_generator
from tether.models.loading import ModelConfig, load_model_and_tokenizer, save_model
from tether.models.logprobs import hidden_and_head, inner_model, logps_from_hidden, run_inside
from tether.scoring.rewards import Rewards, RewardTerm
from tether.train import online
from tether.train.watchdog import WatchConfig


class ValueConfig(Config):
    """The value function."""

    mode: Literal["separate", "shared"] = Field("separate", description="separate: its own scalar-head model; "
                                                "shared: a linear head on the policy's hidden states")
    path: str | None = Field(None, description="separate: the model to start from (default: the policy's path, "
                             "with a new head; or a reward model directory)")
    coef: float = Field(0.1, ge=0, description="weight of the value loss")
    clip: float = Field(0.2, gt=0, description="clip range of the value update")


class PPOLoss(Config):
    """Clipping, the KL term, GAE and the update schedule."""

    clip_low: float = Field(0.2, gt=0, description="PPO clip ε")
    clip_high: float | None = Field(None, gt=0, description="asymmetric upper clip; default: clip_low")
    kl: Literal["reward", "loss"] = Field("reward", description="reward: per-token k1 penalty in the reward "
                                          "(InstructGPT); loss: k3 in the loss (as GRPO)")
    kl_coef: float = Field(0.05, ge=0, description="KL coefficient (the start value when adaptive)")
    kl_target: float | None = Field(None, gt=0, description="adaptive KL: target KL per completion (nats)")
    kl_horizon: int = Field(10_000, ge=1, description="adaptive KL: samples over which β moves by at most 20%")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ")
    whiten_advantages: bool = Field(True, description="standardise advantages over the rollout")
    epochs: int = Field(4, ge=1, description="passes over each rollout")
    minibatches: int = Field(4, ge=1, description="optimizer steps per pass")
    aggregation: Literal["token-mean", "sequence-mean"] = Field("token-mean", description="policy and value loss "
                                                                "reduction (see tether.losses.rl)")


class PPOConfig(Config):
    """``tether train ppo``."""

    model: ModelConfig
    value: ValueConfig = ValueConfig()
    data: PromptData
    rewards: list[RewardTerm] = Field(description="reward terms ({kind: ..., ...}), summed with their weights")
    loss: PPOLoss = PPOLoss()
    samples_per_prompt: int = Field(1, ge=1, description="completions sampled per prompt")
    generation: GenerationSettings = Field(default_factory=lambda: GenerationSettings(max_new_tokens=48))
    watch: WatchConfig = WatchConfig()
    evaluation: TrainingEval = Field(default_factory=TrainingEval,
                                     description="evaluation harness every N steps, early stopping")
    optim: OptimConfig = OptimConfig(lr=1e-5)
    loop: LoopConfig = Field(default_factory=lambda: LoopConfig(batch_size=32),
                             description="batch_size: completions per rollout; max_steps: optimizer steps")
    out: str = Field("runs/ppo", description="run directory")
    seed: int = Field(0, description="seeds prompt order, sampling, minibatches and tiny: inits")

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        per_rollout = self.loss.epochs * self.loss.minibatches
        if self.loop.checkpoint_every % per_rollout:
            raise ValueError(f"loop.checkpoint_every must be a multiple of loss.epochs x loss.minibatches "
                             f"({per_rollout}): checkpoints are taken between rollouts")
        if self.loop.batch_size % (self.samples_per_prompt * self.loss.minibatches):
            raise ValueError("loop.batch_size must be a multiple of samples_per_prompt and of loss.minibatches")
        return self


class PolicyValue(torch.nn.Module):
    """The policy and its value function as one module (one optimizer, one distributed wrapper)."""

    def __init__(self, policy: Any, value_model: Any | None) -> None:
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.value_head = None
        if value_model is None:
            self.value_head = torch.nn.Linear(policy.config.hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)


def completion_values(pv: PolicyValue, rows: Any) -> torch.Tensor:
    """Per-token values alone (no log-probs where the value model is separate).  -> (B, T)"""
    if pv.value_head is not None:
        return policy_and_values(pv, rows=rows)[1]
    from tether.models.reward import token_values as head_values

    return _shift(head_values(pv.value_model, rows.input_ids, rows.attention_mask))


def _shift(per_position: torch.Tensor) -> torch.Tensor:
    values = torch.zeros_like(per_position)
    values[:, 1:] = per_position[:, :-1]
    return values


def policy_and_values(pv: PolicyValue, *, rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs and values of ``rows``' completion tokens.  -> (B, T), (B, T)

    ``values[:, t]`` estimates the return from the state token ``t`` was sampled in (after
    tokens ``< t``): the value model's output at position ``t - 1``.
    """
    from tether.models.reward import token_values

    hidden, head, softcap = hidden_and_head(pv.policy, rows.input_ids, rows.attention_mask)
    logps = logps_from_hidden(hidden, head, softcap, rows.input_ids, rows.attention_mask, rows.loss_mask).token_logps
    if pv.value_head is not None:
        per_position = pv.value_head(hidden).squeeze(-1).float()
    else:
        per_position = token_values(pv.value_model, rows.input_ids, rows.attention_mask)
    return logps, _shift(per_position)


@recipe("ppo", group="train", config=PPOConfig,
        summary="PPO: value model (separate or shared head), GAE, KL in reward or loss, adaptive KL, watchdog.",
        example="tether train ppo --config ppo/world-gold-rm --out runs/ppo",
        consumes={"model": "model.path", "prompts": "data.train"}, produces={"model": output("model")})
def run(cfg: PPOConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, write the run directory, the policy (``OUT/model``) and the value model; return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train ppo", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd, resume))


def _build(cfg: PPOConfig) -> tuple[PolicyValue, Any]:
    policy, tokenizer = load_model_and_tokenizer(cfg.model)
    if cfg.value.mode == "shared":
        if getattr(policy.config, "hidden_size", None) is None:
            raise UserError("value.mode=shared needs a model config with hidden_size; use value.mode=separate")
        return PolicyValue(policy, None), tokenizer
    from tether.models.reward import load_reward_model

    value_cfg = cfg.model.model_copy(update={"path": cfg.value.path or cfg.model.path})
    return PolicyValue(policy, load_reward_model(value_cfg, tokenizer)), tokenizer


def _train(cfg: PPOConfig, run_dir: RunDir, resume: bool) -> dict[str, Any]:
    pv, tokenizer = _build(cfg)
    prompts = load_prompts(cfg.data, cfg.seed, run_dir)
    reference = online.RolloutReference(pv.policy, adapters_off=cfg.model.lora is not None)
    rewards = Rewards(cfg.rewards, max_tokens=cfg.generation.max_new_tokens)
    gold = online.watched_gold(cfg.watch, prompts, cfg.generation.max_new_tokens)
    kl_ctl = AdaptiveKL(cfg.loss.kl_coef, cfg.loss.kl_target, cfg.loss.kl_horizon) if cfg.loss.kl_target else None

    loop = TrainLoop(pv, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)
    model: PolicyValue = inner_model(loop.model)
    watch = loop.track(online.Watch(cfg.watch, model, rewards))
    schedule = loop.track(EvalSchedule(cfg.evaluation, tokenizer, run_dir))
    if kl_ctl is not None:
        loop.track(kl_ctl)
    if resume:
        loop.resume()
    acc, pad_id = loop.accelerator, tokenizer.pad_token_id
    per_step_prompts = cfg.loop.batch_size // cfg.samples_per_prompt
    if per_step_prompts % acc.num_processes or (cfg.loop.batch_size // cfg.loss.minibatches) % acc.num_processes:
        raise DataError(f"prompts per rollout ({per_step_prompts}) and completions per minibatch must split evenly "
                        f"over {acc.num_processes} processes")
    reference.to(acc.device)
    generator = build_generator(model.policy, tokenizer, cfg.generation, path=cfg.model.path, seed=cfg.seed)
    per_rollout = cfg.loss.epochs * cfg.loss.minibatches
    kl_coef = kl_ctl.value if kl_ctl is not None else cfg.loss.kl_coef  # a resumed run's, if adapted

    stop = watch.stopped or schedule.stopped_at is not None  # a resumed run that had already stopped
    while loop.step_count < cfg.loop.max_steps and not stop:
        rollout = loop.step_count // per_rollout
        chosen = online.step_prompts(prompts, per_step_prompts, seed=cfg.seed, step=rollout)
        first, mine = online.process_share(chosen, acc.process_index, acc.num_processes)
        local, timing = online.roll_out(model.policy, generator, cfg.generation, mine, first_slot=first,
                                samples_per_prompt=cfg.samples_per_prompt, seed=cfg.seed, step=rollout,
                                rewards=rewards, gold=gold, reference=reference, device=acc.device, pad_id=pad_id,
                                length_groups=cfg.data.length_groups)
        _old_values(model, local, pad_id, acc.device, cfg.generation.batch_size, cfg.data.length_groups)
        samples = online.gather(acc, local)
        _advantages(cfg, samples, kl_coef)
        sig = online.signals(samples) | timing | {"rollout": rollout, "kl_coef": round(kl_coef, 6)}
        for epoch in range(cfg.loss.epochs):
            order = list(range(len(samples)))
            random.Random(f"ppo:{cfg.seed}:{rollout}:{epoch}").shuffle(order)
            size = len(samples) // cfg.loss.minibatches
            for m in range(cfg.loss.minibatches):
                chunk = [samples[i] for i in order[m * size:(m + 1) * size]]
                _, share = online.process_share(chunk, acc.process_index, acc.num_processes)
                groups = online.by_length([len(s.prompt_ids) + len(s.completion_ids) for s in share],
                                          cfg.data.length_groups, len(share))
                batches = [_Batch(*online.collate([share[i] for i in g], pad_id, acc.device,
                                                  ["advantages", "returns", "values"])) for g in groups]
                result = loop.step(batches, lambda b, beta=kl_coef: _loss_sum(cfg, loop.model, b, beta),  # type: ignore[misc]
                                   count=lambda b: _count(cfg,
                                                          b), num_tokens=lambda b: int(b.rows.attention_mask.sum()))
                harness, stop = schedule.after_step(model.policy, loop.step_count)
                loop.log(result, sig | _token_weighted(batches) | harness)
                if loop.step_count >= cfg.loop.max_steps or stop:
                    break
            if loop.step_count >= cfg.loop.max_steps or stop:
                break
        if kl_ctl is not None and "kl" in sig:
            kl_coef = kl_ctl.update(sig["kl"], len(samples))
        stop = stop or watch.observe(loop.step_count, sig)
        if loop.step_count % per_rollout == 0:
            loop.maybe_checkpoint()  # after the watchdog has seen this rollout: its state is in the checkpoint

    summary: dict[str, Any] = {"steps": loop.step_count, "rollouts": -(-loop.step_count // per_rollout),
                               "tokens_seen": loop.tokens_seen, "watch": watch.summary()}
    summary |= schedule.finish(model.policy, loop.step_count)
    last = loop.last_metrics()
    if last:
        summary |= {k: v for k, v in last.items() if k.startswith("reward") or k in ("kl", "gold_reward")}
    if loop.is_main:
        unwrapped: PolicyValue = loop.unwrapped()  # type: ignore[assignment]
        run_dir.add_output("model", save_model(unwrapped.policy, tokenizer, Path(cfg.out) / "model"))
        if unwrapped.value_model is not None:
            run_dir.add_output("value", save_model(unwrapped.value_model, tokenizer, Path(cfg.out) / "value"))
        else:
            from safetensors.torch import save_file

            assert unwrapped.value_head is not None
            head = Path(cfg.out) / "value_head.safetensors"
            save_file({k: v.contiguous() for k, v in unwrapped.value_head.state_dict().items()}, str(head))
            run_dir.add_output("value_head", head)
    loop.close()
    return summary


class _Batch:
    """One process's share of a minibatch, collated, and what its loss reports back."""

    def __init__(self, rows: Any, mask: torch.Tensor, fields: dict[str, torch.Tensor]) -> None:
        self.rows, self.mask, self.fields = rows, mask, fields
        self.stats: dict[str, float] = {}


def _token_weighted(batches: list[_Batch]) -> dict[str, float]:
    """The micro-batches' loss statistics, averaged over their tokens."""
    tokens = [int(b.mask.sum()) for b in batches]
    total = max(sum(tokens), 1)
    return {k: round(sum(b.stats[k] * n for b, n in zip(batches, tokens, strict=True)) / total, 6)
            for k in batches[0].stats}


@torch.no_grad()
def _old_values(model: PolicyValue, samples: list[online.RolloutSample], pad_id: int, device: torch.device,
                batch_size: int, length_groups: int) -> None:
    """Each sample's per-token value estimates at sampling time (``extra['values']``)."""
    lengths = [len(s.prompt_ids) + len(s.completion_ids) for s in samples]
    for group in online.by_length(lengths, length_groups, batch_size):
        chunk = [samples[i] for i in group]
        rows, _, _ = online.collate(chunk, pad_id, device)
        values = completion_values(model, rows)
        for row, s in enumerate(chunk):
            p, c = len(s.prompt_ids), len(s.completion_ids)
            s.extra["values"] = values[row, p:p + c].cpu()


def _advantages(cfg: PPOConfig, samples: list[online.RolloutSample], kl_coef: float) -> None:
    """Per-token rewards, GAE and whitening over the whole rollout; sets ``extra['advantages' | 'returns']``."""
    width = max(len(s.completion_ids) for s in samples)
    n = len(samples)
    rewards, values = torch.zeros(n, width), torch.zeros(n, width)
    mask = torch.zeros(n, width, dtype=torch.bool)
    for i, s in enumerate(samples):
        c = len(s.completion_ids)
        mask[i, :c] = True
        values[i, :c] = s.extra["values"]
        if cfg.loss.kl == "reward" and s.ref_logps is not None:
            rewards[i, :c] = -kl_coef * kl_estimate(s.old_logps, s.ref_logps, "k1")
        rewards[i, c - 1] += s.reward
    advantages, returns = gae(rewards, values, mask, gamma=cfg.loss.gamma, lam=cfg.loss.lam)
    if cfg.loss.whiten_advantages:
        advantages = whiten(advantages, mask)
    for i, s in enumerate(samples):
        c = len(s.completion_ids)
        s.extra["advantages"], s.extra["returns"] = advantages[i, :c].clone(), returns[i, :c].clone()


def _count(cfg: PPOConfig, batch: _Batch) -> int:
    return int(batch.mask.sum()) if cfg.loss.aggregation == "token-mean" else int(batch.mask.shape[0])


def _loss_sum(cfg: PPOConfig, model: Any, batch: _Batch, kl_coef: float) -> torch.Tensor:
    """Summed clipped policy loss + value.coef x clipped value loss (+ k3 KL when ``loss.kl: loss``)."""
    rows, mask, f = batch.rows, batch.mask, batch.fields
    logps, values = run_inside(model, policy_and_values, rows=rows)
    policy, clipped = clipped_surrogate(logps, f["old_logps"], f["advantages"], clip_low=cfg.loss.clip_low,
                                        clip_high=cfg.loss.clip_high)
    if cfg.loss.kl == "loss" and "ref_logps" in f:
        policy = policy + kl_coef * kl_estimate(logps, f["ref_logps"], "k3")
    value = value_loss_per_token(values, f["values"], f["returns"], clip=cfg.value.clip)
    tokens = mask.sum().clamp(min=1)
    batch.stats = {
        "pg_loss": float((policy.detach() * mask).sum() / tokens),
        "vf_loss": float((value.detach() * mask).sum() / tokens),
        "clip_fraction": float((clipped & mask).sum() / tokens),
        "approx_kl": float((0.5 * (logps.detach() - f["old_logps"]) ** 2 * mask).sum() / tokens),
    }
    return aggregate_sum(policy + cfg.value.coef * value, mask, cfg.loss.aggregation)
