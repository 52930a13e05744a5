"""The refusal detector as an output guard: each reply labelled refusal or not, with P(refusal).

It never changes a reply (``on_output: annotate``): its verdicts go in the audit trail, where a share of
refusals that rises is what over-refusal looks like in live traffic, and where monitoring reads it. The
detector is :mod:`tether.scoring.refusal`'s learned tier (the one tether ships, or one trained with
``tether train refusal-detector``); on a stream it runs once, on the whole reply.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from tether.guard.base import GUARDS, Guard, GuardConfig, OnOutput, Verdict


@GUARDS.register("refusal")
class RefusalGuardConfig(GuardConfig):
    """Label every reply a refusal or not (P(refusal) as the score); never blocks."""

    kind: Literal["refusal"] = "refusal"
    detector: str | None = Field(None, description="a detector directory (default: the one tether ships)")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="P(refusal) from which a reply is labelled "
                                    "a refusal (default: the detector's own)")

    def build(self) -> Guard:
        """A :class:`RefusalGuard` (loads the detector)."""
        return RefusalGuard(self)


class RefusalGuard:
    """The ``refusal`` guard (see the module)."""

    on_output: OnOutput = "annotate"
    stream_window: int | None = 0

    def __init__(self, cfg: RefusalGuardConfig) -> None:
        from tether.scoring.refusal import RefusalDetector

        self.name, self.shadow = cfg.name or "refusal", cfg.mode == "shadow"
        self.escalate = cfg.mode == "escalate"
        self.detector = RefusalDetector.load(cfg.detector, threshold=cfg.threshold)

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Requests are not its business: always allowed, unlabelled."""
        return Verdict(True, self.name)

    def check_output(self, text: str) -> Verdict:
        """Allowed, labelled ``refusal`` when P(refusal) reaches the threshold."""
        start = time.perf_counter()
        p = self.detector.probabilities([text])[0]
        refused = p >= self.detector.threshold
        return Verdict(True, self.name, "refusal" if refused else "", categories=("refusal",) if refused else (),
                       score=p, seconds=time.perf_counter() - start)
