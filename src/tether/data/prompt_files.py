"""Prompt sets from files users already have, as :class:`PromptRow` lists (evaluation suites, red-team goals).

Each format is a loader registered in :data:`PROMPT_FORMATS` (``path -> list[PromptRow]``); a plugin adds one
the same way.

- XSTest-style CSV: columns ``prompt``, ``type``, ``label`` (``safe`` / ``unsafe``)
  (Röttger et al. 2024): over-refusal on safe prompts next to compliance on unsafe ones.
- HarmBench-style behaviours CSV: ``Behavior``; optional ``SemanticCategory``, ``FunctionalCategory``,
  ``ContextString`` and ``BehaviorID`` (Mazeika et al. 2024); or HarmBench's plain prompt lists.
- AdvBench-style CSV: ``goal``, optional ``target`` (Zou et al. 2023).
- Plain text (``text``): one prompt per line.
- JSONL: ``{"prompt": text or messages, "label": "harmful" | "benign", ...}``; optional
  ``category``, ``answer`` (reference for verifiers), ``response`` (score this response instead
  of generating one: judge validation on labelled data) and ``gold_labels``
  (``{"refusal": true, ...}``: the truth for scorer-vs-gold agreement).

Files are read as UTF-8 (with or without a byte-order mark) or as UTF-16/32 with one
(:func:`tether.data.io.text_lines`). A missing column, a malformed row or bytes that are not text
is a :class:`DataError` naming the file and line; :func:`detect_format` tells a file's format from
its name and header.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.errors import DataError
from tether.core.registry import Registry
from tether.data.io import jsonl_objects, read_text, text_lines
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
    with io.StringIO(read_text(path), newline="") as fh:
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
    """HarmBench-style behaviours CSV (``SemanticCategory``, ``FunctionalCategory``, ``ContextString`` and
    ``BehaviorID`` optional; a ContextString goes before the behaviour), or a plain list of behaviours,
    one per line (a file that is not ``.csv``, as HarmBench's text prompt lists are)."""
    path = Path(path)
    if path.suffix.lower() != ".csv" and not _header(path).startswith("Behavior"):
        return [PromptRow(f"harmbench:{r.id.rsplit(':', 1)[1]}", r.prompt, {"label": "harmful"})
                for r in load_lines(path)]
    out = []
    for line, row in _csv_rows(path, ("Behavior",)):
        behaviour = _required(path, line, row, "Behavior")
        context = (row.get("ContextString") or "").strip()
        prompt = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
        meta = {"label": "harmful", "functional": (row.get("FunctionalCategory") or "standard").strip()}
        if (row.get("SemanticCategory") or "").strip():
            meta["category"] = row["SemanticCategory"].strip()
        out.append(PromptRow((row.get("BehaviorID") or "").strip() or f"harmbench:{line}", prompt, meta))
    return out


@PROMPT_FORMATS.register("text")
def load_lines(path: str | Path) -> list[PromptRow]:
    """A plain list of prompts, one per line (blank lines skipped); each is taken as harmful (a goal)
    unless the suite says otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = [PromptRow(f"text:{number}", line.strip(), {"label": "harmful"})
            for number, line in text_lines(path) if line.strip()]
    if not rows:
        raise DataError(f"{path}: no prompts (the file is empty or blank)")
    return rows


def _header(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return next((line.strip() for _, line in text_lines(path)), "")


def detect_format(path: str | Path) -> str:
    """The prompt-file format of ``path`` from its name and header: ``.jsonl`` -> jsonl; ``.txt`` -> text;
    a CSV header with ``Behavior`` -> harmbench, ``goal`` -> advbench, ``prompt`` and ``label`` -> xstest.

    Raises:
        DataError: nothing tells (the message lists what would).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".txt", ".text", ".lst"):
        return "text"
    columns = [c.strip().lower() for c in next(csv.reader([_header(path)]), [])]
    if "behavior" in columns:
        return "harmbench"
    if "goal" in columns:
        return "advbench"
    if "prompt" in columns and "label" in columns:
        return "xstest"
    raise DataError(f"{path}: cannot tell its format (a .jsonl or .txt name, or a CSV header with Behavior "
                    f"(HarmBench), goal (AdvBench) or prompt,label (XSTest)); name one: {', '.join(PROMPT_FORMATS)}")


@PROMPT_FORMATS.register("advbench")
def load_advbench(path: str | Path) -> list[PromptRow]:
    """AdvBench-style CSV: goal, and (optional) target, the affirmative opening an attack aims for."""
    path = Path(path)
    out = []
    for line, row in _csv_rows(path, ("goal",)):
        target = (row.get("target") or "").strip()
        out.append(PromptRow(f"advbench:{line}", _required(path, line, row, "goal"),
                             {"label": "harmful", **({"target": target} if target else {})}))
    return out


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

