"""Guard hooks: where a guard stands between the client and the model.

A guard looks at the conversation before the model (``check_input``) and at the reply after it
(``check_output``); a verdict blocks, or cuts the reply at the first offending span. A reply that is not
streamed is checked whole before a byte of it is sent. A streamed reply is checked as it is produced
(:class:`OutputStream`): each time it grows, every guard checks the text so far, and only the text more
than the guards' ``stream_window`` characters behind its end is sent, so offending text up to that long
is cut before any of it reaches the client; at the end every guard checks the whole reply before the
rest is sent. ``stream: true`` therefore never skips a guard, and a guard that can only judge whole
replies (``stream_window`` None) makes the stream wait for the whole reply. What a client may have seen
of offending text is measured, not assumed: a verdict reached after part of its span was sent records
how many characters were (``exposed``), and the audit trail keeps it.

Guards are registered in :data:`GUARDS` (a config class per kind, like every extension point);
:class:`RegexGuard` is the one shipped with the gateway; the guards of :mod:`tether.guard` (classifiers,
cascades) plug in the same way.
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
    # Characters of a stream held back for this guard: offending text this long or shorter is caught before
    # any of it is sent. None: the guard judges whole replies only, and streams wait for the end.
    stream_window: int | None

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
    stream_window: int = Field(256, ge=0, description="most characters a stream is held back for these patterns: "
                               "the longest match any of them can make, up to this (a match that can be longer, "
                               "such as a.*b, may be partly sent before it completes; the audit row counts it)")

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
        self.stream_window: int | None = max((min(longest_match(p), cfg.stream_window) for p in self._output),
                                             default=0)

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


def longest_match(pattern: re.Pattern[str]) -> int:
    """The most characters ``pattern`` can match (a large number where it is unbounded)."""
    try:
        from re import _parser  # type: ignore[attr-defined]  # the stdlib's own width analysis

        return int(_parser.parse(pattern.pattern, pattern.flags).getwidth()[1])
    except Exception:  # a Python whose parser moved: assume the worst, the caller caps it
        return 1 << 30


class OutputStream:
    """The output hook on a streamed reply (see the module): what of the reply so far may be sent now.

    ``holdback``: characters held back besides the guards' windows (the gateway holds back the longest stop
    string but one, which the model may be in the middle of writing).
    """

    def __init__(self, guards: Sequence[Guard], *, holdback: int = 0) -> None:
        self.guards = list(guards)
        windows = [g.stream_window for g in self.guards]
        self.buffered = any(w is None for w in windows)  # some guard judges whole replies only
        self.window = max((w for w in windows if w is not None), default=0) + holdback
        self.sent = ""                       # what the client has been sent
        self.verdicts: list[Verdict] = []    # the final checks, and the verdict that ended the stream
        self.blocked: Verdict | None = None
        self.exposed = 0                     # characters of the offending span (or reply) sent before it was caught
        self.checks = 0                      # guard checks run on the stream
        self.diverged = False                # the final reply did not begin with what was sent

    def feed(self, text: str) -> str:
        """The reply so far in; the piece of it that may be sent now ('' for none)."""
        if self.blocked is not None:
            return ""
        blocked = self._check(text, keep=False)
        if blocked is not None:
            return blocked
        if self.buffered:
            return ""
        end = len(text) - self.window
        if end <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece = text[len(self.sent):end]
        self.sent += piece
        return piece

    def finish(self, text: str) -> str:
        """The whole reply in, once every guard has checked all of it; the rest of it to send."""
        if self.blocked is not None:
            return ""
        blocked = self._check(text, keep=True)
        if blocked is not None:
            return blocked
        if not text.startswith(self.sent):
            # The final text differs from what was streamed (a decoding that changed earlier text): the client
            # keeps what it has; nothing is sent that would not join onto it.
            self.diverged = True
            return ""
        piece = text[len(self.sent):]
        self.sent += piece
        return piece

    def _check(self, text: str, *, keep: bool) -> str | None:
        """Every guard on ``text`` (their verdicts kept when ``keep``); the piece to send up to a block, or None."""
        for guard in self.guards:
            self.checks += 1
            verdict = guard.check_output(text)
            if keep:
                self.verdicts.append(verdict)
            if not verdict.allowed:
                return self._block(guard, verdict, text)
        return None

    def _block(self, guard: Guard, verdict: Verdict, text: str) -> str:
        self.blocked = verdict
        if verdict not in self.verdicts:
            self.verdicts.append(verdict)
        start, stop = verdict.span if verdict.span else (0, len(text))
        self.exposed = max(0, min(len(self.sent), stop) - start)
        cut = start if verdict.span and guard.on_output == "cut" else 0
        piece = text[len(self.sent):cut] if cut > len(self.sent) and text.startswith(self.sent) else ""
        self.sent += piece
        return piece


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
