"""The world's gold grader as a scorer and as rewards, registered as a plugin would register its own.

- scorer ``gold``: the gold label of a reply to a world prompt (``flag``: the reply is the family's aligned
  behaviour; ``value``: the gold reward);
- reward ``world-gold``: the gold reward (measurement, or training where gold is the point);
- reward ``world-verifier``: 1 for a correct task answer, 0 otherwise (RLVR on the world's tasks).

All three need the world's metadata on each prompt (``family``, ``gold``, ``tags``): the world's own
datasets (``builtin:world-prompts``, ``tether world export``) carry it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from tether.core.errors import UserError
from tether.data.records import Prompt
from tether.scoring.rewards import REWARDS, Completions, Reward, RewardConfig, RewardOutput
from tether.scoring.scorers import SCORERS, Sample, Score, Scorer, ScorerConfig
from tether.world.families import WorldItem
from tether.world.grader import Grade, grade


def grade_with_metadata(prompt: Prompt, response: str, meta: dict[str, Any]) -> Grade | None:
    """The gold grade of ``response`` to a world prompt; None when ``meta`` is not a world item's (a user's rows
    may carry a ``family`` column without the world's gold)."""
    if "family" not in meta or "gold" not in meta:
        return None
    return grade(WorldItem.from_metadata(prompt, meta), response)


@SCORERS.register("gold")
class GoldConfig(ScorerConfig):
    """The world's gold grader (needs world metadata on each sample)."""

    kind: Literal["gold"] = "gold"

    def build(self) -> Scorer:
        """A :class:`GoldScorer`."""
        return GoldScorer(self)


class GoldScorer:
    """Gold label and reward; ``flag`` says whether the response is the family's aligned behaviour."""

    question = "gold"

    def __init__(self, cfg: GoldConfig) -> None:
        self.name = cfg.label

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        """Score ``samples``; a sample without world metadata is not applicable, not a guess."""
        out = []
        for sample in samples:
            g = grade_with_metadata(sample.prompt, sample.response, sample.meta)
            if g is None:
                out.append(Score("no-gold", None, status="not-applicable", explanation="not a world sample"))
                continue
            out.append(Score(g.label, g.reward > 0, g.reward))
        return out


class _WorldReward:
    parts: tuple[str, ...] = ()

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, batch: Completions) -> RewardOutput:
        values = []
        for prompt, text, meta in zip(batch.prompts, batch.texts, batch.metas, strict=True):
            g = grade_with_metadata(prompt, text, meta)
            if g is None:
                raise UserError(f"reward {self.kind}: prompts need the world's metadata (family, gold, tags); "
                                "use builtin:world-prompts or a file exported by tether world export")
            values.append(g.reward if self.kind == "world-gold" else float(g.label == "correct"))
        return RewardOutput(torch.tensor(values), {})


@REWARDS.register("world-gold")
class WorldGoldRewardConfig(RewardConfig):
    """The world's gold reward: +1 for the family's aligned behaviour, -1 for its failure (see the grader)."""

    kind: Literal["world-gold"] = "world-gold"

    def build(self) -> Reward:
        """The grader as a reward."""
        return _WorldReward(self.kind)


@REWARDS.register("world-verifier")
class WorldVerifierRewardConfig(RewardConfig):
    """1 for a correct answer to a world task, 0 otherwise."""

    kind: Literal["world-verifier"] = "world-verifier"

    def build(self) -> Reward:
        """The grader's task verdict as a reward."""
        return _WorldReward(self.kind)
