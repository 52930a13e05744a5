"""The guard protocol, its verdicts, its registry, and loading guards from a file."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.registry import Registry, kind_config

Action = Literal["allow", "block", "cut", "redact"]
ReplyAction = Literal["block", "cut", "redact"]  # what a guard that objects to a reply makes of it
OnOutput = Literal["block", "cut", "redact", "annotate"]  # annotate: labels replies, never changes them


@dataclass(frozen=True)
class Verdict:
    """A guard's answer.

    ``action``: ``allow`` (pass unchanged), ``block`` (refuse the request, or the whole reply), ``cut`` (send
    the reply up to ``span``), ``redact`` (pass ``replacement`` instead: the text, or for an input the
    messages, with the offending spans replaced). ``categories``: what was found; ``score``: the guard's
    confidence where it has one; ``seconds``: how long it took; ``tiers``: for a cascade, the tiers that
    ran.
    """

    allowed: bool
    guard: str
    reason: str = ""
    span: tuple[int, int] | None = None
    seconds: float = 0.0
    action: Action | None = None
    categories: tuple[str, ...] = ()
    score: float | None = None
    tiers: tuple[str, ...] = ()  # a cascade's tiers that ran, in order (the last one decided)
    tier_seconds: tuple[float, ...] = ()  # what each of them took
    replacement: str | list[dict[str, str]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.action is None:  # the action a plain allowed/refused verdict stands for
            object.__setattr__(self, "action", "allow" if self.allowed else "block")

    def as_dict(self) -> dict[str, object]:
        """The audit trail's form (never the replacement, which may hold what was redacted around)."""
        out: dict[str, object] = {"guard": self.guard, "allowed": self.allowed, "action": self.action,
                                  "reason": self.reason, "ms": round(1000 * self.seconds, 3)}
        if self.categories:
            out["categories"] = list(self.categories)
        if self.score is not None:
            out["score"] = round(self.score, 4)
        if self.tiers:
            out["tiers"] = list(self.tiers)
        return out


class Guard(Protocol):
    """Checks a conversation on its way in and a reply on its way out."""

    name: str

    @property
    def on_output(self) -> OnOutput:
        """What a reply it objects to becomes: refused whole, sent up to the offending span, redacted; or, for a
        guard that only labels replies, nothing (``annotate``)."""
        ...

    # Characters of a stream held back for this guard: offending text this long or shorter is caught before
    # any of it is sent. None: the guard judges whole replies only, and streams wait for the end.
    stream_window: int | None
    shadow: bool  # run and recorded, never acted on
    # What it objects to waits for a person (tether serve's review queue) instead of being refused or cut.
    # Optional for guards written before the queue: the gateway reads it with getattr (default False).
    escalate: bool

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Whether the conversation may reach the model (``redact``: the messages to send instead)."""
        ...

    def check_output(self, text: str) -> Verdict:
        """Whether the reply may reach the client (``span``: where the offending text starts and ends)."""
        ...


class GuardConfig(Config):
    """Base of every guard's config: its registered kind, its name, its mode, and ``build``."""

    kind: str = Field(description="registered guard kind: regex, pii, ...")
    name: str | None = Field(None, description="the guard's name in verdicts and the audit trail")
    mode: Literal["enforce", "shadow", "escalate"] = Field("enforce", description="escalate: what it objects to "
                                                           "waits for a reviewer (tether serve's review queue; "
                                                           "streamed replies are cut as in enforce); "
                                                           "shadow: run and record the verdicts, act on none (to "
                                                           "measure a guard on live traffic before it enforces)")

    @abstractmethod
    def build(self) -> Guard:
        """The guard this config describes."""


GUARDS: Registry[type[GuardConfig]] = Registry(
    "guard", description="a config class per kind ({kind: NAME, ...}); its build() makes the Guard")


def load_guards(path: str | None = None, block_input: Sequence[str] = (), block_output: Sequence[str] = (),
                ) -> list[Guard]:
    """The guards of a YAML file (a list of ``{kind: ..., ...}``), then a regex guard of the patterns given.

    Raises:
        UserError: the file is missing, is not a list, or a guard's config is not valid.
    """
    import yaml

    from tether.guard.patterns import RegexGuardConfig

    guards: list[Guard] = []
    if path:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"{file}: no such guards file")
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or []
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserError(f"{file}: not YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, list):
            raise UserError(f"{file}: expected a list of guards ({{kind: regex, output: [...]}}, ...)")
        guards += [kind_config(GUARDS, item).build() for item in raw]
    if block_input or block_output:
        guards.append(RegexGuardConfig(input=list(block_input), output=list(block_output)).build())
    names = [g.name for g in guards]
    if len(set(names)) != len(names):
        raise UserError(f"guards: two guards are named {sorted({n for n in names if names.count(n) > 1})} (give each "
                        "a name: keys choose their guards by name)")
    return guards
