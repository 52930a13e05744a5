"""Activations at named sites (:mod:`tether.interp.sites`), captured in batches: in memory, or streamed to
disk in shards with the texts and labels they came from.

Positions: ``last`` (each text's last token: what the model has read when it starts to answer), ``mean``
(the mean over the text's tokens), or ``all`` (every token, one row each, with its text and position).
Texts are padded on the right in a batch and each row is read at its own positions, so a text's
activations do not depend on what it was batched with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import torch

from tether.interp.sites import hooked

Positions = Literal["last", "mean", "all"]


def _keeper(into: dict[str, torch.Tensor], name: str) -> Any:
    """A site edit that only records the site's value under ``name``."""
    def read(value: torch.Tensor) -> None:
        into[name] = value.detach()
    return read


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def capture_batches(model: Any, tokenizer: Any, texts: Sequence[str], sites: Sequence[str], *,
                    positions: Positions = "last", batch_size: int = 16, max_length: int = 512
                    ) -> Iterator[tuple[dict[str, torch.Tensor], list[tuple[int, int]]]]:
    """Per batch: each site's rows (float32, on the CPU) and, per row, ``(text index, token position)``
    (position -1 for ``mean``)."""
    if positions not in ("last", "mean", "all"):
        raise ValueError(f"positions {positions!r}: expected last, mean or all")
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    try:
        for offset, batch in zip(range(0, len(texts), batch_size), _batches(texts, batch_size), strict=True):
            encoded = tokenizer(list(batch), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
            mask = encoded["attention_mask"].to(device)
            seen: dict[str, torch.Tensor] = {}
            with hooked(model, {name: _keeper(seen, name) for name in sites}):
                model(input_ids=encoded["input_ids"].to(device), attention_mask=mask)
            lengths = mask.sum(1)
            if positions == "last":
                index = [(offset + i, int(n) - 1) for i, n in enumerate(lengths)]
                picked = {n: v[torch.arange(len(v)), lengths - 1] for n, v in seen.items()}
            elif positions == "mean":
                index = [(offset + i, -1) for i in range(len(lengths))]
                weights = mask.unsqueeze(-1).to(next(iter(seen.values())).dtype)
                picked = {n: (v * weights).sum(1) / weights.sum(1) for n, v in seen.items()}
            else:
                rows, cols = torch.nonzero(mask, as_tuple=True)
                index = [(offset + int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
                picked = {n: v[rows, cols] for n, v in seen.items()}
            yield {n: v.float().cpu() for n, v in picked.items()}, index
    finally:
        tokenizer.padding_side = side


def capture(model: Any, tokenizer: Any, texts: Sequence[str], sites: Sequence[str], *,
            positions: Positions = "last", batch_size: int = 16, max_length: int = 512) -> dict[str, torch.Tensor]:
    """Each site's activations for ``texts`` in memory: one row per text (``last``, ``mean``) or per token
    (``all``)."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in sites}
    for rows, _ in capture_batches(model, tokenizer, texts, sites, positions=positions, batch_size=batch_size,
                                   max_length=max_length):
        for name, value in rows.items():
            parts[name].append(value)
    return {name: torch.cat(values) if values else torch.empty(0) for name, values in parts.items()}


def capture_tail(model: Any, tokenizer: Any, texts: Sequence[str], sites: Sequence[str], tokens: int, *,
                 batch_size: int = 16, max_length: int = 512) -> dict[str, torch.Tensor]:
    """Each site's activations at each text's last ``tokens`` tokens: ``(texts, tokens, width)``, ``[:, k]``
    being ``k`` tokens before the last (a chat prompt's post-instruction tokens, where Arditi et al. look for
    the refusal direction). Every text must have at least ``tokens`` tokens."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in sites}
    # closing(): a short text raises mid-iteration, and the generator must still put the tokenizer's
    # padding side back then, not whenever it is collected.
    with closing(capture_batches(model, tokenizer, texts, sites, positions="all", batch_size=batch_size,
                                 max_length=max_length)) as batches:
        for rows, index in batches:
            _keep_tail(parts, rows, index, tokens)
    return {name: torch.stack(values) if values else torch.empty(0) for name, values in parts.items()}


def _keep_tail(parts: dict[str, list[torch.Tensor]], rows: dict[str, torch.Tensor], index: list[tuple[int, int]],
               tokens: int) -> None:
    """Append each text's last ``tokens`` rows of one batch (last first) to ``parts``."""
    ends: dict[int, int] = {}
    for row, (text, _) in enumerate(index):
        ends[text] = row  # rows run text by text, position by position: the last row seen is the last token
    for text, end in ends.items():
        start = end - tokens + 1
        if start < 0 or index[start][0] != text:
            raise ValueError(f"text {text} has fewer than {tokens} tokens")
        for name, value in rows.items():
            parts[name].append(value[end - torch.arange(tokens)])


def capture_to_disk(model: Any, tokenizer: Any, records: Iterable[dict[str, Any]], sites: Sequence[str],
                    out: str | Path, *, positions: Positions = "last", batch_size: int = 16, shard_rows: int = 4096,
                    max_length: int = 512) -> Path:
    """Stream activations to ``out``: ``shard-NNNNN.safetensors`` (one tensor per site, at most
    ``shard_rows`` rows each), ``rows.jsonl`` (per row: the record's index, its ``label`` if it has one, the
    token position) and ``capture.json`` (sites, positions, shards). ``records`` are dicts with a ``text``
    (and optionally a ``label``).

    Raises:
        FileExistsError: ``out`` already holds a capture.
    """
    from safetensors.torch import save_file

    path = Path(out)
    if (path / "capture.json").exists():
        raise FileExistsError(f"{path} already holds a capture; choose a new directory")
    path.mkdir(parents=True, exist_ok=True)
    items = list(records)
    texts = [str(r["text"]) for r in items]
    pending: dict[str, list[torch.Tensor]] = {name: [] for name in sites}
    shards: list[str] = []
    count = 0

    def flush() -> None:
        nonlocal count
        if not pending[sites[0]]:
            return
        tensors = {name: torch.cat(values).contiguous() for name, values in pending.items()}
        name = f"shard-{len(shards):05d}.safetensors"
        save_file(tensors, str(path / name))
        shards.append(name)
        count += len(next(iter(tensors.values())))
        for values in pending.values():
            values.clear()

    with (path / "rows.jsonl").open("w") as index_file:
        held = 0
        for rows, index in capture_batches(model, tokenizer, texts, sites, positions=positions,
                                           batch_size=batch_size, max_length=max_length):
            for name, value in rows.items():
                pending[name].append(value)
            for record_index, position in index:
                row = {"record": record_index, "position": position}
                if "label" in items[record_index]:
                    row["label"] = items[record_index]["label"]
                index_file.write(json.dumps(row) + "\n")
            held += len(index)
            if held >= shard_rows:
                flush()
                held = 0
        flush()
    (path / "capture.json").write_text(json.dumps({"sites": list(sites), "positions": positions, "shards": shards,
                                                   "rows": count, "records": len(items)}, indent=2) + "\n")
    return path


def load_capture(out: str | Path) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """What :func:`capture_to_disk` wrote: each site's rows (all shards, in order) and the rows' index."""
    from safetensors.torch import load_file

    path = Path(out)
    meta = json.loads((path / "capture.json").read_text())
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in meta["sites"]}
    for shard in meta["shards"]:
        for name, value in load_file(str(path / shard)).items():
            parts[name].append(value)
    rows = [json.loads(line) for line in (path / "rows.jsonl").read_text().splitlines()]
    return {name: torch.cat(values) for name, values in parts.items()}, rows
