"""Deny-list patterns: regular expressions a conversation or a reply must not match."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from tether.core.errors import UserError
from tether.guard.base import GUARDS, Guard, GuardConfig, ReplyAction, Verdict


@GUARDS.register("regex")
class RegexGuardConfig(GuardConfig):
    """Regular expressions the conversation or the reply must not match (case-insensitive)."""

    kind: Literal["regex"] = "regex"
    input: list[str] = Field(default_factory=list, description="patterns that block a request")
    output: list[str] = Field(default_factory=list, description="patterns that block, cut or redact a reply")
    on_output: ReplyAction = Field("cut", description="cut: send the reply up to the match (finish reason "
                                "content_filter); block: refuse it whole; redact: replace each match with "
                                "[REDACTED] and send the rest")
    stream_window: int = Field(256, ge=0, description="most characters a stream is held back for these patterns: "
                               "the longest match any of them can make, up to this (a match that can be longer, "
                               "such as a.*b, may be partly sent before it completes; the audit row counts it)")

    def build(self) -> Guard:
        """A :class:`RegexGuard`."""
        return RegexGuard(self)


class RegexGuard:
    """Deny-list patterns on input and output."""

    def __init__(self, cfg: RegexGuardConfig) -> None:
        self.name, self.on_output, self.shadow = cfg.name or "regex", cfg.on_output, cfg.mode == "shadow"
        self.escalate = cfg.mode == "escalate"
        try:
            self._input = [re.compile(p, re.IGNORECASE) for p in cfg.input]
            self._output = [re.compile(p, re.IGNORECASE) for p in cfg.output]
        except re.error as exc:
            raise UserError(f"guard {self.name!r}: bad pattern {exc.pattern!r}: {exc}") from None
        # A redaction changes the text around the match: streams wait for the whole reply.
        self.stream_window: int | None = None if cfg.on_output == "redact" else max(
            (min(longest_match(p), cfg.stream_window) for p in self._output), default=0)

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
        """Blocked, cut or redacted at the earliest match of any output pattern."""
        start = time.perf_counter()
        hits = [m for m in (p.search(text) for p in self._output) if m]
        if not hits:
            return Verdict(True, self.name, seconds=time.perf_counter() - start)
        first = min(hits, key=lambda m: m.start())
        replacement = None
        if self.on_output == "redact":
            replacement = text
            for pattern in self._output:
                replacement = pattern.sub("[REDACTED]", replacement)
        return Verdict(False, self.name, f"output matches {first.re.pattern!r}", (first.start(), first.end()),
                       seconds=time.perf_counter() - start, action=self.on_output, replacement=replacement)


def longest_match(pattern: re.Pattern[str]) -> int:
    """The most characters ``pattern`` can match (a large number where it is unbounded)."""
    try:
        from re import _parser  # type: ignore[attr-defined]  # the stdlib's own width analysis

        return int(_parser.parse(pattern.pattern, pattern.flags).getwidth()[1])
    except Exception:  # a Python whose parser moved: assume the worst, the caller caps it
        return 1 << 30
