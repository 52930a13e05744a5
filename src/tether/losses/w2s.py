"""Weak-to-strong generalisation losses (Burns et al. 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the universal alias
from torch import Tensor


def confidence_coef(step: int, *, warmup_steps: int, coef: float) -> float:
    """The auxiliary loss's weight at ``step``: 0 at the start, rising linearly to ``coef`` by ``warmup_steps``.

    Early on the student's own predictions are noise; the warm-up lets it learn from the weak labels first
    (Burns et al. warm it up over the first 20% of training).
    """
    if warmup_steps <= 0:
        return coef
    return coef * min(1.0, step / warmup_steps)


def confidence_loss(logits: Tensor, weak: Tensor, *, coef: float) -> Tensor:
    """Burns et al.'s auxiliary confidence loss for one binary logit per example.  (B,), (B,) -> scalar

    loss = BCE(z, (1 - α) · w + α · ĥ)

    ``weak`` w are the supervisor's probabilities (soft labels); ĥ hardens the student's own predictions:
    1 for the fraction of the batch with the highest σ(z), the fraction being the weak labels' mean (the
    threshold is the batch's (1 - mean(w)) quantile, so the hardened labels keep the weak labels' class
    balance instead of collapsing to one class). ĥ carries no gradient. With α = 0 this is plain training
    on the weak labels; with α > 0 the student is pulled towards its own confident beliefs where it
    disagrees with the supervisor.

    Example (hand-worked): z = (2, -2), w = (0.5, 0.5), α = 0.5: the threshold keeps one of two positive,
    ĥ = (1, 0), targets (0.75, 0.25); BCE(2, 0.75) = BCE(-2, 0.25) = 0.6269, the loss.
    """
    if logits.shape != weak.shape or logits.dim() != 1:
        raise ValueError(f"one logit and one weak label per example: got {tuple(logits.shape)} and "
                         f"{tuple(weak.shape)}")
    logits, weak = logits.float(), weak.float()
    probs = torch.sigmoid(logits).detach()
    threshold = torch.quantile(probs, 1.0 - weak.mean().clamp(0.0, 1.0))
    hardened = (probs >= threshold).float()
    target = (1.0 - coef) * weak + coef * hardened
    return F.binary_cross_entropy_with_logits(logits, target)
