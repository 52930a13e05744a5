"""``tether plugins``: every extension point and what is registered in it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Extension points (registries) and their entries: tether's own and the plugins'.",
                  no_args_is_help=True)


@app.command("list")
def list_(
    kind: Annotated[str | None,
                    typer.Argument(help="one extension point (e.g. 'preference loss'); default: all")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Print every extension point with each registered name and the module that registered it.

    Example: tether plugins list 'preference loss'
    """
    from tether.core.errors import UserError
    from tether.core.registry import registries

    found = [r for r in registries() if kind is None or r.kind == kind]
    if not found:
        raise UserError(f"no extension point {kind!r}; known: {', '.join(r.kind for r in registries())}")
    if as_json:
        typer.echo(json.dumps({r.kind: {"description": r.description,
                                        "entries": {e.name: e.module for e in r.entries()}} for r in found}, indent=2))
        return
    for registry in found:
        entries = registry.entries()
        typer.echo(f"{registry.kind} ({len(entries)}): {registry.description}")
        width = max((len(e.name) for e in entries), default=0) + 2
        for entry in entries:
            typer.echo(f"  {entry.name:{width}} {entry.module}")
