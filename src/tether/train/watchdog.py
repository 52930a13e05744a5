"""A reward-hacking watchdog for online RL: rules over the signals each rollout logs.

Optimising a learned (proxy) reward hard enough raises the proxy while the true objective
falls (Gao et al. 2022, "Scaling laws for reward model overoptimization"). What a run can watch:

- ``gold_drop``: a trusted reward that is measured but not optimised (the world's gold grader;
  on a user's data a held-out reward model or judge) has fallen ``gold_drop`` below its best
  while the proxy stayed at or above its value at that best: proxy up, gold down;
- ``disagreement_rise``: the reward-model ensemble's disagreement (std across members) has
  risen ``disagreement_rise`` above its first value: the policy went where the members were
  not trained (Coste et al. 2024, "Reward model ensembles help mitigate overoptimization");
- ``kl_budget``: the KL to the reference (nats per completion) exceeds the budget.

Every signal is a moving mean over ``window`` rollouts, and a rule fires after ``patience``
consecutive rollouts, so one noisy batch neither stops a run nor hides a trend. The recipe
keeps a snapshot of the policy at the best point (highest smoothed gold; without gold, the
last rollout that broke no rule) and on an alarm stops, or stops and restores that snapshot.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, NamedTuple

from pydantic import Field

from tether.core.config import Config
from tether.scoring.rewards import RewardTerm


class WatchConfig(Config):
    """What an RL run watches for reward hacking, and what it does when a rule fires."""

    gold: RewardTerm | None = Field(None, description="a trusted reward, measured but not optimised; default: the "
                                    "world's gold grader when the prompts carry world metadata")
    gold_drop: float | None = Field(None, gt=0, description="fire when smoothed gold falls this far below its best "
                                    "while the proxy stays at or above its value there")
    disagreement_rise: float | None = Field(None, gt=0, description="fire when smoothed reward-model disagreement "
                                            "rises this far above its first value")
    kl_budget: float | None = Field(None, gt=0, description="fire when smoothed KL to the reference (nats per "
                                    "completion) exceeds this")
    window: int = Field(3, ge=1, description="rollouts in each signal's moving mean")
    patience: int = Field(2, ge=1, description="consecutive rollouts a rule must hold before it fires")
    action: Literal["rollback", "stop", "log"] = Field(
        "rollback", description="rollback: stop and restore the best snapshot; stop: keep the current weights; "
        "log: record the alarm and go on")


class Alarm(NamedTuple):
    """A rule that fired."""

    step: int
    rule: str
    detail: str


class Verdict(NamedTuple):
    """What one observation means for the run."""

    best: bool            # the policy now is the best so far: snapshot it
    alarm: Alarm | None   # a rule fired at this observation


class Watchdog:
    """Reads one rollout's signals at a time and says when the run is the best so far or has gone wrong."""

    def __init__(self, cfg: WatchConfig, *, proxy: str = "reward", gold: str = "gold_reward", kl: str = "kl",
                 disagreement: str | None = None) -> None:
        self.cfg = cfg
        self.keys = {"proxy": proxy, "gold": gold, "kl": kl, "disagreement": disagreement}
        self._recent: dict[str, deque[float]] = {k: deque(maxlen=cfg.window) for k in self.keys}
        self._held: dict[str, int] = {}
        self.best_gold: float | None = None
        self.proxy_at_best: float | None = None
        self.best_step: int | None = None
        self.first_disagreement: float | None = None
        self.alarms: list[Alarm] = []

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`observe` has accumulated (checkpointed so a resumed run keeps its thresholds)."""
        return {"recent": {k: list(v) for k, v in self._recent.items()}, "held": dict(self._held),
                "best_gold": self.best_gold, "proxy_at_best": self.proxy_at_best, "best_step": self.best_step,
                "first_disagreement": self.first_disagreement, "alarms": [tuple(a) for a in self.alarms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state_dict`."""
        for name, values in state["recent"].items():
            self._recent[name].clear()
            self._recent[name].extend(values)
        self._held = dict(state["held"])
        self.best_gold, self.proxy_at_best = state["best_gold"], state["proxy_at_best"]
        self.best_step, self.first_disagreement = state["best_step"], state["first_disagreement"]
        self.alarms = [Alarm(*a) for a in state["alarms"]]

    def smoothed(self, name: str) -> float | None:
        """Moving mean of a signal (``proxy``, ``gold``, ``kl``, ``disagreement``), or None if never seen."""
        values = self._recent[name]
        return sum(values) / len(values) if values else None

    def observe(self, step: int, signals: dict[str, float]) -> Verdict:
        """Take one rollout's signals (missing ones are skipped)."""
        for name, key in self.keys.items():
            if key is not None and key in signals:
                self._recent[name].append(float(signals[key]))
        proxy, gold = self.smoothed("proxy"), self.smoothed("gold")
        kl, disagreement = self.smoothed("kl"), self.smoothed("disagreement")
        if disagreement is not None and self.first_disagreement is None:
            self.first_disagreement = disagreement

        broken: dict[str, str] = {}
        if self.cfg.kl_budget is not None and kl is not None and kl > self.cfg.kl_budget:
            broken["kl_budget"] = f"KL {kl:.3g} > budget {self.cfg.kl_budget:g}"
        if (self.cfg.disagreement_rise is not None and disagreement is not None and self.first_disagreement is not None
                and disagreement > self.first_disagreement + self.cfg.disagreement_rise):
            broken["disagreement_rise"] = (f"disagreement {disagreement:.3g} > first {self.first_disagreement:.3g} "
                                           f"+ {self.cfg.disagreement_rise:g}")
        if (self.cfg.gold_drop is not None and gold is not None and self.best_gold is not None and proxy is not None
                and self.proxy_at_best is not None and gold < self.best_gold - self.cfg.gold_drop
                and proxy >= self.proxy_at_best):
            broken["gold_drop"] = (f"gold {gold:.3g} < best {self.best_gold:.3g} - {self.cfg.gold_drop:g} "
                                   f"while proxy {proxy:.3g} >= {self.proxy_at_best:.3g}")
        self._held = {rule: self._held.get(rule, 0) + 1 for rule in broken}

        best = False
        if gold is not None:
            if self.best_gold is None or gold > self.best_gold:
                self.best_gold, self.proxy_at_best, self.best_step, best = gold, proxy, step, True
        elif not broken:
            self.best_step, best = step, True
        alarm = None
        for rule, held in self._held.items():
            if held >= self.cfg.patience:
                alarm = Alarm(step, rule, broken[rule])
                self.alarms.append(alarm)
                self._held[rule] = 0  # with action 'log', fire again only after another full patience
                break
        return Verdict(best and alarm is None, alarm)
