"""The DPO family: losses on sequence log-probabilities of preferred and dispreferred completions.

Convention (the one TRL uses): a *sequence log-prob* is the **sum** over completion tokens of
log p(token | prompt, previous tokens), with prompt tokens masked out
(``tether.models.logprobs.completion_logps(...).sequence_logps``). The *log-ratio* of a
completion is ``logp_policy - logp_reference``; the implicit reward is ``beta * log-ratio``.
With ``h = (logp_c - ref_c) - (logp_r - ref_r)`` (chosen minus rejected log-ratio):

- ``sigmoid``: -log σ(β h) (DPO, Rafailov et al. 2023); with label smoothing ε (cDPO; Mitchell 2023,
  "A note on DPO with noisy preferences"): -(1-ε) log σ(β h) - ε log σ(-β h).
- ``robust``: [-(1-ε) log σ(β h) + ε log σ(-β h)] / (1-2ε) (Chowdhury et al. 2024, "Provably robust DPO").
- ``hinge``: max(0, 1 - β h) (SLiC-HF, Zhao et al. 2023).
- ``ipo``: (h' - 1/(2β))², h' = h with each log-ratio divided by its completion length (TRL's
  normalisation, confirmed with the IPO authors; ``normalize=False`` gives the paper's raw h)
  (IPO, Azar et al. 2023).
- ``simpo`` (reference-free): -log σ(β (logp_c/|y_c| - logp_r/|y_r|) - γ) (SimPO, Meng et al. 2024).
- ``kto`` (unpaired): desirable: λ_D (1 - σ(β (r - z0))); undesirable: λ_U (1 - σ(β (z0 - r))), r the
  log-ratio, z0 the batch KL estimate (KTO, Ethayarajh et al. 2024).
- ``apo-zero``: (1 - σ(β r_c)) + σ(β r_r), r_c and r_r the chosen and rejected log-ratios: raises the
  chosen likelihood and lowers the rejected one outright, for chosen replies better than the model's own
  (APO-zero, D'Oosterlinck et al. 2024, eq. 7).

Every function returns per-pair (or per-example) losses, so the caller chooses the reduction
(the mean over the global batch, for gradient accumulation).

Each variant is one function registered in :data:`PREFERENCE_LOSSES` by :func:`preference_loss`; its
keyword-only parameters are its knobs (``loss: {variant: ipo, beta: 0.1, normalize: true}`` in a DPO
config), so a new variant is one registered function and its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - the universal alias
from torch import Tensor

from tether.core.config import Config, signature_config
from tether.core.registry import Registry


class PairLogps(NamedTuple):
    """Sequence log-probs of each pair's chosen and rejected completions, and the completions' lengths."""

    chosen: Tensor           # (B,) summed completion log-probs
    rejected: Tensor         # (B,)
    chosen_tokens: Tensor    # (B,) completion tokens
    rejected_tokens: Tensor  # (B,)


class PreferenceLoss(NamedTuple):
    """Per-pair losses and the implicit rewards (detached) used for logging margins and accuracies."""

    losses: Tensor            # (B,)
    chosen_rewards: Tensor    # (B,) β · log-ratio of the chosen completion (β · avg logp for SimPO)
    rejected_rewards: Tensor  # (B,)


@dataclass(frozen=True)
class PreferenceLossKind:
    """A registered member of the family: the loss, the config class of its knobs, and what it needs.

    ``unpaired``: the loss takes single labelled completions (KTO) instead of pairs, called as
    ``fn(policy_logps, reference_logps, desirable, reference_point, **knobs)``; a paired loss is called as
    ``fn(policy: PairLogps, reference: PairLogps | None, **knobs)``.
    """

    fn: Callable[..., PreferenceLoss]
    config: type[Config]
    needs_reference: bool = True
    unpaired: bool = False


PREFERENCE_LOSSES: Registry[PreferenceLossKind] = Registry(
    "preference loss", description="the DPO family: a loss function per variant, its knobs from its signature")


def preference_loss(name: str, *, needs_reference: bool = True,
                    unpaired: bool = False) -> Callable[[Callable[..., PreferenceLoss]], Callable[..., PreferenceLoss]]:
    """Register a member of the family under ``name`` (``loss.variant`` in a DPO config)."""

    def register(fn: Callable[..., PreferenceLoss]) -> Callable[..., PreferenceLoss]:
        kind = PreferenceLossKind(fn, signature_config(fn, key="variant", name=name), needs_reference, unpaired)
        PREFERENCE_LOSSES.register(name, module=fn.__module__)(kind)
        return fn

    return register


def _log_ratios(policy: PairLogps, reference: PairLogps) -> tuple[Tensor, Tensor]:
    """Chosen and rejected log-ratios, policy minus reference.  -> (B,) x 2"""
    return policy.chosen - reference.chosen, policy.rejected - reference.rejected


def _rewards(losses: Tensor, beta: float, chosen_ratio: Tensor, rejected_ratio: Tensor) -> PreferenceLoss:
    return PreferenceLoss(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


@preference_loss("sigmoid")
def sigmoid_loss(policy: PairLogps, reference: PairLogps, *, beta: float = 0.1,
                 label_smoothing: float = 0.0) -> PreferenceLoss:
    """DPO (Rafailov et al. 2023, eq. 7), or cDPO with label smoothing (Mitchell 2023).  -> (B,) losses

    Args:
        beta: inverse temperature of the implicit reward
        label_smoothing: assumed rate ε of flipped labels (cDPO)

    Example (hand-worked): log-ratios chosen +1, rejected -1 (h = 2), β = 0.5: -log σ(1) = 0.3133.
    """
    chosen, rejected = _log_ratios(policy, reference)
    h = chosen - rejected
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return _rewards(losses, beta, chosen, rejected)


@preference_loss("robust")
def robust_loss(policy: PairLogps, reference: PairLogps, *, beta: float = 0.1,
                label_smoothing: float = 0.0) -> PreferenceLoss:
    """Robust DPO (Chowdhury et al. 2024): the unbiased correction for label noise ε < 0.5.

    Args:
        beta: inverse temperature of the implicit reward
        label_smoothing: assumed rate ε of flipped labels, below 0.5

    Example (hand-worked): h = 2, β = 0.5, ε = 0.1: (0.9 · 0.3133 - 0.1 · 1.3133) / 0.8 = 0.1883.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    chosen, rejected = _log_ratios(policy, reference)
    h = chosen - rejected
    losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h)
              + label_smoothing * F.logsigmoid(-beta * h)) / (1 - 2 * label_smoothing)
    return _rewards(losses, beta, chosen, rejected)


@preference_loss("hinge")
def hinge_loss(policy: PairLogps, reference: PairLogps, *, beta: float = 0.1) -> PreferenceLoss:
    """SLiC-HF's hinge (Zhao et al. 2023): max(0, 1 - β h).

    Args:
        beta: inverse temperature of the implicit reward (1/β is the margin)

    Example (hand-worked): h = 2, β = 0.5: max(0, 1 - 1) = 0.
    """
    chosen, rejected = _log_ratios(policy, reference)
    return _rewards(torch.relu(1 - beta * (chosen - rejected)), beta, chosen, rejected)


@preference_loss("ipo")
def ipo_loss(policy: PairLogps, reference: PairLogps, *, beta: float = 0.1, normalize: bool = True) -> PreferenceLoss:
    """IPO (Azar et al. 2023): (h' - 1/(2β))².

    Args:
        beta: regularisation strength (the target margin is 1/(2β))
        normalize: divide each log-ratio by its completion length, as TRL does (false: the paper's raw h)

    Example (hand-worked): h = 2 unnormalised, β = 0.5: (2 - 1)² = 1.
    """
    chosen, rejected = _log_ratios(policy, reference)
    h = chosen - rejected
    if normalize:
        h = chosen / policy.chosen_tokens.clamp(min=1) - rejected / policy.rejected_tokens.clamp(min=1)
    return _rewards((h - 1 / (2 * beta)) ** 2, beta, chosen, rejected)


@preference_loss("simpo", needs_reference=False)
def simpo_loss(policy: PairLogps, reference: PairLogps | None = None, *, beta: float = 2.0, gamma: float = 0.5,
               label_smoothing: float = 0.0) -> PreferenceLoss:
    """SimPO (Meng et al. 2024): reference-free, length-normalised, with a target margin γ.

    Args:
        beta: scale of the length-normalised reward (SimPO uses ~2)
        gamma: target reward margin γ
        label_smoothing: assumed rate ε of flipped labels

    Example (hand-worked): sums -4 over 4 tokens and -9 over 3 tokens (averages -1 and -3),
    β = 2, γ = 1: -log σ(2 · 2 - 1) = -log σ(3) = 0.04859.
    """
    chosen_avg = policy.chosen / policy.chosen_tokens.clamp(min=1)
    rejected_avg = policy.rejected / policy.rejected_tokens.clamp(min=1)
    logits = beta * (chosen_avg - rejected_avg) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return PreferenceLoss(losses, (beta * chosen_avg).detach(), (beta * rejected_avg).detach())


@preference_loss("apo-zero")
def apo_zero_loss(policy: PairLogps, reference: PairLogps, *, beta: float = 0.1) -> PreferenceLoss:
    """Anchored preference optimisation, APO-zero (D'Oosterlinck et al. 2024, eq. 7): each completion is
    anchored to the reference on its own, the chosen pushed up and the rejected down.

    Args:
        beta: inverse temperature of the implicit reward

    Example (hand-worked): log-ratios chosen +1, rejected -1, β = 0.5:
    (1 - σ(0.5)) + σ(-0.5) = 0.37754 + 0.37754 = 0.75508; at the reference (both 0): 0.5 + 0.5 = 1.
    """
    chosen, rejected = _log_ratios(policy, reference)
    losses = (1 - torch.sigmoid(beta * chosen)) + torch.sigmoid(beta * rejected)
    return _rewards(losses, beta, chosen, rejected)


def kto_reference_point(policy_mismatched: Tensor, ref_mismatched: Tensor) -> Tensor:
    """KTO's z0: the batch-mean log-ratio on *mismatched* (prompt, completion) pairs, clamped at 0, detached.

    It estimates KL(policy || reference); mismatched pairs keep it from rewarding the very
    completions being trained on. Under DDP, average it across processes before use (TRL does).
    """
    return (policy_mismatched - ref_mismatched).mean().clamp(min=0).detach()


@preference_loss("kto", unpaired=True)
def kto_loss(policy: Tensor, ref: Tensor, desirable: Tensor, reference_point: Tensor | float, *, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> PreferenceLoss:
    """KTO (Ethayarajh et al. 2024) on unpaired examples.  (B,), (B,), (B,) bool, () -> PreferenceLoss
    (rewards split by label)

    Args:
        beta: inverse temperature of the implicit reward
        desirable_weight: λ_D, the weight of desirable examples
        undesirable_weight: λ_U, the weight of undesirable examples

    Example (hand-worked): a desirable example with log-ratio 2, z0 = 0, β = 0.5:
    1 - σ(1) = 0.2689; an undesirable one with log-ratio 2: 1 - σ(-1) = 0.7311.
    """
    ratio = policy - ref
    desirable = desirable.bool()
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (ratio - reference_point))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (reference_point - ratio))))
    rewards = (beta * ratio).detach()
    return PreferenceLoss(losses, rewards[desirable], rewards[~desirable])


def knobs(cfg: Any) -> dict[str, Any]:
    """A loss config's knobs as keyword arguments (everything but ``variant``)."""
    return {k: v for k, v in cfg.model_dump().items() if k != "variant"}
