"""Pad tokenized examples into tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from tether.models.chat import TokenizedExample


class TokenBatch(NamedTuple):
    """A right-padded batch of token sequences."""

    input_ids: Tensor       # (B, T)
    attention_mask: Tensor  # (B, T) 1 on real tokens
    loss_mask: Tensor       # (B, T) true on trained / scored tokens


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
