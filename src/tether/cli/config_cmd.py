"""``tether config``: list and show shipped configs, resolved and validated."""

from __future__ import annotations

from pathlib import Path

import typer

from tether.cli.common import SetOpt
from tether.core.config import Config, dump_config, load_config, packaged_configs
from tether.core.errors import ConfigError

app = typer.Typer(help="List, show and validate configs.", no_args_is_help=True)

def config_class(kind: str) -> type[Config]:
    """The config class for a folder name such as ``sft`` (the recipe table's, and the other commands');
    an unknown kind is a one-line error listing the known ones."""
    from tether.core.recipes import CONFIG_KINDS

    return CONFIG_KINDS.get(kind)


@app.command("list")
def list_() -> None:
    """Print the name of every shipped config.

    Example: tether config list
    """
    for name in packaged_configs():
        typer.echo(name)


@app.command()
def show(name: str, set_: SetOpt = None,
         kind: str | None = typer.Option(None,
                                         help="config kind (sft, ...) for a file outside tether/configs")) -> None:
    """Validate a config (shipped name or file) and print it with every default filled in.

    Example: tether config show sft/demo --set optim.lr=3e-4
    """
    # A shipped name's folder is its kind (sft/demo -> sft); a file outside the package needs --kind.
    cfg_kind = kind if kind is not None or Path(name).is_file() else Path(name).parts[0]
    if cfg_kind is None:
        from tether.core.recipes import CONFIG_KINDS

        raise ConfigError(f"{name}: pass --kind (one of {', '.join(CONFIG_KINDS.names())}) for a config file")
    typer.echo(dump_config(load_config(config_class(cfg_kind), name, set_ or [])), nl=False)
