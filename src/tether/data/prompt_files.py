"""Prompt sets from files users already have, as :class:`PromptRow` lists (evaluation suites, red-team goals).

Each format is a loader registered in :data:`PROMPT_FORMATS` (``path -> list[PromptRow]``); a plugin adds one
the same way.

- XSTest-style CSV: columns ``prompt``, ``type``, ``label`` (``safe`` / ``unsafe``)
  (Röttger et al. 2024): over-refusal on safe prompts next to compliance on unsafe ones.
- HarmBench-style behaviours CSV: ``Behavior``, ``FunctionalCategory``, ``SemanticCategory``,
  optional ``ContextString`` and ``BehaviorID`` (Mazeika et al. 2024).
- AdvBench-style CSV: ``goal``, ``target`` (Zou et al. 2023).
- JSONL: ``{"prompt": text or messages, "label": "harmful" | "benign", ...}``; optional
  ``category``, ``answer`` (reference for verifiers), ``response`` (score this response instead
  of generating one: judge validation on labelled data) and ``gold_labels``
  (``{"refusal": true, ...}``: the truth for scorer-vs-gold agreement).

A missing column or a malformed row is a :class:`DataError` naming the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.errors import DataError
from tether.core.registry import Registry
from tether.data.io import jsonl_objects
from tether.data.records import Prompt


@dataclass(frozen=True)
class PromptRow:
    """One prompt read from a file, with what the file says about it (label, category, reference answer, ...)."""

    id: str
    prompt: Prompt
    meta: dict[str, Any] = field(default_factory=dict)


PROMPT_FORMATS: Registry[Callable[[str | Path], list[PromptRow]]] = Registry(
    "prompt file format", description="path -> the prompts of a file in that format")


def _csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(columns) or 'none'})")
        try:
            for row in reader:
                line = reader.line_num
                if None in row:  # more fields than the header names
                    raise DataError(f"{path}:{line}: {len(columns) + len(row[None])} fields, the header has "  # type: ignore[index]
                                    f"{len(columns)}")
                if any(row[c] is None for c in columns):
                    raise DataError(f"{path}:{line}: {sum(v is not None for v in row.values())} fields, the "
                                    f"header has {len(columns)}")
                yield line, row
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None


def _required(path: Path, line: int, row: dict[str, str], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise DataError(f"{path}:{line}: column {column!r} is empty")
    return value


@PROMPT_FORMATS.register("xstest")
def load_xstest(path: str | Path) -> list[PromptRow]:
    """XSTest-style CSV: prompt, type, label (safe | unsafe)."""
    path = Path(path)
    out = []
    for line, row in _csv_rows(path, ("prompt", "type", "label")):
        label = _required(path, line, row, "label").lower()
        if label not in ("safe", "unsafe"):
            raise DataError(f"{path}:{line}: column 'label' is {label!r}; expected 'safe' or 'unsafe'")
        out.append(PromptRow(row.get("id") or f"xstest:{line}", _required(path, line, row, "prompt"),
                              {"label": "benign" if label == "safe" else "harmful",
                               "category": _required(path, line, row, "type")}))
    return out


@PROMPT_FORMATS.register("harmbench")
def load_harmbench(path: str | Path) -> list[PromptRow]:
    """HarmBench-style behaviours CSV; a ContextString, where present, goes before the behaviour."""
    path = Path(path)
    out = []
    for line, row in _csv_rows(path, ("Behavior", "SemanticCategory")):
        behaviour = _required(path, line, row, "Behavior")
        context = (row.get("ContextString") or "").strip()
        prompt = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
        out.append(PromptRow(row.get("BehaviorID") or f"harmbench:{line}", prompt,
                              {"label": "harmful", "category": _required(path, line, row, "SemanticCategory"),
                               "functional": (row.get("FunctionalCategory") or "standard").strip()}))
    return out


@PROMPT_FORMATS.register("advbench")
def load_advbench(path: str | Path) -> list[PromptRow]:
    """AdvBench-style CSV: goal, target (the affirmative opening an attack aims for)."""
    path = Path(path)
    return [PromptRow(f"advbench:{line}", _required(path, line, row, "goal"),
                       {"label": "harmful", "target": _required(path, line, row, "target")})
            for line, row in _csv_rows(path, ("goal", "target"))]


_LABELS = {"harmful": "harmful", "unsafe": "harmful", "benign": "benign", "safe": "benign"}


@PROMPT_FORMATS.register("jsonl")
def load_jsonl_prompts(path: str | Path) -> list[PromptRow]:
    """JSONL prompts with labels (see the module docstring for the fields)."""
    out = []
    for where, row in jsonl_objects(path):
        prompt = row.get("prompt")
        if not (isinstance(prompt, str) and prompt.strip()) and not (
                isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m and "content" in m
                                                            for m in prompt)):
            raise DataError(f"{where}: field 'prompt': a non-empty string or a list of "
                            "{role, content} messages is required")
        label = row.get("label")
        if label is not None and str(label).lower() not in _LABELS:
            raise DataError(f"{where}: field 'label' is {label!r}; expected one of {', '.join(_LABELS)}")
        if "response" in row and not isinstance(row["response"], str):
            raise DataError(f"{where}: field 'response' must be a string")
        gold = row.get("gold_labels")
        if gold is not None and not (isinstance(gold, dict) and all(isinstance(v, bool) for v in gold.values())):
            raise DataError(f"{where}: field 'gold_labels' must map questions to true/false")
        meta = {k: v for k, v in row.items() if k not in ("prompt", "id")}
        if label is not None:
            meta["label"] = _LABELS[str(label).lower()]
        out.append(PromptRow(str(row.get("id", f"jsonl:{where.rsplit(':', 1)[1]}")), prompt, meta))
    return out

