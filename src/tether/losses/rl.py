"""Online RL maths: advantages, KL estimators, policy and value losses. Pure functions on tensors.

Shapes: ``(B, T)`` per-token tensors over the *completion* tokens with a ``mask`` true on real
tokens; ``(N,)`` per-sequence rewards. Formulas and papers:

- ``gae``: δ_t = r_t + γ V_{t+1} − V_t;  A_t = Σ_l (γλ)^l δ_{t+l};  R_t = A_t + V_t (V after the last
  token = 0) (Schulman et al. 2016).
- ``kl_estimate`` k1 / k2 / k3: log ρ;  ½ (log ρ)²;  ρ⁻¹ − 1 + log ρ, with log ρ = log π − log π_ref
  (k3 ≥ 0, unbiased) (Schulman 2020, "Approximating KL divergence").
- ``group_advantages``: (r − mean_group) / (std_group + ε) (GRPO); std of the batch; or no scaling
  (Dr. GRPO) (Shao et al. 2024; Liu et al. 2025).
- ``rloo_advantages``: r_i − mean of the other k − 1 rewards of its group (Ahmadian et al. 2024).
- ``reinforce_pp_advantages``: (r − mean_batch) / std_batch (optionally minus the group mean first:
  "with baseline") (Hu 2025, REINFORCE++).
- ``policy_loss``: −min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A), ρ = exp(log π − log π_old) (PPO,
  Schulman et al. 2017; DAPO's asymmetric clip).
- ``value_loss``: ½ max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²) (PPO as in OpenAI baselines).
- ``AdaptiveKL``: β ← β (1 + clip(KL/target − 1, ±0.2) · n / horizon) (Ziegler et al. 2019).

The advantage estimators are registered in :data:`ADVANTAGES` (``loss.advantage`` in a GRPO config; a
new one is one registered function and its test).

Loss aggregation (where libraries differ): ``token-mean`` divides the summed token losses by the
number of tokens in the batch (DAPO; TRL's default ``dapo``); ``sequence-mean`` averages each
sequence's token mean (the original GRPO, which weighs a long reply's tokens less);
``constant`` divides by batch size x a fixed maximum length (Dr. GRPO), removing the length bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from tether.core.config import Config, signature_config
from tether.core.registry import Registry

Aggregation = Literal["token-mean", "sequence-mean", "constant"]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over true ``mask`` positions."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``x`` standardised over the masked positions (population variance); zero where masked out."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


class GAEResult(NamedTuple):
    """Per-token advantages and value targets."""

    advantages: Tensor  # (B, T)
    returns: Tensor     # (B, T)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0, lam: float = 0.95) -> GAEResult:
    """Generalised advantage estimation over each row's masked tokens.  (B, T) x 3 -> GAEResult

    Masked-out positions (padding after the completion) are skipped: the value after a row's
    last real token is 0 (the episode ends there). Example (hand-worked): one row, rewards
    (0, 1), values (0.5, 0.5), γ = λ = 1: δ = (0 + 0.5 − 0.5, 1 + 0 − 0.5) = (0, 0.5),
    A = (0.5, 0.5), R = (1, 1).
    """
    mask_f = mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = mask_f[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        current = delta + gamma * lam * next_advantage
        # Padding keeps the running values of the next real token untouched.
        advantages[:, t] = current * m
        next_value = torch.where(m.bool(), values[:, t], next_value)
        next_advantage = torch.where(m.bool(), current, next_advantage)
    return GAEResult(advantages, (advantages + values) * mask_f)


def kl_estimate(logps: Tensor, ref_logps: Tensor, kind: Literal["k1", "k2", "k3"] = "k3") -> Tensor:
    """Per-token estimate of KL(π || π_ref) from samples of π.  (B, T), (B, T) -> (B, T)

    Example (hand-worked): log π = −1, log π_ref = −2 (log ρ = 1): k1 = 1, k2 = 0.5,
    k3 = e^{−1} − 1 + 1 = 0.3679.
    """
    log_ratio = logps - ref_logps
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    return torch.exp(-log_ratio) - 1 + log_ratio


@dataclass(frozen=True)
class AdvantageKind:
    """A registered advantage estimator, ``fn(rewards, group_size, **knobs) -> advantages``, and its knobs'
    config class."""

    fn: Callable[..., Tensor]
    config: type[Config]


ADVANTAGES: Registry[AdvantageKind] = Registry(
    "advantage estimator", description="rewards of a step's groups -> advantages; knobs from the signature")


def advantage_estimator(name: str) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register an estimator under ``name`` (``loss.advantage`` in a GRPO config)."""

    def register(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        ADVANTAGES.register(name, module=fn.__module__)(AdvantageKind(fn, signature_config(fn, key="kind", name=name)))
        return fn

    return register


@advantage_estimator("grpo")
def group_advantages(rewards: Tensor, group_size: int, *, scale: Literal["group", "batch", "none"] = "group",
                     eps: float = 1e-4) -> Tensor:
    """GRPO advantages: each reward minus its group's mean, scaled by a std.  (N,) -> (N,)

    Rows ``[i * group_size, (i + 1) * group_size)`` are the samples of prompt i. The std is the
    sample std (``correction=1``), as TRL computes it. Example: a group (1, 0, 0, 1): mean 0.5,
    std 0.5774: advantages (0.866, −0.866, −0.866, 0.866) with scale 'group'.

    Args:
        scale: divide by the group's std (GRPO), the batch's, or nothing (Dr. GRPO)
        eps: added to the std
    """
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(-1, keepdim=True)).view(-1)
    if scale == "group":
        std = grouped.std(-1, keepdim=True).expand_as(grouped).reshape(-1)
        return centred / (std + eps)
    if scale == "batch":
        return centred / (rewards.std() + eps)
    return centred


@advantage_estimator("rloo")
def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO: each reward minus the mean of the other samples of its prompt.  (N,) -> (N,)

    Example: a group (1, 0, 0, 1) gives (1 − 1/3, 0 − 2/3, 0 − 2/3, 1 − 1/3).
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    grouped = rewards.view(-1, group_size)
    others = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).view(-1)


@advantage_estimator("reinforce++")
def reinforce_pp_advantages(rewards: Tensor, group_size: int = 1, *, baseline: bool = False,
                            eps: float = 1e-8) -> Tensor:
    """REINFORCE++: rewards normalised over the whole batch (optionally after subtracting the group mean).
    (N,) -> (N,)

    Example: rewards (1, 0, 0, 1) without baseline: mean 0.5, population std 0.5: (1, −1, −1, 1).

    Args:
        baseline: subtract each group's mean first (REINFORCE++ "with baseline")
        eps: added to the std
    """
    centred = rewards
    if baseline:
        grouped = rewards.view(-1, group_size)
        centred = (grouped - grouped.mean(-1, keepdim=True)).view(-1)
    return (centred - centred.mean()) / (centred.std(correction=0) + eps)


@advantage_estimator("reinforce++-baseline")
def reinforce_pp_baseline_advantages(rewards: Tensor, group_size: int, *, eps: float = 1e-8) -> Tensor:
    """REINFORCE++ with the group-mean baseline (:func:`reinforce_pp_advantages` with ``baseline=True``).

    Args:
        eps: added to the std
    """
    return reinforce_pp_advantages(rewards, group_size, baseline=True, eps=eps)


class PolicyLoss(NamedTuple):
    """The aggregated clipped surrogate and what to log."""

    loss: Tensor
    clip_fraction: Tensor  # share of tokens where the clipped term was the smaller
    approx_kl: Tensor      # mean of ½ (log π − log π_old)² over tokens


def aggregate(per_token: Tensor, mask: Tensor, how: Aggregation, max_tokens: int | None = None) -> Tensor:
    """Reduce per-token losses (B, T) to a scalar (see the module docstring)."""
    mask_f = mask.to(per_token.dtype)
    if how == "token-mean":
        return (per_token * mask_f).sum() / mask_f.sum().clamp(min=1)
    if how == "sequence-mean":
        return ((per_token * mask_f).sum(-1) / mask_f.sum(-1).clamp(min=1)).mean()
    if max_tokens is None:
        raise ValueError("the 'constant' aggregation (Dr. GRPO) needs max_tokens")
    return (per_token * mask_f).sum() / (per_token.shape[0] * max_tokens)


def aggregate_sum(per_token: Tensor, mask: Tensor, how: Aggregation, max_tokens: int | None = None) -> Tensor:
    """:func:`aggregate`'s numerator: the sum a distributed loop divides by the *global* count of
    tokens (``token-mean``) or sequences (the others), so the update does not depend on the split."""
    per_token = per_token * mask.to(per_token.dtype)
    if how == "token-mean":
        return per_token.sum()
    if how == "sequence-mean":
        return (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).sum()
    if max_tokens is None:
        raise ValueError("the 'constant' aggregation (Dr. GRPO) needs max_tokens")
    return per_token.sum() / max_tokens


def policy_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *, clip_low: float = 0.2,
                clip_high: float | None = None, aggregation: Aggregation = "token-mean",
                max_tokens: int | None = None) -> PolicyLoss:
    """PPO's clipped surrogate.  (B, T) log-probs, (B, T) or (B,) advantages -> PolicyLoss

    Example (hand-worked): log ρ = ln 1.5, A = 1, ε = 0.2: −min(1.5, 1.2) = −1.2 (clipped);
    with A = −1: −min(−1.5, −1.2) = 1.5 (not clipped: the pessimistic term).
    """
    per_token, clipped = clipped_surrogate(logps, old_logps, advantages, clip_low=clip_low, clip_high=clip_high)
    clip_fraction = masked_mean(clipped.to(logps.dtype), mask)
    approx_kl = masked_mean(0.5 * (logps - old_logps) ** 2, mask)
    return PolicyLoss(aggregate(per_token, mask, aggregation, max_tokens), clip_fraction.detach(), approx_kl.detach())


def clipped_surrogate(logps: Tensor, old_logps: Tensor, advantages: Tensor, *, clip_low: float = 0.2,
                      clip_high: float | None = None) -> tuple[Tensor, Tensor]:
    """Per-token PPO loss and where the clipped term was the one taken.  -> (B, T), (B, T) bool"""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logps)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + (clip_high if clip_high is not None else clip_low))
    unclipped_term, clipped_term = ratio * advantages, clipped * advantages
    return -torch.minimum(unclipped_term, clipped_term), (clipped_term < unclipped_term).detach()


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip: float = 0.2) -> Tensor:
    """PPO's clipped value loss, token mean.  (B, T) x 3 -> ()"""
    return masked_mean(value_loss_per_token(values, old_values, returns, clip=clip), mask)


def value_loss_per_token(values: Tensor, old_values: Tensor, returns: Tensor, *, clip: float = 0.2) -> Tensor:
    """½ max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²) per token.  (B, T) x 3 -> (B, T)

    Example (hand-worked): V = 1, V_old = 0, R = 0, ε = 0.2: max(1, 0.04) / 2 = 0.5.
    """
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


class AdaptiveKL:
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the measured KL towards ``target``."""

    def __init__(self, init: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init, target, horizon

    def state_dict(self) -> dict[str, float]:
        """The current coefficient (checkpointed with the run)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Put back a :meth:`state_dict`."""
        self.value = float(state["value"])

    def update(self, current_kl: float, steps: int) -> float:
        """Adjust after ``steps`` samples (or steps) at measured ``current_kl``; returns the new coefficient.

        Example: β = 0.1, target 6, KL 12, 10 steps of a horizon of 100: error clip(1, ±0.2) = 0.2,
        β ← 0.1 · (1 + 0.2 · 0.1) = 0.102.
        """
        error = max(-0.2, min(0.2, current_kl / self.target - 1))
        self.value *= 1 + error * steps / self.horizon
        return self.value


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) in nats: log n − (n − 1) / n (Stiennon et al. 2020; Gao et al. 2022 use it as the
    x-axis of best-of-n). Example: n = 4: 1.3863 − 0.75 = 0.6363."""
    return math.log(n) - (n - 1) / n


def best_of_n_expectation(selector: Tensor, value: Tensor, n: int) -> Tensor:
    """Unbiased estimate of E[value of the sample best-of-n picks by ``selector``] from N ≥ n samples per prompt.

    (P, N), (P, N) -> (P,). Sort each row by ``selector``; the i-th smallest (1-based) is the
    pick of a random n-subset exactly when it is in the subset with the n − 1 others below it:
    probability C(i − 1, n − 1) / C(N, n). Averages over all C(N, n) subsets without
    enumerating them (as Gao et al. 2022 estimate best-of-n). Ties in ``selector`` are broken by
    position. Example: values (0, 1, 2) ordered by selector, n = 2: weights (0, 1, 2) / 3 -> 5/3.
    """
    count = selector.shape[-1]
    if not 1 <= n <= count:
        raise ValueError(f"best-of-{n} needs at least {n} samples per prompt, got {count}")
    order = selector.argsort(dim=-1, stable=True)
    ranked = value.gather(-1, order).double()
    weights = torch.tensor([math.comb(i, n - 1) for i in range(count)], dtype=torch.float64) / math.comb(count, n)
    return (ranked * weights).sum(-1).to(value.dtype)
