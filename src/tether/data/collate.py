"""Pad tokenized examples into tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from tether.data.records import TokenizedExample


class TokenBatch(NamedTuple):
    """A right-padded batch of token sequences, or (padding-free) one packed row with ``position_ids``."""

    input_ids: Tensor       # (B, T)
    attention_mask: Tensor  # (B, T) 1 on real tokens
    loss_mask: Tensor       # (B, T) true on trained / scored tokens
    position_ids: Tensor | None = None  # (1, T) packed: restart at 0 at each example; None: padded

    def num_tokens(self) -> int:
        """Real tokens in the batch (what the forward processes, padding aside)."""
        return int(self.attention_mask.sum())

    def scored_tokens(self) -> int:
        """Tokens a loss over ``loss_mask`` sums over (a row's or a packed example's first token has no context)."""
        if self.position_ids is not None:
            return int((self.loss_mask & (self.position_ids > 0)).sum())
        return int((self.loss_mask[:, 1:] & self.attention_mask[:, :-1].bool()).sum())


def truncate(example: TokenizedExample, max_length: int) -> TokenizedExample:
    """Keep the first ``max_length`` tokens (the prompt's start; the completion's end may be lost)."""
    return TokenizedExample(example.input_ids[:max_length], example.loss_mask[:max_length])


def pad_multiple(device: torch.device | str) -> int:
    """The multiple padded widths round up to on ``device``: 64 on a GPU, 1 (none) elsewhere.

    On a GPU every new (batch, width) shape makes the attention and matmul libraries pick and
    build a kernel plan (cuDNN's attention builds a graph per shape), which costs more than the
    step itself for small models; rounding widths up lets later steps reuse the plans. On a CPU
    padding only costs arithmetic. Padding is masked, so results do not change.
    """
    return 64 if torch.device(device).type == "cuda" else 1


def pad_batch(examples: Sequence[TokenizedExample], pad_id: int, device: torch.device | str = "cpu",
              multiple_of: int | None = None) -> TokenBatch:
    """Right-pad ``examples`` to the longest one, rounded up to ``multiple_of`` (default :func:`pad_multiple`)."""
    multiple = pad_multiple(device) if multiple_of is None else multiple_of
    width = -(-max(len(e.input_ids) for e in examples) // multiple) * multiple
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


def length_groups(lengths: Sequence[int], groups: int) -> list[list[int]]:
    """Split indices into at most ``groups`` groups of similar length, minimising padded tokens.

    Each group is padded on its own, so a batch of mixed lengths stops paying for its longest
    sequence everywhere. Exact (dynamic programming over the sorted lengths); the groups come
    out shortest first. Example: lengths (10, 100, 12, 95) in 2 groups -> [[0, 2], [3, 1]]
    (padded area 2*12 + 2*100 = 224 instead of 4*100 = 400).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n, k = len(order), max(1, min(groups, len(order)))
    sorted_lengths = [lengths[i] for i in order]
    inf = float("inf")
    # best[g][j]: least padded area covering the first j sorted items with g groups; cut[g][j]: where the last starts.
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for g in range(1, k + 1):
        for j in range(1, n + 1):
            for i in range(g - 1, j):
                area = best[g - 1][i] + (j - i) * sorted_lengths[j - 1]
                if area < best[g][j]:
                    best[g][j], cut[g][j] = area, i
    g = min(range(1, k + 1), key=lambda c: best[c][n])
    bounds, j = [], n
    while g > 0:
        bounds.append((cut[g][j], j))
        j, g = cut[g][j], g - 1
    return [order[a:b] for a, b in reversed(bounds)]


class Grouped(NamedTuple):
    """Sequences collated as several batches: padded length groups, or one padding-free row."""

    batches: list[TokenBatch]
    order: list[int]  # original index of each sequence, in the batches' order

    def restore(self, values: Tensor) -> Tensor:
        """Per-sequence values in the batches' order (concatenated) -> in the original order."""
        out = torch.empty_like(values)
        out[torch.tensor(self.order, device=values.device)] = values
        return out

    def scored_tokens(self) -> int:
        """Tokens a loss over the batches' loss masks sums over."""
        return sum(b.scored_tokens() for b in self.batches)

    def real_tokens(self) -> int:
        """Non-padding tokens processed."""
        return sum(int(b.attention_mask.sum()) for b in self.batches)


def collate_grouped(sequences: Sequence[TokenizedExample], *, pad_id: int, device: torch.device | str,
                    groups: int = 1, packing: str = "none") -> Grouped:
    """``packing='padding-free'``: one packed row; otherwise up to ``groups`` padded batches of similar length."""
    if packing == "padding-free":
        return Grouped([pack_padding_free(sequences, device)], list(range(len(sequences))))
    parts = length_groups([len(s.input_ids) for s in sequences], groups)
    return Grouped([pad_batch([sequences[i] for i in part], pad_id, device) for part in parts],
                   [i for part in parts for i in part])
