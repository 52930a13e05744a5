"""Options shared by commands, and the config loading every command does the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tether.core.config import Config, load_config

C = TypeVar("C", bound=Config)

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML file, or a shipped config name (tether config list)")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a config key: --set optim.lr=1e-5 (repeatable)")
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="run directory (overrides the config's out)")]
SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="skip malformed data rows (counted in record.json) instead of failing")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")]


def build_config(cls: type[C], config: str | None, overrides: list[str] | None, out: Path | None = None,
                 *, skip_bad: bool = False) -> C:
    """The command's typed config: file, then ``--set`` overrides, then ``--out`` and ``--skip-bad``."""
    extra = list(overrides or [])
    if out is not None:
        extra.append(f"out={out}")
    if skip_bad:
        extra.append("data.skip_bad=true")
    return load_config(cls, config, extra)


def echo_main(text: str) -> None:
    """Print on the main process only (under torchrun / accelerate launch every rank runs the command)."""
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(text)


FailAboveOpt = Annotated[list[str] | None, typer.Option(
    "--fail-above", help="exit 1 when a metric is above a bar: NAME=VALUE (e.g. asr=0.05), repeatable")]
FailBelowOpt = Annotated[list[str] | None, typer.Option(
    "--fail-below", help="exit 1 when a metric is below a bar: NAME=VALUE, repeatable")]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="also write the gates as a JUnit XML report here")]


def parse_gate_options(above: list[str] | None, below: list[str] | None, *,
                       aliases: dict[str, str] | None = None) -> list[Any]:
    """``--fail-above`` / ``--fail-below`` as gates, checked for form before the run starts."""
    from tether.core.gates import parse_gates

    return parse_gates(above or [], below or [], aliases=aliases)


def apply_gates(doc: dict, gates: list[Any], junit: Path | None, *, suite: str) -> None:
    """Check the gates against the run's metrics, print a line per gate, write ``--junit``, and exit 1
    when any gate fails (the model missed a bar: not a usage error)."""
    if not gates and junit is None:
        return
    from tether.core.gates import check_gates, junit_xml

    results = check_gates(gates, doc["metrics"])
    for result in results:
        typer.echo(result.describe())
    if junit is not None:
        junit_xml(results, junit, suite=suite, metrics=doc["metrics"])
        typer.echo(f"junit: {junit}")
    if any(not r.passed for r in results):
        raise typer.Exit(1)
