"""MkDocs hook: the tables that must never go stale are made from tether's registries when the site is built.

A page asks for one with a marker on a line of its own:

- ``<!-- tether:recipes -->``: the recipe table (command, what it does, what it consumes and produces);
- ``<!-- tether:extension-points -->``: every registry with its entries and the modules that registered them;
- ``<!-- tether:preference-losses -->``: every DPO-family variant with its knobs, defaults and descriptions.
"""

from __future__ import annotations

from typing import Any


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def recipe_table() -> str:
    """The recipe table as Markdown."""
    from tether.core.recipes import RECIPES

    rows = ["| command | what it does | consumes (config key) | produces | config, run |", "|---|---|---|---|---|"]
    for entry in sorted(RECIPES.entries(), key=lambda e: (e.item.group, e.name)):
        recipe = entry.item
        consumes = ", ".join(f"{kind} (`{key}`)" for kind, key in recipe.consumes.items()) or "—"
        produces = ", ".join(f"{kind} (`{where.__doc__}`)" for kind, where in recipe.produces.items()) or "—"
        preset = f" (presets `{' '.join(recipe.preset)}`)" if recipe.preset else ""
        rows.append(f"| `{recipe.command}`{preset} | {_cell(recipe.summary)} | {consumes} | {produces} | "
                    f"`{recipe.config.__module__}.{recipe.config.__name__}`, `{entry.module}.run` |")
    return "\n".join(rows)


def extension_points() -> str:
    """Every registry and its entries as Markdown."""
    from tether.core.registry import registries

    rows = ["| extension point | what an entry is | entries (registered by) |", "|---|---|---|"]
    for registry in registries():
        by_module: dict[str, list[str]] = {}
        for entry in registry.entries():
            by_module.setdefault(entry.module, []).append(f"`{entry.name}`")
        entries = "; ".join(f"{', '.join(names)} ({module})" for module, names in by_module.items())
        rows.append(f"| {registry.kind} | {_cell(registry.description)} | {entries} |")
    return "\n".join(rows)


def preference_losses() -> str:
    """Every DPO-family variant with its knobs as Markdown."""
    from tether.losses.preference import PREFERENCE_LOSSES

    rows = ["| `loss.variant` | needs a reference | pairs or single completions | knobs (default: description) |",
            "|---|---|---|---|"]
    for entry in PREFERENCE_LOSSES.entries():
        kind = entry.item
        knobs = "<br>".join(f"`{name}` ({field.default!r}): {_cell(field.description or '')}"
                            for name, field in kind.config.model_fields.items() if name != "variant")
        rows.append(f"| `{entry.name}` | {'yes' if kind.needs_reference else 'no'} | "
                    f"{'single (KTO-style)' if kind.unpaired else 'pairs'} | {knobs} |")
    return "\n".join(rows)


MARKERS = {"<!-- tether:recipes -->": recipe_table, "<!-- tether:extension-points -->": extension_points,
           "<!-- tether:preference-losses -->": preference_losses}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each marker with its table."""
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
