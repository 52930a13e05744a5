"""A cascade of guards: cheap tiers first, and only what they are unsure of goes on.

Each tier is any guard. A tier that gives a score has an allow threshold and a block threshold (its own,
or for a trained classifier the ones calibrated on validation data at training: block at a false-positive
rate, allow at a miss rate): below ``allow`` the text is allowed there, at or above ``block`` it is
blocked there, and in between it goes on. A tier without a score (a deny-list) blocks what it refuses and
passes the rest on. The last tier decides whatever reaches it. A latency budget stops the climb: a text
still uncertain when the time spent reaches it gets ``on_budget``. With ``parallel``, every tier starts at
once and the first that blocks decides (the tiers not yet started are cancelled; the rest run on and are
ignored); the text is allowed only when every tier allows it.

The verdict names the tiers that ran, so the share of traffic that reaches each tier is measured
(``tether guard eval``) rather than assumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

from pydantic import Field, field_validator

from tether.core.registry import kind_config
from tether.guard.base import GUARDS, Guard, GuardConfig, ReplyAction, Verdict


@GUARDS.register("cascade")
class CascadeGuardConfig(GuardConfig):
    """Guards in tiers, cheapest first (see the module)."""

    kind: Literal["cascade"] = "cascade"
    tiers: list[dict[str, Any]] = Field(min_length=1, description="guards in order, each {kind: ..., ...} with "
                                        "optional allow and block thresholds on its score (default: a trained "
                                        "classifier's calibrated ones)")
    budget_ms: float | None = Field(None, gt=0, description="time after which an uncertain text climbs no further")
    on_budget: Literal["block", "allow"] = Field("block", description="what an uncertain text gets at the budget")
    parallel: bool = Field(False, description="start every tier at once; the first block decides")
    on_output: ReplyAction = Field("block", description="a reply the cascade blocks: block, or cut at the span "
                                   "the deciding tier names")
    stream_window: int | None = Field(None, ge=0, description="streams: None holds the reply until checked whole")

    @field_validator("tiers")
    @classmethod
    def _tiers_are_guards(cls, tiers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for tier in tiers:
            if not isinstance(tier, dict):
                raise ValueError(f"a tier is a mapping {{kind: ..., ...}}, got {tier!r}")
            kind_config(GUARDS, {k: v for k, v in tier.items() if k not in ("allow", "block")})
        return tiers

    def build(self) -> Guard:
        """A :class:`CascadeGuard` (builds every tier)."""
        return CascadeGuard(self)


class Tier:
    """One tier: its guard and where its score decides."""

    def __init__(self, guard: Guard, allow: float | None, block: float | None) -> None:
        self.guard = guard
        calibrated = getattr(guard, "thresholds", None)
        self.allow = allow if allow is not None else getattr(calibrated, "allow", None)
        self.block = block if block is not None else getattr(calibrated, "block", None)

    def decides(self, verdict: Verdict, last: bool) -> bool | None:
        """True: block here; False: allow here; None: uncertain, go on."""
        if last:
            return not verdict.allowed
        if verdict.score is None or self.allow is None or self.block is None:
            return True if not verdict.allowed else None  # no score: decisive only when it refuses
        if verdict.score >= self.block:
            return True
        return False if verdict.score < self.allow else None


class CascadeGuard:
    """The ``cascade`` guard (see the module)."""

    def __init__(self, cfg: CascadeGuardConfig) -> None:
        self.name, self.shadow = cfg.name or "cascade", cfg.mode == "shadow"
        self.escalate = cfg.mode == "escalate"
        self.on_output, self.stream_window = cfg.on_output, cfg.stream_window
        self.budget = cfg.budget_ms / 1000 if cfg.budget_ms is not None else None
        self.on_budget, self.parallel = cfg.on_budget, cfg.parallel
        self.tiers = []
        for raw in cfg.tiers:
            guard = kind_config(GUARDS, {k: v for k, v in raw.items() if k not in ("allow", "block")}).build()
            self.tiers.append(Tier(guard, raw.get("allow"), raw.get("block")))
        self._pool = ThreadPoolExecutor(len(self.tiers), thread_name_prefix="cascade") if self.parallel else None

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """The cascade on a conversation."""
        return self._run(lambda g: g.check_input(messages), output=False)

    def check_output(self, text: str) -> Verdict:
        """The cascade on a reply."""
        return self._run(lambda g: g.check_output(text), output=True)

    def _run(self, check: Callable[[Guard], Verdict], *, output: bool) -> Verdict:
        start = time.perf_counter()
        if self._pool is not None:
            return self._parallel(check, start, output)
        ran: list[str] = []
        took: list[float] = []
        for i, tier in enumerate(self.tiers):
            if i and self.budget is not None and time.perf_counter() - start >= self.budget:
                return self._verdict(self.on_budget == "block", None, ran, start, output, took,
                                     reason=f"latency budget reached before {tier.guard.name}")
            began = time.perf_counter()
            verdict = check(tier.guard)
            took.append(time.perf_counter() - began)
            ran.append(tier.guard.name)
            decided = tier.decides(verdict, last=i == len(self.tiers) - 1)
            if decided is not None:
                return self._verdict(decided, verdict, ran, start, output, took)
        raise AssertionError("the last tier always decides")

    def _parallel(self, check: Callable[[Guard], Verdict], start: float, output: bool) -> Verdict:
        assert self._pool is not None
        futures: dict[Future[Verdict], Tier] = {self._pool.submit(check, t.guard): t for t in self.tiers}
        pending: set[Future[Verdict]] = set(futures)
        ran: list[str] = []
        timeout = self.budget
        while pending:
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:  # the budget ran out with tiers still running
                for f in pending:
                    f.cancel()
                return self._verdict(self.on_budget == "block", None, ran, start, output,
                                     reason="latency budget reached")
            for future in done:
                verdict = future.result()
                ran.append(futures[future].guard.name)
                if not verdict.allowed:
                    for f in pending:
                        f.cancel()
                    return self._verdict(True, verdict, ran, start, output)
            if self.budget is not None:
                timeout = max(0.0, self.budget - (time.perf_counter() - start))
        return self._verdict(False, None, ran, start, output)

    def _verdict(self, block: bool, decider: Verdict | None, ran: list[str], start: float, output: bool,
                 took: Sequence[float] = (), *, reason: str = "") -> Verdict:
        seconds = time.perf_counter() - start
        score = decider.score if decider is not None else None
        if not block:
            return Verdict(True, self.name, reason, seconds=seconds, score=score, tiers=tuple(ran),
                           tier_seconds=tuple(took))
        action = self.on_output if output else "block"
        span = decider.span if decider is not None and action == "cut" else None
        why = reason or f"{ran[-1]}: {decider.reason if decider is not None and decider.reason else 'unsafe'}"
        categories = decider.categories if decider is not None and decider.categories else ("unsafe",)
        return Verdict(False, self.name, why, span, seconds, action=action, categories=categories, score=score,
                       tiers=tuple(ran), tier_seconds=tuple(took))
