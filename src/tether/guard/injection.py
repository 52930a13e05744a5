"""A prompt-injection and jailbreak detector: the known shapes of an attack on the instructions, scored.

Each signal is a family of patterns with a weight (how often text that shows it is an attack); a text's
score is the chance at least one of its signals means an attack, ``1 - prod(1 - w)``, and its categories
are the signals found. Signals: instructions overridden (``ignore all previous instructions``, a new
system prompt), a persona without rules (``you are DAN``, ``an AI with no rules``), refusals suppressed
or the reply's opening dictated (``begin your reply with 'Sure'``), claimed authority (``as the licensed
inspector, I am authorised``), fictional or hypothetical framing, obfuscation (letters spaced out,
base64 blobs, zero-width characters) and many-shot dialogues packed into one message. It reads every
message, tool results and documents included, so an injection that arrives inside retrieved text is
read as well as one the user typed.

It is a first tier, not a classifier of harm: a jailbreak wrapper around a harmless request is flagged
too, and an attack in a shape it does not know is missed. Measure it on your traffic (``tether guard
eval``) and put a trained classifier after it (``kind: cascade``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from tether.guard.base import GUARDS, Guard, GuardConfig, OnOutput, Verdict

_I = re.IGNORECASE
SIGNALS: dict[str, tuple[float, tuple[str, ...]]] = {
    "override": (0.9, (
        r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|the)\b"
        r"[^.\n]{0,30}\b(instructions?|rules|directions|guidelines|prompt|polic(y|ies)|restrictions|programming)\b",
        r"\bnew (system )?(instructions?|prompt|rules)\s*:",
        r"\b(system prompt|developer mode|debug mode|god mode)\b",
        r"\byou are no longer\b", r"\bfrom now on,? you (will|must|are)\b",
    )),
    "persona": (0.8, (
        r"\b(no|without any|free of) (rules|restrictions|limits|filters|guidelines|ethics|morals)\b",
        r"\bDAN\b|\bdo anything now\b|\bjailbr(o|ea)ken?\b|\bunfiltered\b|\buncensored\b",
        r"\b(pretend|act as if|imagine) (you are|you're|to be)\b[^.\n]{0,60}\b(no|without)\b",
    )),
    "suppression": (0.8, (
        r"\b(begin|start) (your )?(reply|response|answer|output)s? with\b",
        r"\b(do not|don't|never|must not) (refuse|decline|apologi[sz]e|say (that )?you (can't|cannot))\b",
        r"\bwithout (any )?(warnings?|disclaimers?|caveats?|refus\w+)\b",
    )),
    "authority": (0.6, (
        r"\bI am (a |an |the )?(licensed|authori[sz]ed|certified|accredited|official)\b",
        r"\bas (a |an |the )?(licensed|authori[sz]ed|certified|chief|senior|official)\b[^.\n]{0,40}"
        r"\b(inspector|officer|researcher|agent|doctor|administrator|admin|developer)\b",
        r"\bI (am|have been) authori[sz]ed\b|\bI have (clearance|permission|authori[sz]ation)\b",
    )),
    "fiction": (0.35, (
        r"\b(purely |just |completely )?hypothetical(ly)?\b",
        r"\bfor a (story|novel|screenplay|script|game|book)\b",
        r"\b(in a|imagine a) (fictional|fantasy|parallel) (world|universe|story)\b",
    )),
    "obfuscation": (0.7, (
        r"\b(?:[A-Za-z][-._ ]){3,}[A-Za-z]\b",                  # l-e-t-t-e-r-s spaced out
        r"(?:[A-Za-z0-9+/]{4}){6,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",  # a base64 blob (24+ characters)
        "[\u200b\u200c\u200d\u2060\ufeff]",                       # zero-width characters
        r"\b(rot13|base64|decode this|reverse the (text|letters))\b",
    )),
}
# Two or more Q/A (or User/Assistant) exchanges inside one message: a many-shot prompt.
_SHOTS = re.compile(r"(?:^|\s)(Q|Question|User|Human)\s*:.{1,400}?\s(A|Answer|Assistant|AI)\s*:", _I | re.S)
MANY_SHOT_WEIGHT = 0.8


@GUARDS.register("injection")
class InjectionGuardConfig(GuardConfig):
    """Flag prompt injections and jailbreak wrappers (see the module)."""

    kind: Literal["injection"] = "injection"
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="score that blocks (one signal of weight 0.5 or "
                             "more, or several weaker ones)")
    weights: dict[str, float] = Field(default_factory=dict, description="per-signal weights replacing the built-in "
                                      "ones (override, persona, suppression, authority, fiction, obfuscation, "
                                      "many-shot)")
    roles: list[str] = Field(default_factory=lambda: ["user", "system", "tool", "function"],
                             description="messages read (tool results carry indirect injections)")

    def build(self) -> Guard:
        """An :class:`InjectionGuard`."""
        return InjectionGuard(self)


class InjectionGuard:
    """The ``injection`` guard (see the module). Replies are not its business."""

    on_output: OnOutput = "annotate"
    stream_window: int | None = 0

    def __init__(self, cfg: InjectionGuardConfig) -> None:
        self.name, self.shadow, self.threshold = cfg.name or "injection", cfg.mode == "shadow", cfg.threshold
        self.escalate = cfg.mode == "escalate"
        self.roles = set(cfg.roles)
        self.signals = [(name, cfg.weights.get(name, weight), [re.compile(p, _I) for p in patterns])
                        for name, (weight, patterns) in SIGNALS.items()]
        self.many_shot_weight = cfg.weights.get("many-shot", MANY_SHOT_WEIGHT)

    def signals_in(self, text: str) -> dict[str, float]:
        """The signals ``text`` shows, with their weights."""
        found = {name: weight for name, weight, patterns in self.signals if any(p.search(text) for p in patterns)}
        if len(_SHOTS.findall(text)) >= 2:
            found["many-shot"] = self.many_shot_weight
        return found

    def score(self, text: str) -> tuple[float, dict[str, float]]:
        """The text's score and its signals."""
        found = self.signals_in(text)
        clean = 1.0
        for weight in found.values():
            clean *= 1.0 - weight
        return 1.0 - clean, found

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Blocked when the messages read score at or above the threshold."""
        start = time.perf_counter()
        text = "\n".join(m.get("content", "") for m in messages if m.get("role") in self.roles)
        score, found = self.score(text)
        flagged = score >= self.threshold
        return Verdict(not flagged, self.name, ", ".join(found) if flagged else "", categories=tuple(found),
                       score=score, seconds=time.perf_counter() - start)

    def check_output(self, text: str) -> Verdict:
        """Replies are allowed unread."""
        return Verdict(True, self.name)
