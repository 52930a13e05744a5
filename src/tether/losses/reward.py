"""Reward-model losses and ensemble statistics."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F  # noqa: N812 - the universal alias
from torch import Tensor


class RewardLoss(NamedTuple):
    """Per-pair losses and whether the model ranks each pair right."""

    losses: Tensor   # (B,)
    correct: Tensor  # (B,) bool: chosen scored above rejected


def bradley_terry_loss(chosen: Tensor, rejected: Tensor, *, margin: Tensor | None = None,
                       center_coef: float = 0.0) -> RewardLoss:
    """Bradley-Terry negative log-likelihood of the preference (Ouyang et al. 2022).  (B,), (B,) -> RewardLoss

    loss = -log σ(r_c - r_r - m) + c · (r_c + r_r)²

    ``margin`` m (per pair, e.g. from preference strength; Llama 2, Touvron et al. 2023) asks
    for a larger gap on clearer pairs. ``center_coef`` c pulls rewards towards zero mean
    (Eisenstein et al. 2023), which makes rewards comparable across models in an ensemble;
    TRL applies it as c · mean((r_c + r_r)²), the same as this per pair once averaged.

    Example (hand-worked): r_c = 2, r_r = 1, m = 0.5: -log σ(0.5) = 0.4741; with c = 0.01,
    plus 0.01 · 9 = 0.5641.
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    losses = -F.logsigmoid(diff)
    if center_coef:
        losses = losses + center_coef * (chosen + rejected) ** 2
    return RewardLoss(losses, (chosen > rejected).detach())


class EnsembleScores(NamedTuple):
    """Statistics of K reward models' scores for the same sequences."""

    mean: Tensor  # (B,)
    min: Tensor   # (B,)
    std: Tensor   # (B,) disagreement: the population standard deviation across members

    def conservative(self, k: float) -> Tensor:
        """mean - k · std: a pessimistic reward that penalises what the members disagree on (Coste et al. 2024)."""
        return self.mean - k * self.std


def ensemble_scores(scores: Tensor) -> EnsembleScores:
    """(K, B) member scores -> mean, min and disagreement per sequence.

    Example (hand-worked): members (1, 3) for one sequence: mean 2, min 1, std 1.
    """
    return EnsembleScores(scores.mean(0), scores.min(0).values, scores.std(0, correction=0))
