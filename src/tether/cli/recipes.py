"""Commands made from the recipe table: ``tether GROUP NAME`` for every recipe of that group.

A :class:`RecipeGroup` lists its group's recipes and builds each command when it is asked for, so
``tether --help`` imports no recipe, and a recipe a plugin declares appears beside tether's own. Every
recipe command takes the same options: ``--config``, ``--set`` (repeatable), ``--out``, ``--resume``, and
``--skip-bad`` where the recipe reads data rows (its config has ``data.skip_bad``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.core import DEFAULT_MARKUP_MODE, TyperGroup
from typer.models import CommandInfo

from tether.cli.common import ConfigOpt, OutOpt, ResumeOpt, SetOpt, SkipBadOpt, build_config, echo_main


class RecipeGroup(TyperGroup):
    """A command group whose commands are its hand-written ones plus the recipes declared for its name, and
    ``aliases``: commands named here for a recipe of another group (``tether guard train`` is ``tether train
    guard``)."""

    aliases: dict[str, str] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        """The hand-written commands, then the group's recipes and aliases."""
        return [*super().list_commands(ctx), *(name for name, _ in _recipes(self.name)), *self.aliases]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """A hand-written command, or the command of the group's recipe (or alias) ``cmd_name``."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        if cmd_name in self.aliases:
            from tether.core.recipes import RECIPES

            return recipe_command(RECIPES.get(self.aliases[cmd_name]), name=cmd_name)
        recipe = _likely_recipe(self.name, cmd_name) or dict(_recipes(self.name)).get(cmd_name)
        return recipe_command(recipe) if recipe is not None else None


def _likely_recipe(group: str | None, name: str) -> Any:
    """The recipe ``tether GROUP NAME`` from the module where tether's recipes usually are
    (``tether.GROUP.NAME`` or ``tether.pipelines.NAME``), imported alone; None when it is not there, and the
    caller lists every recipe (importing every module, seconds) instead. Running one recipe then loads what
    that recipe needs, not the whole package."""
    import importlib

    from tether.core.recipes import RECIPES

    module = name.replace("-", "_")
    for candidate in (f"tether.{group}.{module}", f"tether.pipelines.{module}"):
        try:
            importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            if exc.name is not None and candidate.startswith(exc.name):  # no such module: the next place
                continue
            raise
        entry = RECIPES.loaded(name)
        if entry is not None and entry.item.group == group:
            return entry.item
    return None


def _recipes(group: str | None) -> list[tuple[str, Any]]:
    from tether.core.recipes import RECIPES

    return [(e.name, e.item) for e in RECIPES.entries() if e.item.group == group]


def _reads_rows(config: type[Any]) -> bool:
    """Whether the recipe's ``data`` (a section, or an optional one) has ``skip_bad``: it then takes --skip-bad."""
    from tether.core.config import model_in

    data = config.model_fields.get("data")
    section = model_in(data.annotation) if data is not None else None
    return section is not None and "skip_bad" in section.model_fields


def recipe_command(recipe: Any, *, name: str | None = None) -> Any:
    """The ``tether GROUP NAME`` command of ``recipe`` (a :class:`tether.core.recipes.Recipe`), named ``name``
    (default: the recipe's)."""

    def run(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False) -> None:
        _run(recipe, config, set_, out, resume=resume, skip_bad=False)

    def run_rows(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
                 skip_bad: SkipBadOpt = False) -> None:
        _run(recipe, config, set_, out, resume=resume, skip_bad=skip_bad)

    produces = ", ".join(f"{kind}: {where.__doc__}" for kind, where in recipe.produces.items())
    help_text = (f"{recipe.summary}\n\nExample: {recipe.example}\n\n"
                 + (f"Writes {produces}. " if produces else "")
                 + "Rerun with --resume to continue an interrupted run.")
    info = CommandInfo(name=name or recipe.name, callback=run_rows if _reads_rows(recipe.config) else run,
                       help=help_text, short_help=recipe.summary)
    return typer.main.get_command_from_info(info, pretty_exceptions_short=False,
                                            rich_markup_mode=DEFAULT_MARKUP_MODE)


def _run(recipe: Any, config: str | None, set_: list[str] | None, out: Path | None, *, resume: bool,
         skip_bad: bool) -> None:
    """Build the recipe's config (preset, then ``--set``), run it, print what its ``show`` says."""
    cfg = build_config(recipe.config, config, [*recipe.preset, *(set_ or [])], out, skip_bad=skip_bad)
    result = recipe.run(cfg, resume=resume)
    for line in (recipe.show(cfg, result) if recipe.show is not None else _default_lines(recipe, cfg, result)):
        echo_main(line)


def _default_lines(recipe: Any, cfg: Any, result: dict[str, Any]) -> list[str]:
    """The summary as JSON, then where the outputs are."""
    outputs = "   ".join(f"{kind}: {where(cfg)}" for kind, where in recipe.produces.items())
    return [json.dumps(result, indent=2), f"{outputs}   run: {cfg.out}" if outputs else f"run: {cfg.out}"]
