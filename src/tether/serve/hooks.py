"""Guard hooks: where a guard stands between the client and the model.

A guard looks at the conversation before the model (``check_input``) and at the reply after it
(``check_output``); a verdict blocks, or cuts the reply at the first offending span. The gateway runs the
output hook on the whole reply before a byte of it is sent, streamed or not, so ``stream: true`` never
skips a guard: a cut stream ends at the cut with ``finish_reason: content_filter``. Guards are registered
in :data:`GUARDS` (a config class per kind, like every extension point); :class:`RegexGuard` is the one
shipped with the gateway; the guards of :mod:`tether.guard` (classifiers, cascades) plug in the same way.
"""

from __future__ import annotations

import re
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.registry import Registry


@dataclass(frozen=True)
class Verdict:
    """A guard's answer: allowed or not, why, where in the text (``span``), and how long it took."""

    allowed: bool
    guard: str
    reason: str = ""
    span: tuple[int, int] | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """The audit trail's form."""
        return {"guard": self.guard, "allowed": self.allowed, "reason": self.reason,
                "ms": round(1000 * self.seconds, 3)}


class Guard(Protocol):
    """Checks a conversation on its way in and a reply on its way out."""

    name: str
    on_output: Literal["block", "cut"]  # a blocked reply is refused whole, or sent up to the offending span

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Whether the conversation may reach the model."""
        ...

    def check_output(self, text: str) -> Verdict:
        """Whether the reply may reach the client (``span``: where the offending text starts and ends)."""
        ...


class GuardConfig(Config):
    """Base of every guard's config: its registered kind, its name, and ``build``."""

    kind: str = Field(description="registered guard kind: regex, ...")
    name: str | None = Field(None, description="the guard's name in verdicts and the audit trail")

    @abstractmethod
    def build(self) -> Guard:
        """The guard this config describes."""


GUARDS: Registry[type[GuardConfig]] = Registry(
    "guard", description="a config class per kind ({kind: NAME, ...}); its build() makes the Guard")


@GUARDS.register("regex")
class RegexGuardConfig(GuardConfig):
    """Regular expressions the conversation or the reply must not match (case-insensitive)."""

    kind: Literal["regex"] = "regex"
    input: list[str] = Field(default_factory=list, description="patterns that block a request")
    output: list[str] = Field(default_factory=list, description="patterns that block or cut a reply")
    on_output: Literal["block", "cut"] = Field("cut", description="cut: send the reply up to the match (finish "
                                               "reason content_filter); block: refuse it whole")

    def build(self) -> Guard:
        """A :class:`RegexGuard`."""
        return RegexGuard(self)


class RegexGuard:
    """The shipped guard: deny-list patterns on input and output."""

    def __init__(self, cfg: RegexGuardConfig) -> None:
        self.name, self.on_output = cfg.name or "regex", cfg.on_output
        try:
            self._input = [re.compile(p, re.IGNORECASE) for p in cfg.input]
            self._output = [re.compile(p, re.IGNORECASE) for p in cfg.output]
        except re.error as exc:
            raise UserError(f"guard {self.name!r}: bad pattern {exc.pattern!r}: {exc}") from None

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Blocked when any message matches an input pattern."""
        start = time.perf_counter()
        for message in messages:
            for pattern in self._input:
                if pattern.search(message.get("content", "")):
                    return Verdict(False, self.name, f"input matches {pattern.pattern!r}",
                                   seconds=time.perf_counter() - start)
        return Verdict(True, self.name, seconds=time.perf_counter() - start)

    def check_output(self, text: str) -> Verdict:
        """Blocked at the earliest match of any output pattern."""
        start = time.perf_counter()
        hits = [m for m in (p.search(text) for p in self._output) if m]
        if not hits:
            return Verdict(True, self.name, seconds=time.perf_counter() - start)
        first = min(hits, key=lambda m: m.start())
        return Verdict(False, self.name, f"output matches {first.re.pattern!r}", (first.start(), first.end()),
                       seconds=time.perf_counter() - start)


def load_guards(path: str | None = None, block_input: Sequence[str] = (), block_output: Sequence[str] = (),
                ) -> list[Guard]:
    """The guards of a YAML file (a list of ``{kind: ..., ...}``), then a regex guard of the patterns given."""
    from pathlib import Path

    import yaml

    from tether.core.registry import kind_config

    guards: list[Guard] = []
    if path:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"{file}: no such guards file")
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or []
        if not isinstance(raw, list):
            raise UserError(f"{file}: expected a list of guards ({{kind: regex, output: [...]}}, ...)")
        guards += [kind_config(GUARDS, item).build() for item in raw]
    if block_input or block_output:
        guards.append(RegexGuardConfig(input=list(block_input), output=list(block_output)).build())
    return guards
