"""An adaptive attack on a guarded target: search for the prompts its guards let through.

Per goal, ``candidates`` prompts are drawn from the whole template library, each with a converter chain
(none, or one of ``converters``) and a best-of-N augmentation of random strength up to ``sigma``; the
target's own input guards score every candidate (black-box: only their verdicts and scores are read,
as an attacker who can probe the deployed filter would), and the ``keep`` that look safest to them are
sent to the guarded target. An attempt counts only when the guarded system's reply complies, so the
guard and the model are attacked together. Against a target without guards the first ``keep``
candidates are sent: the same budget, unguided, for comparison.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tether.core.config import placeholders
from tether.core.errors import UserError
from tether.redteam.attacks import (
    ATTACKS,
    Attack,
    AttackConfig,
    AttackKit,
    AttackPrompt,
    _known_converters,
    augment,
    render,
)
from tether.redteam.goals import Goal


@ATTACKS.register("guard-search")
class GuardSearchConfig(AttackConfig):
    """Many candidates per goal, ranked by the target's guards; the safest-looking sent (see the module)."""

    kind: Literal["guard-search"] = "guard-search"
    candidates: int = Field(64, ge=1, description="prompts drawn per goal")
    keep: int = Field(8, ge=1, description="prompts sent per goal: those the guards score lowest")
    converters: list[str] = Field(default_factory=lambda: ["leetspeak", "homoglyphs", "split-tokens",
                                                           "reverse-words", "base64", "rot13"],
                                  description="converters a candidate may use (each candidate: none or one)")
    sigma: float = Field(0.1, ge=0.0, le=1.0, description="the strongest augmentation drawn")

    @model_validator(mode="after")
    def _check(self) -> GuardSearchConfig:
        _known_converters(self.converters)
        if self.keep > self.candidates:
            raise ValueError(f"keep ({self.keep}) must not exceed candidates ({self.candidates})")
        return self

    @property
    def label(self) -> str:
        """The attack's name in results."""
        return self.name or f"guard-search-{self.keep}of{self.candidates}"

    def build(self) -> Attack:
        """A :class:`GuardSearch`."""
        return GuardSearch(self)


class GuardSearch:
    """The ``guard-search`` attack (see the module)."""

    needs_weights = False
    needs_target = True  # adapt() reads the target's guards

    def __init__(self, cfg: GuardSearchConfig) -> None:
        self.cfg, self.name = cfg, cfg.label

    def prompts(self, goals: Sequence[Goal], kit: AttackKit) -> list[AttackPrompt]:
        """``candidates`` prompts per goal (template, converter, augmentation drawn per candidate)."""
        templates = list(kit.library.templates)
        needs_shots = any("shots" in placeholders(t.template) for t in templates)
        shots: Sequence[Any] = ()
        if needs_shots:
            try:
                shots = kit.shots()
            except UserError:  # no shots to draw on: the library's other templates only
                shots = ()
        if not shots:
            templates = [t for t in templates if "shots" not in placeholders(t.template)]
        out = []
        for index, goal in enumerate(goals):
            rng = random.Random(f"{kit.seed}:{self.name}:{index}")
            own = [s for s in shots if s.prompt != goal.request and not (goal.subject and s.source == goal.subject)]
            for attempt in range(self.cfg.candidates):
                template = rng.choice(templates)
                chain = [] if rng.random() < 0.5 or not self.cfg.converters else [rng.choice(self.cfg.converters)]
                request = augment(goal.request, rng, rng.uniform(0.0, self.cfg.sigma)) if self.cfg.sigma else \
                    goal.request
                out.append(AttackPrompt(goal, self.name, render(template, kit.library, request, chain, rng, own),
                                        attempt))
        return out

    def adapt(self, prompts: list[AttackPrompt], target: Any, cache: Path, *, seed: int
              ) -> tuple[list[AttackPrompt], dict[str, Any]]:
        """The ``keep`` candidates per goal the target's guards score lowest (the first ``keep`` unguarded)."""
        guards = list(getattr(target, "guards", None) or [])
        by_goal: dict[str, list[tuple[float, AttackPrompt]]] = {}
        passing = 0
        for p in prompts:
            score = _guard_score(guards, p.prompt) if guards else 0.0
            passing += score < 1.0 if guards else 0
            by_goal.setdefault(p.goal.id, []).append((score, p))
        out = []
        for ranked in by_goal.values():
            chosen = sorted(ranked, key=lambda sp: sp[0])[:self.cfg.keep] if guards else ranked[:self.cfg.keep]
            out += [AttackPrompt(p.goal, p.kind, p.prompt, attempt) for attempt, (_, p) in enumerate(chosen)]
        summary = {"candidates": len(prompts), "sent": len(out), "guided_by": [g.name for g in guards]}
        if guards:
            summary["candidates_the_guards_allow"] = round(passing / len(prompts), 4) if prompts else None
        return out, summary


def _guard_score(guards: Sequence[Any], prompt: Any) -> float:
    """How suspicious the guards find ``prompt``: the highest score any gives (a guard without a score: 1 when it
    refuses, 0 when it allows), and at least 1 when any refuses."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    worst = 0.0
    for guard in guards:
        verdict = guard.check_input(messages)
        score = verdict.score if verdict.score is not None else float(not verdict.allowed)
        worst = max(worst, score + (1.0 if not verdict.allowed else 0.0))
    return worst
