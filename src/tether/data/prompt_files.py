"""Prompt sets from files users already have, as :class:`PromptRow` lists (evaluation suites, red-team goals).

Each format is a loader registered in :data:`PROMPT_FORMATS` (``path -> list[PromptRow]``); a plugin adds one
the same way.

- XSTest-style CSV: columns ``prompt``, ``type``, ``label`` (``safe`` / ``unsafe``)
  (Röttger et al. 2024): over-refusal on safe prompts next to compliance on unsafe ones.
- HarmBench-style behaviours CSV: ``Behavior``; optional ``SemanticCategory``, ``FunctionalCategory``,
  ``ContextString`` and ``BehaviorID`` (Mazeika et al. 2024); or HarmBench's plain prompt lists.
- AdvBench-style CSV: ``goal``, optional ``target`` (Zou et al. 2023).
- Plain text (``text``): one prompt per line.
- Any table (``table``): CSV, TSV, JSON list, JSONL or parquet with a prompt column under one of the
  names the field's collections use (JailbreakBench, StrongREJECT, Do-Not-Answer, SimpleSafetyTests,
  SORRY-Bench, WildJailbreak, OR-Bench, jailbreak_llms: :data:`PROMPT_COLUMNS`), category and label
  columns where present.
- A Hugging Face ``datasets`` directory (``datasets``): ``save_to_disk`` output or a folder of data files.
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
import json
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
        present = {c.strip().lower() for c in columns}
        missing = [c for c in required if c.lower() not in present]
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
    """The prompt-file format of ``path`` from its name and header: a directory -> datasets; ``.jsonl`` ->
    jsonl when its first row has a ``prompt``, else table; ``.json``, ``.parquet`` and ``.tsv`` -> table;
    ``.txt`` -> text; a CSV header with ``goal`` -> advbench (JailbreakBench's too), ``Behavior`` ->
    harmbench, ``prompt`` and ``label`` -> xstest, any other known prompt column (:data:`PROMPT_COLUMNS`)
    -> table.

    Raises:
        DataError: nothing tells (the message lists what would).
    """
    path = Path(path)
    if path.is_dir():
        return "datasets"
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        first = next(iter(jsonl_objects(path)), None)
        return "jsonl" if first is None or "prompt" in first[1] else "table"
    if suffix in (".json", ".parquet", ".tsv"):
        return "table"
    if suffix in (".txt", ".text", ".lst"):
        return "text"
    columns = [c.strip().lower() for c in next(csv.reader([_header(path)]), [])]
    if "goal" in columns:
        return "advbench"
    if "behavior" in columns:
        return "harmbench"
    if "prompt" in columns and "label" in columns:
        return "xstest"
    if any(c in PROMPT_COLUMNS for c in columns):
        return "table"
    raise DataError(f"{path}: cannot tell its format (a directory saved by datasets, a .jsonl, .json, .parquet or "
                    f".txt name, or a CSV header with a prompt column: {', '.join(PROMPT_COLUMNS)}); name one: "
                    f"{', '.join(PROMPT_FORMATS)}")


@PROMPT_FORMATS.register("advbench")
def load_advbench(path: str | Path) -> list[PromptRow]:
    """AdvBench-style CSV: goal, and (optional) target, the affirmative opening an attack aims for, and
    category. Column names in any case, so JailbreakBench's behaviours CSV (Goal, Target, Behavior,
    Category, Source) reads as it is: its ``Goal`` is the prompt, ``Behavior`` a short name."""
    path = Path(path)
    out = []
    for line, raw in _csv_rows(path, ("goal",)):
        row = {k.strip().lower(): v for k, v in raw.items() if k}
        target, category = (row.get("target") or "").strip(), (row.get("category") or "").strip()
        meta: dict[str, Any] = {"label": "harmful"}
        if target:
            meta["target"] = target
        if category:
            meta["category"] = category
        out.append(PromptRow(f"advbench:{line}", _required(path, line, row, "goal"), meta))
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



# --- any table of prompts: the field's collections as they come --------------------------------------

# Columns that hold the prompt, in order of preference (case-insensitive); per row the first non-empty one
# wins, so WildJailbreak's adversarial / vanilla pair reads right. They cover XSTest, JailbreakBench
# (Goal), StrongREJECT (forbidden_prompt), Do-Not-Answer (question), SimpleSafetyTests (prompts_final),
# SORRY-Bench (turns), OR-Bench and jailbreak_llms (prompt), HarmBench (Behavior), and instruction sets.
PROMPT_COLUMNS = ("prompt", "goal", "forbidden_prompt", "adversarial", "vanilla", "question", "prompts_final",
                  "turns", "instruction", "behavior", "query", "text", "input", "content")
CATEGORY_COLUMNS = ("category", "semanticcategory", "type", "risk_area", "types_of_harm", "harm_area",
                    "hazard", "harm_category")
LABEL_COLUMNS = ("label", "data_type")


def _label_of(value: Any) -> str | None:
    """harmful / benign from a label cell (``unsafe``, ``safe``, ``vanilla_harmful``, ``adversarial_benign``,
    ...); None when the cell says neither."""
    text = str(value).strip().lower()
    if any(word in text for word in ("benign", "unharmful", "not harmful")) or text in ("safe", "0", "false"):
        return "benign"
    if any(word in text for word in ("harm", "unsafe", "toxic")) or text in ("1", "true"):
        return "harmful"
    return None


def table_prompts(source: str, rows: list[tuple[str, dict[str, Any]]]) -> list[PromptRow]:
    """Prompt rows from ``(where, row)`` records of any table: the prompt from the first non-empty
    :data:`PROMPT_COLUMNS` column, the category and label where a known column gives them (every prompt is
    a harmful goal unless a label column says benign), ``target`` and ``id`` when present.

    Raises:
        DataError: no known prompt column, or a row whose prompt columns are all empty.
    """
    out = []
    for where, raw in rows:
        row = {str(k).strip().lower(): v for k, v in raw.items()}
        present = [c for c in PROMPT_COLUMNS if c in row]
        if not present:
            raise DataError(f"{where}: no prompt column (columns: {', '.join(map(str, raw)) or 'none'}; a prompt "
                            f"is read from one of: {', '.join(PROMPT_COLUMNS)})")
        prompt = next((p for p in (_cell_text(row[c]) for c in present) if p), "")
        if not prompt:
            raise DataError(f"{where}: the prompt ({' / '.join(present)}) is empty")
        meta: dict[str, Any] = {"label": "harmful"}
        label = next((_label_of(row[c]) for c in LABEL_COLUMNS if c in row and row[c] not in (None, "")), None)
        if label:
            meta["label"] = label
        category = next((_cell_text(row[c]) for c in CATEGORY_COLUMNS if c in row and _cell_text(row[c])), "")
        if category:
            meta["category"] = category
        if _cell_text(row.get("target")):
            meta["target"] = _cell_text(row["target"])
        ident = _cell_text(row.get("id")) or f"{source}:{where.rsplit(':', 1)[-1]}"
        out.append(PromptRow(ident, prompt, meta))
    return out


def _cell_text(value: Any) -> str:
    if isinstance(value, list):  # SORRY-Bench's turns: the first turn is the prompt
        value = value[0] if value else ""
    return "" if value is None else str(value).strip()


def _table_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return list(jsonl_objects(path))
    if suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
        if isinstance(data, dict):  # {"data": [...]}: the one list inside
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataError(f"{path}: expected a JSON list of prompts (or an object holding one list)")
            data = lists[0]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of prompts")
        return [(f"{path}:item {i}", item if isinstance(item, dict) else {"prompt": item})
                for i, item in enumerate(data, start=1)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow's errors are many; the user needs the file and the reason
            raise DataError(f"{path}: not a readable parquet file ({exc})") from None
        return [(f"{path}:row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    delimiter = "\t" if suffix == ".tsv" or "\t" in _header(path) else ","
    with io.StringIO(read_text(path), newline="") as fh:
        try:
            return [(f"{path}:{number}", row) for number, row in enumerate(csv.DictReader(fh, delimiter=delimiter),
                                                                           start=2)]
        except csv.Error as exc:
            raise DataError(f"{path}: not a readable CSV ({exc})") from None


@PROMPT_FORMATS.register("table")
def load_table(path: str | Path) -> list[PromptRow]:
    """Any CSV, TSV, JSON list, JSONL or parquet table of prompts (see :func:`table_prompts` for the columns)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    rows = table_prompts(path.stem, _table_records(path))
    if not rows:
        raise DataError(f"{path}: no prompts")
    return rows


@PROMPT_FORMATS.register("datasets")
def load_datasets_dir(path: str | Path) -> list[PromptRow]:
    """A Hugging Face ``datasets`` directory: one written by ``save_to_disk``, or a folder of data files
    (parquet, CSV, JSON) as a hub download leaves it. With several splits the ``test`` split is read, else
    ``train``, else the only one; the columns are read as :func:`table_prompts` says."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    import datasets

    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(path))
    except Exception as exc:  # datasets raises many kinds; name the directory and the reason
        raise DataError(f"{path}: not a readable datasets directory ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        split = next((s for s in ("test", "train") if s in loaded), splits[0] if len(splits) == 1 else None)
        if split is None:
            raise DataError(f"{path}: splits {', '.join(splits)}; none is test or train (save the one to use)")
        loaded = loaded[split]
    rows = table_prompts(path.name, [(f"{path}:row {i}", row) for i, row in enumerate(loaded, start=1)])
    if not rows:
        raise DataError(f"{path}: no prompts")
    return rows
