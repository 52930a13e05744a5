"""Pad tokenized examples into tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar

import torch
from torch import Tensor

from tether.data.records import TokenizedExample

B = TypeVar("B", "TokenBatch", "PrefixBatch")


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


class Grouped(NamedTuple, Generic[B]):
    """Sequences collated as several batches: padded length groups, one padding-free row, or
    (:class:`PrefixBatch`) whole prompt groups."""

    batches: list[B]
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
        return sum(b.num_tokens() for b in self.batches)


def collate_grouped(sequences: Sequence[TokenizedExample], *, pad_id: int, device: torch.device | str,
                    groups: int = 1, packing: str = "none") -> Grouped[TokenBatch]:
    """``packing='padding-free'``: one packed row; otherwise up to ``groups`` padded batches of similar length."""
    if packing == "padding-free":
        return Grouped([pack_padding_free(sequences, device)], list(range(len(sequences))))
    parts = length_groups([len(s.input_ids) for s in sequences], groups)
    return Grouped([pad_batch([sequences[i] for i in part], pad_id, device) for part in parts],
                   [i for part in parts for i in part])


class PrefixBatch(NamedTuple):
    """Completions that share prompts, laid out so each prompt is run once.

    Several completions of one prompt (a GRPO group, a DPO pair) would otherwise repeat the
    prompt's forward and backward once per completion. Here the prompts run once, their key/value
    cache is repeated to the completion rows, and only the completions run per row.
    """

    prompt_ids: Tensor       # (U, P) distinct prompts, left-padded: every prompt ends at column P-1
    prompt_mask: Tensor      # (U, P) 1 on real prompt tokens
    prompt_of: Tensor        # (B,) which prompt each completion row continues
    completion_ids: Tensor   # (B, C) right-padded
    completion_mask: Tensor  # (B, C) true on real completion tokens

    def scored_tokens(self) -> int:
        """Completion tokens a loss sums over."""
        return int(self.completion_mask.sum())

    def num_tokens(self) -> int:
        """Real tokens of the rows as if each prompt were repeated (comparable with :class:`TokenBatch`'s)."""
        return int(self.prompt_mask.sum(-1)[self.prompt_of].sum() + self.completion_mask.sum())


def prefix_batch(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
                 device: torch.device | str = "cpu") -> PrefixBatch:
    """A :class:`PrefixBatch` of ``completions[i]`` continuing ``prompts[i]`` (equal prompts merged)."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError("prefix_batch needs one prompt per completion, and at least one")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("prefix_batch needs non-empty prompts (a first token has nothing to be predicted from)")
    distinct: dict[tuple[int, ...], int] = {}
    index = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
    width = max(len(p) for p in distinct)
    prompt_ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(distinct), width), dtype=torch.long)
    for row, p in enumerate(distinct):
        prompt_ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        prompt_mask[row, width - len(p):] = 1
    c_width = max(1, max(len(c) for c in completions))
    completion_ids = torch.full((len(completions), c_width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((len(completions), c_width), dtype=torch.bool)
    for row, c in enumerate(completions):
        completion_ids[row, :len(c)] = torch.tensor(list(c), dtype=torch.long)
        completion_mask[row, :len(c)] = True
    return PrefixBatch(prompt_ids.to(device), prompt_mask.to(device), torch.tensor(index, device=device),
                       completion_ids.to(device), completion_mask.to(device))


def prompt_groups(prompts: Sequence[Sequence[int]], lengths: Sequence[int], groups: int,
                  max_size: int) -> list[list[int]]:
    """Row indices cut into batches of whole prompt groups (a prompt's rows are never split), ordered by
    each group's longest row, each batch about ``len / groups`` rows (and at most ``max_size``) where the
    groups' sizes allow: fewer, larger batches when whole groups do not divide that finely."""
    members: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        members.setdefault(tuple(p), []).append(i)
    ordered = sorted(members.values(), key=lambda rows: max(lengths[i] for i in rows))
    count = max(groups, -(-len(prompts) // max(max_size, 1)))
    size = -(-len(prompts) // max(count, 1))
    batches: list[list[int]] = [[]]
    for rows in ordered:
        if batches[-1] and len(batches[-1]) + len(rows) > size:
            batches.append([])
        batches[-1].extend(rows)
    return batches if batches[0] else []


def split_prompt(example: TokenizedExample) -> tuple[list[int], list[int]] | None:
    """``example`` as (prompt, completion) when its loss mask is a non-empty prompt followed by the
    completion to its end (what :func:`prefix_batch` can share); otherwise None."""
    mask = example.loss_mask
    p = next((i for i, m in enumerate(mask) if m), len(mask))
    if p == 0 or p == len(mask) or not all(mask[p:]):
        return None
    return list(example.input_ids[:p]), list(example.input_ids[p:])
