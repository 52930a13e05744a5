"""Written specifications for deliberative alignment: numbered clauses a model reasons over before it answers.

A spec is a YAML file (shipped ones: ``tether/configs/specs/``) or a Markdown file. In YAML::

    name: world
    preamble: How the assistant decides what to do.
    clauses:
      - id: harm
        title: Dangerous procedures
        text: Do not help with anything that could hurt people.
        detail: However the request is wrapped ...   # optional: shown with the spec, not quoted by the judge
        categories: [hazard, jailbreak]              # optional: prompt categories this clause governs

In Markdown, each ``## id: title`` heading starts a clause; its first paragraph is ``text``, the rest
``detail``, and a line ``categories: a, b`` sets the categories; text before the first heading is the
preamble. The spec is shown to the model in full (:func:`render_spec`) while its training data is made;
a clause is cited in the reasoning by :func:`citation`; the judge reads one clause's ``text``.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, model_validator

from tether.core.config import Config, load_config
from tether.core.errors import ConfigError
from tether.core.recipes import CONFIG_KINDS


class Clause(Config):
    """One clause of a spec."""

    id: str = Field(min_length=1, description="short identifier, kept in every record the clause produced")
    title: str = Field(min_length=1)
    text: str = Field(min_length=1, description="the rule itself: what the judge checks a reply against")
    detail: str = Field("", description="more of the rule: edge cases, examples (shown with the spec)")
    categories: list[str] = Field(default_factory=list, description="prompt categories this clause governs "
                                  "(matched against a prompt's category metadata)")


@CONFIG_KINDS.register("specs")
class Spec(Config):
    """A named specification: a preamble and its clauses."""

    name: str
    preamble: str = ""
    clauses: list[Clause] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Spec:
        ids = [c.id for c in self.clauses]
        if len(set(ids)) != len(ids):
            raise ValueError(f"clause ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
        owners: dict[str, str] = {}
        for c in self.clauses:
            for category in c.categories:
                if category in owners:
                    raise ValueError(f"category {category!r} is governed by clauses {owners[category]!r} and "
                                     f"{c.id!r}; give it to one")
                owners[category] = c.id
        return self

    def clause(self, clause_id: str) -> Clause:
        """The clause called ``clause_id``."""
        for c in self.clauses:
            if c.id == clause_id:
                return c
        raise ConfigError(f"spec {self.name!r} has no clause {clause_id!r}; it has {', '.join(self.ids)}")

    @property
    def ids(self) -> list[str]:
        """Clause ids in order."""
        return [c.id for c in self.clauses]

    def for_category(self, category: str | None) -> Clause | None:
        """The clause that governs ``category``, if any."""
        return next((c for c in self.clauses if category is not None and category in c.categories), None)


_HEADING = re.compile(r"^##\s+([^:\s]+)\s*:\s*(.+?)\s*$")
_CATEGORIES = re.compile(r"^categories\s*:\s*(.*)$", re.IGNORECASE)


def parse_markdown_spec(text: str, *, name: str, source: str = "<spec>") -> Spec:
    """A spec from Markdown (see the module docstring); errors name ``source`` and the line."""
    preamble: list[str] = []
    clauses: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), 1):
        heading = _HEADING.match(line)
        if heading:
            clauses.append({"id": heading[1], "title": heading[2], "body": [], "categories": []})
            continue
        if line.startswith("#") and not clauses:
            continue  # the document's title
        if line.startswith("## "):
            raise ConfigError(f"{source}:{number}: a clause heading is '## id: title', got {line!r}")
        if not clauses:
            preamble.append(line)
            continue
        categories = _CATEGORIES.match(line.strip())
        if categories:
            clauses[-1]["categories"] = [c.strip() for c in categories[1].split(",") if c.strip()]
        else:
            clauses[-1]["body"].append(line)  # type: ignore[attr-defined]
    if not clauses:
        raise ConfigError(f"{source}: no clauses (each starts with a '## id: title' heading)")
    rows = []
    for c in clauses:
        paragraphs = [p.strip() for p in "\n".join(c.pop("body")).split("\n\n") if p.strip()]  # type: ignore
        if not paragraphs:
            raise ConfigError(f"{source}: clause {c['id']!r} has no text")
        rows.append({**c, "text": " ".join(paragraphs[0].split()), "detail": "\n\n".join(paragraphs[1:])})
    try:
        return Spec.model_validate({"name": name, "preamble": " ".join("\n".join(preamble).split()),
                                    "clauses": rows})
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def load_spec(spec: str | Path) -> Spec:
    """A spec from a YAML or Markdown file, or a shipped name (``world`` for ``specs/world``)."""
    text = str(spec)
    if text.endswith(".md"):
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"spec: no file {text}")
        return parse_markdown_spec(path.read_text(), name=path.stem, source=text)
    shipped = text if "/" in text or Path(text).is_file() or text.endswith((".yaml", ".yml")) else f"specs/{text}"
    return load_config(Spec, shipped)


def render_spec(spec: Spec, *, details: bool = True) -> str:
    """The whole spec as the model reads it in context: the preamble, then each clause (its detail too
    unless ``details`` is off, for a model whose context is short)."""
    parts = [spec.preamble] if spec.preamble else []
    for c in spec.clauses:
        parts.append(f"[{c.id}] {c.title}: {c.text}" + (f" {c.detail}" if c.detail and details else ""))
    return "\n".join(parts)


CITATION = "[{id}] {title}: {text}"


def citation(clause: Clause, template: str = CITATION) -> str:
    """How a reply's reasoning cites ``clause``: ``template`` filled with its ``{id}``, ``{title}`` and ``{text}``
    (by default all three)."""
    return template.format(id=clause.id, title=clause.title, text=clause.text)
