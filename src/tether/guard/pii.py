"""Personal data and secrets: finding them, and redacting them.

:func:`find_pii` is a pure function from text to findings (kind, start, end): emails; phone numbers
(international ``+CC ...`` and the common grouped forms); payment card numbers of 13 to 19 digits, spaces
or dashes between groups allowed, kept only when they pass the Luhn check (so order numbers and the
like are not cards); and secrets by their published shapes: AWS access key ids, GitHub, Slack, OpenAI-
style ``sk-``, Google API keys, tether's own ``tk-`` keys, JSON Web Tokens and PEM private-key blocks.
Where findings overlap the earlier, then longer one wins. :func:`redact` replaces each with ``[KIND]``.

The ``pii`` guard (:class:`PiiGuardConfig`) applies them to inputs and outputs, redacting by default.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from tether.guard.base import GUARDS, Guard, GuardConfig, ReplyAction, Verdict

PiiKind = Literal["email", "phone", "card", "aws_key", "github_token", "slack_token", "openai_key", "google_key",
                  "tether_key", "jwt", "private_key"]

_PATTERNS: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "aws_key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b"),
    "slack_token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "openai_key": re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),
    "google_key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "tether_key": re.compile(r"\btk-[A-Za-z0-9_-]{43}\b"),
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    # Groups of four with one separator throughout (16 to 19 digits), Amex's 4-6-5, or 13 to 19 digits in a
    # row; the Luhn check decides. Grouped forms keep two numbers side by side from reading as one.
    "card": re.compile(r"(?<![\d-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3}(?!\d))?|\d{4}([ -]?)\d{6}\2\d{5}"
                       r"|\d{13,19})(?![\d])"),
    # +CC then groups, or (area) / area- groups: at least 9 digits in all (checked below).
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}(?!\w)"),
}
ALL_KINDS: tuple[str, ...] = tuple(_PATTERNS)


@dataclass(frozen=True)
class Finding:
    """One piece of personal data or one secret: its kind and where it is."""

    kind: str
    start: int
    end: int


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` pass the Luhn checksum (what every payment card number carries)."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def find_pii(text: str, kinds: Sequence[str] = ALL_KINDS) -> list[Finding]:
    """Every finding of ``kinds`` in ``text``, in order, none overlapping (the earlier, then longer, wins)."""
    found: list[Finding] = []
    for kind in kinds:
        for match in _PATTERNS[kind].finditer(text):
            value = match.group()
            digits = sum(c.isdigit() for c in value)
            if kind == "card" and not (13 <= digits <= 19 and luhn_valid(value)):
                continue
            if kind == "phone" and digits < 9:
                continue
            found.append(Finding(kind, match.start(), match.end()))
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for finding in found:
        if not kept or finding.start >= kept[-1].end:
            kept.append(finding)
    return kept


def redact(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with each finding replaced by ``[KIND]`` (findings in order, not overlapping)."""
    out, at = [], 0
    for finding in findings:
        out += [text[at:finding.start], f"[{finding.kind.upper()}]"]
        at = finding.end
    return "".join(out) + text[at:]


@GUARDS.register("pii")
class PiiGuardConfig(GuardConfig):
    """Personal data and secrets in requests and replies: redacted by default, or blocked."""

    kind: Literal["pii"] = "pii"
    detect: list[PiiKind] = Field(default_factory=lambda: list(ALL_KINDS),  # type: ignore[arg-type]
                                  description="what to look for (default: all): " + ", ".join(ALL_KINDS))
    on_input: Literal["redact", "block", "allow"] = Field("redact", description="a request carrying any: redact "
                                                          "it before the model sees it, refuse it, or let it through")
    on_output: ReplyAction = Field("redact", description="a reply carrying any: redact, cut at the first, or refuse")

    def build(self) -> Guard:
        """A :class:`PiiGuard`."""
        return PiiGuard(self)


class PiiGuard:
    """The ``pii`` guard (see the module)."""

    def __init__(self, cfg: PiiGuardConfig) -> None:
        self.name, self.on_output, self.shadow = cfg.name or "pii", cfg.on_output, cfg.mode == "shadow"
        self.escalate = cfg.mode == "escalate"
        self.kinds, self.on_input = tuple(cfg.detect), cfg.on_input
        # Redaction rewrites the text around a finding: a stream waits for the whole reply. Cutting needs the
        # longest finding's reach; a private key block can be long, so streams cut at most this far back.
        self.stream_window: int | None = None if cfg.on_output == "redact" else 4096

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Redact (or block) personal data and secrets in any message."""
        start = time.perf_counter()
        found = {i: find_pii(m.get("content", ""), self.kinds) for i, m in enumerate(messages)}
        kinds = sorted({f.kind for fs in found.values() for f in fs})
        if not kinds or self.on_input == "allow":
            return Verdict(True, self.name, seconds=time.perf_counter() - start, categories=tuple(kinds))
        if self.on_input == "block":
            return Verdict(False, self.name, f"request carries {', '.join(kinds)}", categories=tuple(kinds),
                           seconds=time.perf_counter() - start)
        rewritten = [{**m, "content": redact(m.get("content", ""), found[i])} for i, m in enumerate(messages)]
        return Verdict(False, self.name, f"redacted {', '.join(kinds)}", action="redact", categories=tuple(kinds),
                       replacement=rewritten, seconds=time.perf_counter() - start)

    def check_output(self, text: str) -> Verdict:
        """Redact, cut at or block personal data and secrets in the reply."""
        start = time.perf_counter()
        found = find_pii(text, self.kinds)
        if not found:
            return Verdict(True, self.name, seconds=time.perf_counter() - start)
        kinds = tuple(sorted({f.kind for f in found}))
        return Verdict(False, self.name, f"reply carries {', '.join(kinds)}", (found[0].start, found[0].end),
                       action=self.on_output, categories=kinds, seconds=time.perf_counter() - start,
                       replacement=redact(text, found) if self.on_output == "redact" else None)
