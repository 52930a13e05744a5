"""Read and write datasets: JSONL files and HF ``datasets`` directories.

A malformed row is an error naming the file, line and field; with ``skip_bad=True`` it is
skipped and counted (the caller records the count in its run record), never dropped silently.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from tether.core.errors import DataError

R = TypeVar("R", bound=BaseModel)


@dataclass
class LoadedRecords(Generic[R]):
    """Records read from one source, with what was skipped and where."""

    records: list[R]
    source: str
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" per skipped row

    def __len__(self) -> int:
        return len(self.records)


def describe_validation_error(exc: ValidationError) -> str:
    """``field 'chosen': Field required`` style text for the first problem of a row."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    where = f"field {loc!r}: " if loc else ""
    return f"{where}{first['msg']}"


def parse_rows(rows: Iterable[tuple[str, Any]], record_type: type[R], *, source: str,
               skip_bad: bool = False) -> LoadedRecords[R]:
    """Validate ``(location, row)`` pairs as ``record_type``; ``location`` names file and line."""
    loaded: LoadedRecords[R] = LoadedRecords([], source)
    for where, row in rows:
        try:
            if isinstance(row, UnparsedRow):
                raise DataError(f"{where}: {row.reason}")
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            loaded.records.append(record_type.model_validate(row))
        except ValidationError as exc:
            message = f"{where}: {describe_validation_error(exc)}"
            if not skip_bad:
                raise DataError(message) from None
            loaded.skipped.append(message)
        except DataError as exc:
            if not skip_bad:
                raise
            loaded.skipped.append(str(exc))
    return loaded


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def text_encoding(path: Path) -> str:
    """The encoding to read ``path`` with: what its byte-order mark says (UTF-8, UTF-16, UTF-32), else UTF-8."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return next((encoding for bom, encoding in _BOMS if head.startswith(bom)), "utf-8")


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a text file in its encoding (:func:`text_encoding`); bytes that are not
    text in it are a :class:`DataError` naming the file and line, never a traceback."""
    encoding = text_encoding(path)
    if encoding.startswith("utf-8"):  # line by line from bytes, so a bad byte is reported on its own line
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode(encoding if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    byte = raw[exc.start:exc.start + 1].hex()
                    raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{byte} at column {exc.start + 1}); "
                                    "save the file as UTF-8 (UTF-16 with a byte-order mark is read too)") from None
                if "\x00" in line:
                    raise DataError(f"{path}:{number}: NUL bytes in the text: UTF-16 without a byte-order mark? "
                                    "save the file as UTF-8")
                yield number, line.replace("\r\n", "\n")
        return
    number = 0
    try:
        with path.open(encoding=encoding) as fh:
            for number, line in enumerate(fh, start=1):
                yield number, line
    except UnicodeDecodeError:
        raise DataError(f"{path}: after line {number}: not {encoding} text although it starts with a {encoding} "
                        "byte-order mark") from None


def read_text(path: Path) -> str:
    """The whole of a text file, as :func:`text_lines` reads it."""
    return "".join(line for _, line in text_lines(path))


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    for number, line in text_lines(path):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"{path}:{number}", UnparsedRow(f"invalid JSON ({exc.msg} at column {exc.colno})")


def jsonl_objects(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("FILE:LINE", object)`` for every non-blank line of a JSONL file; a missing file, a line that is
    not JSON or not an object is a :class:`DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    for where, row in _jsonl_rows(path):
        if isinstance(row, UnparsedRow):
            raise DataError(f"{where}: {row.reason}")
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        yield where, row


@dataclass
class UnparsedRow:
    """A line that is not JSON, carried to validation so ``skip_bad`` can count it like any bad row."""

    reason: str


def read_records(path: str | Path, record_type: type[R], *, skip_bad: bool = False) -> LoadedRecords[R]:
    """Records from a ``.jsonl`` file, a ``.json`` list, or a directory saved by ``datasets``.

    Raises:
        DataError: the path is missing, or a row is malformed (unless ``skip_bad``).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset {str(path)!r} does not exist")
    if p.is_dir():
        rows = _dataset_dir_rows(p)
    elif p.suffix == ".json":
        try:
            data = json.loads(read_text(p))
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{p}: a .json dataset must be a list of objects")
        rows = ((f"{p}[{i}]", row) for i, row in enumerate(data))
    else:
        rows = _jsonl_rows(p)
    return parse_rows(rows, record_type, source=str(p), skip_bad=skip_bad)


def _dataset_dir_rows(path: Path) -> Iterable[tuple[str, Any]]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: not a dataset saved with datasets' save_to_disk ({exc})") from None
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise DataError(f"{path}: dataset dict has no 'train' split (splits: {', '.join(loaded)})")
        loaded = loaded["train"]
    assert isinstance(loaded, Dataset)
    for index, row in enumerate(loaded):
        yield f"{path}[row {index}]", row


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict[str, Any]], *,
                only_if_changed: bool = False) -> int:
    """Write records as JSON lines (atomically: to a temporary file, then renamed). Returns the count.
    ``only_if_changed``: leave the file untouched when it already holds exactly these records (a resumed
    pipeline regenerating deterministic data keeps finished stages' inputs as they were)."""
    p = Path(path)
    lines = [json.dumps(record.model_dump(mode="json", exclude_none=True) if isinstance(record, BaseModel)
                        else record, ensure_ascii=False) + "\n" for record in records]
    text = "".join(lines)
    if only_if_changed and p.is_file() and p.read_text(encoding="utf-8") == text:
        return len(lines)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
    return len(lines)


def save_dataset(path: str | Path, records: Sequence[BaseModel]) -> None:
    """Save records as an HF ``datasets`` directory (``load_from_disk`` reads it)."""
    from datasets import Dataset

    Dataset.from_list([r.model_dump(mode="json", exclude_none=True) for r in records]).save_to_disk(str(path))
