"""Where datasets come from: a file or directory path, or a registered built-in source.

``builtin:NAME`` names a generator registered in :data:`DATASET_SOURCES` (the world
registers its datasets there); anything else is a path read by :func:`read_records`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.registry import Registry
from tether.data.context import ContextConfig, context_for, with_context
from tether.data.io import LoadedRecords, parse_rows, read_records
from tether.data.records import PromptRecord

R = TypeVar("R", bound=BaseModel)

class PreferenceData(Config):
    """Pairs (or, for KTO, labelled single completions) to train on."""

    train: str = Field(description="JSONL / datasets directory of preference records (KTO also takes "
                       "unpaired records), or builtin:NAME")
    eval: str | None = Field(None, description="held-out records: loss and reward accuracy at each eval")
    max_length: int = Field(512, ge=2, description="tokens per prompt + completion; longer ones are cut at the end")
    skip_bad: bool = Field(False, description="skip malformed rows (counted in record.json) instead of failing")
    packing: Literal["none", "padding-free"] = Field(
        "none", description="padding-free: a micro-batch's sequences concatenated into one row, attention "
        "isolated per sequence; pays off with a varlen attention kernel (flash-attention), not SDPA/eager")
    length_groups: int = Field(4, ge=1, description="split each micro-batch into up to N groups of similar "
                               "length, each padded on its own: the same loss, less compute spent on padding")
    share_prompts: bool = Field(True, description="run a pair's prompt once for both completions, repeating its "
                                "key/value cache (same loss up to float rounding; used where the model allows: "
                                "full attention, no gradient checkpointing, packing none)")
    context: ContextConfig | None = Field(None, description="put one of these texts in front of every prompt "
                                          "(the character-first recipe's seed prompts)")


class PromptData(Config):
    """Prompts to roll out from."""

    train: str = Field(description="JSONL / datasets directory of prompt records, or builtin:world-prompts")
    skip_bad: bool = Field(False, description="skip malformed rows (counted in record.json) instead of failing")
    length_groups: int = Field(4, ge=1, description="split each forward over completions into this many groups "
                               "of similar length, padded separately (less padding, same result)")
    share_prompts: bool = Field(True, description="run each prompt once per forward and repeat its key/value "
                                "cache to the completions sampled from it (same result up to float rounding; "
                                "used where the model allows: full attention, no gradient checkpointing)")
    context: ContextConfig | None = Field(None, description="put one of these texts in front of every prompt "
                                          "(e.g. the character-first recipe's seed prompts)")


def load_prompts(data: PromptData, seed: int, run_dir: Any) -> list[dict[str, Any]]:
    """Prompt records as dicts (prompt plus any metadata: the world's ``family``, ``gold``, ``tags``), each with
    its context in front when ``data.context`` is set (the text kept under ``context``)."""
    loaded = load_records(data.train, PromptRecord, seed=seed, skip_bad=data.skip_bad)
    run_dir.record_skipped(loaded.skipped)
    if not loaded.records:
        raise DataError(f"{data.train}: no usable prompts")
    rows = [r.model_dump(mode="json") for r in loaded.records]
    if data.context is not None:
        for i, row in enumerate(rows):
            row["context"] = context_for(data.context, seed, i)
            row["prompt"] = with_context(row["prompt"], row["context"], data.context.placement)
    return rows


DATASET_SOURCES: Registry[Callable[[int], list[dict[str, Any]]]] = Registry(
    "dataset source", description="builtin:NAME datasets: seed -> rows (the world's, a demo's, a plugin's)")


def load_records(spec: str, record_type: type[R], *, seed: int = 0, skip_bad: bool = False) -> LoadedRecords[R]:
    """Records from ``builtin:NAME`` (generated with ``seed``) or from a path."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        rows = DATASET_SOURCES.get(name)(seed)
        return parse_rows(((f"{spec}[{i}]", row) for i, row in enumerate(rows)), record_type,
                          source=spec, skip_bad=skip_bad)
    return read_records(spec, record_type, skip_bad=skip_bad)


@DATASET_SOURCES.register("arithmetic-chat")
def arithmetic_chat(seed: int, size: int = 512) -> list[dict[str, Any]]:
    """Two-digit addition as chat demonstrations; a demo dataset that needs no files."""
    rng = random.Random(seed)
    rows = []
    for _ in range(size):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": f"{a} + {b} = {a + b}."},
        ]})
    return rows
