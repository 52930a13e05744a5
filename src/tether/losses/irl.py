"""Inverse soft-Q learning from demonstrations (IQ-Learn, Garg et al. 2021), as Wulfmeier et al. 2024 apply
it to language models: the policy's logits are soft Q-values, ``Q(s, a) = logit_a``, with the soft value
``V(s) = logsumexp_a Q(s, a)``. The reward they imply for a demonstrated token is

    r(s, a) = Q(s, a) − γ V(s')        (V = 0 after the last token)

and the offline objective over demonstration tokens, with the χ² regulariser, minimises

    L = E[ −(r − r² / (4α)) ] + E[ V(s) − γ V(s') ].

Without the regulariser the ``γ V(s')`` terms cancel and this is exactly maximum likelihood for any γ
(``Q − V = log π``): SFT is the special case, and the regulariser, through ``r² = (Q − γ V(s'))²``, is what
makes each token answer for the value of the state it leads to. The recovered reward of a response is the
sum of its tokens' ``r``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class IQLoss(NamedTuple):
    """Summed loss, the per-token recovered rewards, and the token count."""

    loss_sum: Tensor    # ()
    rewards: Tensor     # (N,) r(s, a) of each demonstrated token (detached)
    num_tokens: Tensor  # ()


def next_states(scored: Tensor) -> Tensor:
    """For each scored token (row-major over ``scored``, a (B, T) bool mask of the tokens predicted), the
    index of the next scored token in the same row when it follows directly, else -1 (the end of a reply:
    no next state).  -> (N,) long

    Example: ``[[F, T, T, F, T]]`` gives ``[1, -1, -1]``: the second token follows the first; the third
    starts a new reply after a gap (another turn), and is the last.
    """
    flat = scored.reshape(-1)
    index = torch.cumsum(flat.long(), 0) - 1
    following = torch.zeros_like(scored)
    following[:, :-1] = scored[:, :-1] & scored[:, 1:]
    nxt = torch.full_like(index, -1)
    shifted = torch.full_like(index, -1)
    shifted[:-1] = index[1:]
    nxt = torch.where(following.reshape(-1), shifted, nxt)
    return nxt[flat]


def iq_learn_loss(logits: Tensor, actions: Tensor, next_index: Tensor, *, gamma: float = 0.9,
                  alpha: float | None = 1.0) -> IQLoss:
    """IQ-Learn's loss over demonstrated tokens.  (N, V), (N,), (N,) -> IQLoss

    Args:
        logits: the policy's logits at each demonstrated token's state.
        actions: the demonstrated tokens.
        next_index: :func:`next_states` (-1: no next state).
        gamma: discount.
        alpha: the χ² regulariser's scale (None: none).

    Example (hand-worked): one terminal token with logits ``[0, ln 3]`` and action 1: Q = ln 3, V = ln 4,
    r = ln 3; without the regulariser L = −ln 3 + ln 4 = 0.2877 = −log π(a), the NLL; with α = 1 it adds
    (ln 3)² / 4 = 0.3017.
    """
    logits = logits.float()
    q = logits.gather(1, actions[:, None]).squeeze(1)
    v = torch.logsumexp(logits, dim=-1)
    v_next = torch.where(next_index >= 0, v[next_index.clamp_min(0)], torch.zeros_like(v))
    reward = q - gamma * v_next
    gain = reward if alpha is None else reward - reward.pow(2) / (4 * alpha)
    loss = (-gain + v - gamma * v_next).sum()
    return IQLoss(loss, reward.detach(), torch.tensor(q.numel(), device=q.device))
