"""Supervised fine-tuning: negative log-likelihood of completion tokens."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class SFTLoss(NamedTuple):
    """Summed NLL and the token count it sums over (divide for the mean)."""

    loss_sum: Tensor    # () sum over scored tokens of -log p
    num_tokens: Tensor  # () tokens scored


def sft_loss(token_logps: Tensor, loss_mask: Tensor) -> SFTLoss:
    """Negative log-likelihood summed over the tokens where ``loss_mask`` is true.

    The sum (not the mean) is returned so that gradient accumulation can divide by the token
    count of the whole global batch, the normalisation a single large batch would have.

    Args:
        token_logps: (B, T) log p(x_t | x_<t), e.g. ``CompletionLogps.token_logps``.
        loss_mask: (B, T) true on completion (assistant) tokens.

    Example (hand-worked): log-probs ``[[0, ln 0.5, ln 0.25]]`` with mask ``[[F, T, T]]``
    give loss_sum = ln 2 + ln 4 = 2.0794 over 2 tokens (mean 1.0397 nats).
    """
    mask = loss_mask.bool()
    return SFTLoss(-(token_logps * mask).sum(), mask.sum())
