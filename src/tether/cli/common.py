"""Options shared by commands, and the config loading every command does the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

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
