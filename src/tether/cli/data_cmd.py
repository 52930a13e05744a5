"""``tether data``: check datasets before training on them."""

from __future__ import annotations

from typing import Literal

import typer

from tether.core.errors import DataError

app = typer.Typer(help="Validate datasets.", no_args_is_help=True)


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
