"""``tether data``: check and curate datasets before training on them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import typer

from tether.core.errors import ConfigError, DataError

app = typer.Typer(help="Validate and curate datasets: near duplicates, contamination, scorer filters.",
                  no_args_is_help=True)


@app.command()
def validate(
    path: str = typer.Argument(help="JSONL file, .json list, or datasets directory"),
    kind: str = typer.Option("sft", help="sft | preference | unpaired | prompt"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="report every bad row instead of stopping at the first"),
) -> None:
    """Check every row of a dataset against its record format; exit 2 on the first bad row.

    Example: tether data validate pairs.jsonl --kind preference --skip-bad
    """
    from tether.data.io import read_records
    from tether.data.records import RECORD_KINDS

    if kind not in RECORD_KINDS:
        raise DataError(f"--kind {kind!r} is not one of {', '.join(RECORD_KINDS.names())}")
    loaded = read_records(path, RECORD_KINDS.get(kind), skip_bad=skip_bad)
    for message in loaded.skipped:
        typer.echo(f"bad row: {message}", err=True)
    status: Literal["ok", "bad rows"] = "bad rows" if loaded.skipped else "ok"
    typer.echo(f"{path}: {len(loaded.records)} valid {kind} records, {len(loaded.skipped)} bad ({status})")
    if loaded.skipped:
        raise typer.Exit(2)


def _rows(spec: str) -> list[dict[str, Any]]:
    """Every row of a file, datasets directory or builtin:NAME, as it was written (any columns)."""
    from pydantic import BaseModel, ConfigDict

    from tether.data.sources import load_records

    class Row(BaseModel):
        model_config = ConfigDict(extra="allow")

    return [row.model_dump() for row in load_records(spec, Row).records]


def _outputs(out: str) -> tuple[Path, Path, Path]:
    """The kept rows, the removed rows with their reasons, and the report; refused if any exists."""
    kept = Path(out)
    stem = kept.with_suffix("") if kept.suffix == ".jsonl" else kept
    paths = (kept, stem.with_name(stem.name + ".removed.jsonl"), stem.with_name(stem.name + ".report.json"))
    for path in paths:
        if path.exists():
            raise DataError(f"{path} already exists; choose another --out (nothing is overwritten)")
    return paths


def _write(path: str, out: str, rows: list[dict[str, Any]], removed: dict[int, dict[str, Any]],
           report: dict[str, Any]) -> None:
    from tether.data.io import write_jsonl

    kept_path, removed_path, report_path = _outputs(out)
    write_jsonl(removed_path, [{"row": i + 1, **why, "data": rows[i]} for i, why in sorted(removed.items())])
    write_jsonl(kept_path, [row for i, row in enumerate(rows) if i not in removed])
    report = {"input": path, "rows": len(rows), "kept": len(rows) - len(removed), "removed": len(removed),
              **report, "outputs": {"kept": str(kept_path), "removed": str(removed_path)}}
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(f"{path}: {len(rows)} rows, {len(removed)} removed, {len(rows) - len(removed)} kept -> {kept_path} "
               f"(removed rows and why: {removed_path}; report: {report_path})")


@app.command()
def dedup(
    path: str = typer.Argument(help="JSONL file, .json list, datasets directory or builtin:NAME"),
    out: str = typer.Option(..., "--out", help="JSONL of the rows kept (beside it: .removed.jsonl, .report.json)"),
    threshold: float = typer.Option(0.8, help="Jaccard similarity of word shingles at which rows are duplicates"),
    shingle: int = typer.Option(5, min=1, help="words per shingle"),
) -> None:
    """Remove near-duplicate rows (MinHash LSH candidates, exact Jaccard check); the first of a group is kept.

    Example: tether data dedup sft.jsonl --out sft.dedup.jsonl --threshold 0.8
    """
    from tether.data.curation import near_duplicates, row_text

    if not 0 < threshold <= 1:
        raise DataError(f"--threshold {threshold}: expected a similarity in (0, 1]")
    _outputs(out)  # refuse before the work, not after
    rows = _rows(path)
    found = near_duplicates([row_text(r) for r in rows], threshold=threshold, shingle=shingle)
    removed = {i: {"reason": "near duplicate", "of_row": dup[0] + 1, "similarity": dup[1]}
               for i, dup in enumerate(found) if dup is not None}
    _write(path, out, rows, removed, {"method": "minhash-lsh", "threshold": threshold, "shingle": shingle,
                                      "groups": len({why["of_row"] for why in removed.values()})})


@app.command()
def decontaminate(
    path: str = typer.Argument(help="training data: JSONL file, .json list, datasets directory or builtin:NAME"),
    against: list[str] = typer.Option(..., "--against", help="an evaluation set (file, directory or builtin:NAME; "
                                      "any rows: their text is what is matched); repeat for several"),
    out: str = typer.Option(..., "--out", help="JSONL of the rows kept (beside it: .removed.jsonl, .report.json)"),
    n: int = typer.Option(13, min=1, help="words per n-gram; a shorter evaluation item must appear whole"),
) -> None:
    """Remove training rows that share a word n-gram with an evaluation set, and report per set.

    Example: tether data decontaminate sft.jsonl --against builtin:world-prompts --out sft.clean.jsonl
    """
    from tether.data.curation import contamination, row_text

    _outputs(out)
    suites = {spec: [row_text(r) for r in _rows(spec)] for spec in against}
    rows = _rows(path)
    hits = contamination([row_text(r) for r in rows], suites, n=n)
    removed = {i: {"reason": "contaminated", "matches": {s: [j + 1 for j in found] for s, found in hit.items()}}
               for i, hit in enumerate(hits) if hit}
    per_suite = {spec: {"items": len(items),
                        "items_found": len({j for hit in hits for j in hit.get(spec, [])}),
                        "rows_removed": sum(spec in hit for hit in hits)} for spec, items in suites.items()}
    _write(path, out, rows, removed, {"method": "word n-gram overlap", "n": n, "suites": per_suite})


@app.command("filter")
def filter_rows(
    path: str = typer.Argument(help="SFT data (messages; the last assistant turn is scored): JSONL file, .json "
                               "list, datasets directory or builtin:NAME"),
    scorer: str = typer.Option(..., "--scorer", help="a scorer kind (refusal, gold, regex, classifier, judge, "
                               "...) or its config inline: '{kind: classifier, path: DIR}'"),
    out: str = typer.Option(..., "--out", help="JSONL of the rows kept (beside it: .removed.jsonl, .report.json)"),
    drop: Literal["flagged", "unflagged", "none"] = typer.Option(
        "flagged", help="remove the rows the scorer answers yes (flagged) or no (unflagged) for; none: by value only"),
    below: float | None = typer.Option(None, "--below", help="also remove rows whose score value is below this"),
    above: float | None = typer.Option(None, "--above", help="also remove rows whose score value is above this"),
) -> None:
    """Remove demonstrations a scorer or guard objects to; rows it cannot score are kept and counted.

    The report gives what each threshold on the score's value would keep, so the cut can be chosen on it.

    Example: tether data filter sft.jsonl --scorer refusal --drop flagged --out sft.no-refusals.jsonl
    """
    import yaml

    from tether.data.curation import kept_at_thresholds
    from tether.scoring.scorers import Sample, scorer_config

    _outputs(out)  # refuse before loading a scorer's model, not after
    try:
        raw = yaml.safe_load(scorer)
        cfg = scorer_config(raw if isinstance(raw, dict) else {"kind": str(raw)})
    except (yaml.YAMLError, ConfigError) as exc:
        # One line: a YAML error's or a validation error's first line, and the field it names.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise DataError(f"--scorer {scorer!r}: {' '.join(lines[:3])}") from None
    built = cfg.build()
    rows = _rows(path)
    samples = []
    for i, row in enumerate(rows):
        messages = row.get("messages")
        if not (isinstance(messages, list) and messages and isinstance(messages[-1], dict)
                and messages[-1].get("role") == "assistant"):
            raise DataError(f"{path}: row {i + 1}: expected 'messages' ending in an assistant turn (the reply scored)")
        meta = {k: v for k, v in row.items() if k != "messages"}
        samples.append(Sample(str(row.get("id", i)), messages[:-1], str(messages[-1].get("content", "")), meta))
    scores = built.score(samples)
    removed: dict[int, dict[str, Any]] = {}
    for i, score in enumerate(scores):
        if score.status != "ok" or (score.flag is None and score.value is None):
            continue
        reasons = []
        if drop != "none" and score.flag is not None and score.flag == (drop == "flagged"):
            reasons.append(f"{drop} ({score.label})")
        if score.value is not None and below is not None and score.value < below:
            reasons.append(f"value {score.value:.4g} below {below}")
        if score.value is not None and above is not None and score.value > above:
            reasons.append(f"value {score.value:.4g} above {above}")
        if reasons:
            removed[i] = {"reason": "; ".join(reasons), "label": score.label, "flag": score.flag, "value": score.value}
    values = [s.value for s in scores if s.status == "ok" and s.value is not None]
    _write(path, out, rows, removed, {
        "scorer": raw if isinstance(raw, dict) else {"kind": str(raw)}, "drop": drop, "below": below, "above": above,
        "not_scored": sum(s.status != "ok" or (s.flag is None and s.value is None) for s in scores),
        "flagged": sum(s.status == "ok" and s.flag is True for s in scores),
        "labels": dict(sorted(Counter(s.label for s in scores).items())),
        "kept_at_thresholds": kept_at_thresholds(values) if values else None})
