"""The DPO family: losses on sequence log-probabilities of preferred and dispreferred completions.

Convention (the one TRL uses): a *sequence log-prob* is the **sum** over completion tokens of
log p(token | prompt, previous tokens), with prompt tokens masked out
(``tether.models.logprobs.completion_logps(...).sequence_logps``). The *log-ratio* of a
completion is ``logp_policy - logp_reference``; the implicit reward is ``beta * log-ratio``.
With ``h = (logp_c - ref_c) - (logp_r - ref_r)`` (chosen minus rejected log-ratio):

| variant | per-pair loss | paper |
|---|---|---|
| sigmoid | -log σ(β h) | DPO, Rafailov et al. 2023 |
| sigmoid + label_smoothing ε (cDPO) | -(1-ε) log σ(β h) - ε log σ(-β h) | Mitchell 2023, "A note on DPO with noisy preferences" |
| robust | [-(1-ε) log σ(β h) + ε log σ(-β h)] / (1-2ε) | Chowdhury et al. 2024, "Provably robust DPO" |
| hinge | max(0, 1 - β h) | SLiC-HF, Zhao et al. 2023 |
| ipo | (h' - 1/(2β))², h' = h with each log-ratio divided by its completion length (TRL's normalisation, confirmed with the IPO authors; ``ipo_normalize=False`` gives the paper's raw h) | IPO, Azar et al. 2023 |
| simpo (reference-free) | -log σ(β (logp_c/|y_c| - logp_r/|y_r|) - γ) | SimPO, Meng et al. 2024 |
| kto (unpaired) | desirable: λ_D (1 - σ(β (r - z0))); undesirable: λ_U (1 - σ(β (z0 - r))), r the log-ratio, z0 the batch KL estimate | KTO, Ethayarajh et al. 2024 |

Every function returns per-pair (or per-example) losses, so the caller chooses the reduction
(the mean over the global batch, for gradient accumulation).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 - the universal alias
from torch import Tensor

DPOVariant = Literal["sigmoid", "robust", "hinge", "ipo"]


class PreferenceLoss(NamedTuple):
    """Per-pair losses and the implicit rewards (detached) used for logging margins and accuracies."""

    losses: Tensor            # (B,)
    chosen_rewards: Tensor    # (B,) β · log-ratio of the chosen completion (β · avg logp for SimPO)
    rejected_rewards: Tensor  # (B,)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
             beta: float = 0.1, variant: DPOVariant = "sigmoid", label_smoothing: float = 0.0,
             chosen_tokens: Tensor | None = None, rejected_tokens: Tensor | None = None,
             ipo_normalize: bool = True) -> PreferenceLoss:
    """DPO and its reference-based variants (see the module table).  (B,) x 4 -> PreferenceLoss

    ``label_smoothing`` is ε: the assumed rate of flipped labels (sigmoid: cDPO; robust: its
    unbiased correction, which needs ε < 0.5). ``chosen_tokens`` / ``rejected_tokens`` are
    completion lengths, needed by IPO's length normalisation.

    Example (hand-worked): log-ratios chosen +1, rejected -1 (h = 2), β = 0.5: sigmoid loss
    -log σ(1) = 0.3133; hinge max(0, 1 - 1) = 0; robust with ε = 0.1:
    (0.9 · 0.3133 - 0.1 · 1.3133) / 0.8 = 0.1883.
    """
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if variant == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif variant == "robust":
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h)
                  + label_smoothing * F.logsigmoid(-beta * h)) / (1 - 2 * label_smoothing)
    elif variant == "hinge":
        losses = torch.relu(1 - beta * h)
    elif variant == "ipo":
        if ipo_normalize:
            if chosen_tokens is None or rejected_tokens is None:
                raise ValueError("IPO's length normalisation needs chosen_tokens and rejected_tokens")
            h = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO variant {variant!r}")
    return PreferenceLoss(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def simpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, chosen_tokens: Tensor, rejected_tokens: Tensor, *,
               beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0) -> PreferenceLoss:
    """SimPO: reference-free, length-normalised, with a target margin γ.  (B,) x 4 -> PreferenceLoss

    Example (hand-worked): sums -4 over 4 tokens and -9 over 3 tokens (averages -1 and -3),
    β = 2, γ = 1: -log σ(2 · 2 - 1) = -log σ(3) = 0.04859.
    """
    chosen_avg = policy_chosen / chosen_tokens.clamp(min=1)
    rejected_avg = policy_rejected / rejected_tokens.clamp(min=1)
    logits = beta * (chosen_avg - rejected_avg) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return PreferenceLoss(losses, (beta * chosen_avg).detach(), (beta * rejected_avg).detach())


def kto_reference_point(policy_mismatched: Tensor, ref_mismatched: Tensor) -> Tensor:
    """KTO's z0: the batch-mean log-ratio on *mismatched* (prompt, completion) pairs, clamped at 0, detached.

    It estimates KL(policy || reference); mismatched pairs keep it from rewarding the very
    completions being trained on. Under DDP, average it across processes before use (TRL does).
    """
    return (policy_mismatched - ref_mismatched).mean().clamp(min=0).detach()


def kto_loss(policy: Tensor, ref: Tensor, desirable: Tensor, reference_point: Tensor | float, *, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> PreferenceLoss:
    """KTO on unpaired examples.  (B,), (B,), (B,) bool, () -> PreferenceLoss (rewards split by label)

    Example (hand-worked): a desirable example with log-ratio 2, z0 = 0, β = 0.5:
    1 - σ(1) = 0.2689; an undesirable one with log-ratio 2: 1 - σ(-1) = 0.7311.
    """
    ratio = policy - ref
    desirable = desirable.bool()
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (ratio - reference_point))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (reference_point - ratio))))
    rewards = (beta * ratio).detach()
    return PreferenceLoss(losses, rewards[desirable], rewards[~desirable])
