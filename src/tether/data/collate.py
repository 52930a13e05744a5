"""Pad tokenized examples into tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from tether.models.chat import TokenizedExample


class TokenBatch(NamedTuple):
    """A right-padded batch of token sequences, or (padding-free) one packed row with ``position_ids``."""

    input_ids: Tensor       # (B, T)
    attention_mask: Tensor  # (B, T) 1 on real tokens
    loss_mask: Tensor       # (B, T) true on trained / scored tokens
    position_ids: Tensor | None = None  # (1, T) packed: restart at 0 at each example; None: padded

    def scored_tokens(self) -> int:
        """Tokens a loss over ``loss_mask`` sums over (a row's or a packed example's first token has no context)."""
        if self.position_ids is not None:
            return int((self.loss_mask & (self.position_ids > 0)).sum())
        return int((self.loss_mask[:, 1:] & self.attention_mask[:, :-1].bool()).sum())


def truncate(example: TokenizedExample, max_length: int) -> TokenizedExample:
    """Keep the first ``max_length`` tokens (the prompt's start; the completion's end may be lost)."""
    return TokenizedExample(example.input_ids[:max_length], example.loss_mask[:max_length])


def pad_batch(examples: Sequence[TokenizedExample], pad_id: int, device: torch.device | str = "cpu") -> TokenBatch:
    """Right-pad ``examples`` to the longest one."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention[row, :n] = 1
        loss_mask[row, :n] = torch.tensor(example.loss_mask, dtype=torch.bool)
    return TokenBatch(ids.to(device), attention.to(device), loss_mask.to(device))


def pack_padding_free(examples: Sequence[TokenizedExample], device: torch.device | str = "cpu") -> TokenBatch:
    """Concatenate ``examples`` into one row with no padding at all (TRL's padding-free mode).

    ``position_ids`` restart at 0 for every example; given no 2-D attention mask, transformers
    builds a block-diagonal causal mask from them, so no example attends to another. The
    forward costs the real tokens only, however unequal the lengths.
    """
    ids = [t for e in examples for t in e.input_ids]
    loss = [m for e in examples for m in e.loss_mask]
    positions = [p for e in examples for p in range(len(e.input_ids))]
    return TokenBatch(torch.tensor([ids], dtype=torch.long, device=device),
                      torch.ones((1, len(ids)), dtype=torch.long, device=device),
                      torch.tensor([loss], dtype=torch.bool, device=device),
                      torch.tensor([positions], dtype=torch.long, device=device))
