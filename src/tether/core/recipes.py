"""The recipe table: every recipe declared once, in the module that holds it.

A recipe is a typed config and ``run(cfg, *, resume=False) -> summary`` that reads its inputs (a model,
data) and writes its outputs (a model, data, results) into the run directory ``cfg.out``. Declared with
:func:`recipe` on its run function, it appears everywhere a recipe is named:

- ``tether GROUP NAME --config ... --set ... --out ... [--resume]`` (``tether train sft``);
- ``tether config show GROUP/...``: its config class is the config kind ``NAME``;
- ``tether run`` stages (``recipe: NAME``), chained through what it consumes and produces;
- the recipe table in the documentation, and ``tether plugins list recipe``.

A third-party package adds a recipe the same way, in a module listed under the ``tether.plugins`` entry
point (see :mod:`tether.core.registry`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.config import Config
from tether.core.registry import Registry

RunFn = Callable[..., dict[str, Any]]


def output(relative: str) -> Callable[[Any], Path]:
    """A ``produces`` entry: the output lies at ``OUT/relative`` of a finished run (``""``: the run directory)."""

    def where(cfg: Any) -> Path:
        return Path(cfg.out) / relative

    where.__doc__ = f"OUT/{relative}" if relative else "OUT"
    return where


@dataclass(frozen=True)
class Recipe:
    """One row of the recipe table.

    ``consumes`` maps what the recipe reads to the config key that names it (``{"model": "model.path"}``:
    a ``tether run`` stage sets that key to the current model); ``produces`` maps what it writes to where a
    finished run leaves it (``{"model": output("model")}``: the next stage's model). ``preset``: overrides
    applied before the user's (``rloo`` is GRPO with ``loss.advantage=rloo``). ``show``: the lines the command
    prints for a finished run (default: the summary as JSON and where the outputs are).
    """

    name: str
    group: str
    config: type[Config]
    run: RunFn
    summary: str
    example: str
    consumes: Mapping[str, str] = field(default_factory=dict)
    produces: Mapping[str, Callable[[Any], Path]] = field(default_factory=dict)
    preset: tuple[str, ...] = ()
    show: Callable[[Any, dict[str, Any]], list[str]] | None = None

    @property
    def command(self) -> str:
        """The command line that runs it, ``tether GROUP NAME``."""
        return f"tether {self.group} {self.name}"


RECIPES: Registry[Recipe] = Registry(
    "recipe", description="a typed config and run(cfg): tether GROUP NAME, a config kind, a tether run stage")

# Which config class a shipped config's folder holds (tether/configs/<kind>/<name>.yaml): every recipe's, and
# those of the commands that are not recipes (eval, redteam, world, run, ...), registered where they live.
CONFIG_KINDS: Registry[type[Config]] = Registry(
    "config kind", description="a folder of shipped configs -> its config class (tether config show KIND/NAME)")


def recipe(name: str, *, group: str, config: type[Config], summary: str, example: str,
           consumes: Mapping[str, str] | None = None, produces: Mapping[str, Callable[[Any], Path]] | None = None,
           preset: tuple[str, ...] = (), show: Callable[[Any, dict[str, Any]], list[str]] | None = None,
           ) -> Callable[[RunFn], RunFn]:
    """Declare the decorated ``run(cfg, *, resume=False)`` as recipe ``name`` (see :class:`Recipe`); its
    config class becomes the config kind ``name``."""

    def register(run: RunFn) -> RunFn:
        entry = Recipe(name, group, config, run, summary, example, dict(consumes or {}), dict(produces or {}),
                       preset, show)
        RECIPES.register(name, module=run.__module__)(entry)
        CONFIG_KINDS.register(name, module=run.__module__)(config)
        return run

    return register
