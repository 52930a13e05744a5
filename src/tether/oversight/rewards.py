"""Training the overseen: an arguer's reward is the judge's verdict (``kind: judge-verdict``).

Khan et al. 2024 trained debaters to win (best-of-N at inference, then RL) and asked whether judges grow
more accurate as debaters grow more persuasive. Best-of-N is :func:`tether.oversight.protocols.best_turns`;
this is the RL half: GRPO (or any online recipe) on arguer prompts, each completion rewarded with the
probability the judge gives the option it argued for, after its quotes are checked against the source and
marked as the judge's view says. :func:`arguer_rows` writes the prompt rows, one per question and side, with
what the reward needs beside the prompt.

    rewards:
      - {kind: judge-verdict, judge: runs/judge/model, view: evidence}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field

from tether.core.errors import UserError
from tether.oversight.protocols import Judge, Question, View, arguer_messages, make_turn
from tether.scoring.rewards import REWARDS, Completions, Reward, RewardConfig, RewardOutput

_COLUMNS = ("question", "options", "source", "side")


def arguer_rows(questions: Sequence[Question]) -> list[dict[str, Any]]:
    """Prompt rows for RL: an arguer's opening prompt for every option of every question, with the question,
    options, source and side the reward reads (``answer`` too where known, for measuring only)."""
    return [{"id": f"{q.id}:{side}", "prompt": arguer_messages(q, side, []), "question": q.question,
             "options": list(q.options), "source": q.source, "side": side, "answer": q.answer}
            for q in questions for side in range(len(q.options))]


@REWARDS.register("judge-verdict")
class JudgeVerdictRewardConfig(RewardConfig):
    """The judge's probability for the option the completion argued for (prompt rows from
    :func:`arguer_rows`)."""

    kind: Literal["judge-verdict"] = "judge-verdict"
    judge: str = Field(description="the judge: model directory, hub id or world:SIZE (its option-letter log-probs)")
    view: Literal["transcript", "evidence"] = Field("transcript", description="what the judge is shown")
    verify: bool = Field(True, description="check quotes against the source (off: every quote shown as verified)")
    word_similarity: float = Field(80.0, ge=0, le=100, description="per-word similarity a quote needs (0-100)")

    def build(self) -> Reward:
        """Loads the judge."""
        from tether.models.loading import ModelConfig, load_model_and_tokenizer
        from tether.oversight.protocols import ChoiceJudge

        model, tokenizer = load_model_and_tokenizer(ModelConfig(path=self.judge))
        model.eval()
        return JudgeVerdictReward(ChoiceJudge(model, tokenizer, View(self.view, verify=self.verify)),
                                  word_similarity=self.word_similarity)


class JudgeVerdictReward:
    """Scores each completion as one argument for its row's ``side``: the judge's probability for that side."""

    parts: tuple[str, ...] = ("unverified_quotes",)

    def __init__(self, judge: Judge, *, word_similarity: float = 80.0) -> None:
        self.judge, self.word_similarity = judge, word_similarity

    def __call__(self, batch: Completions) -> RewardOutput:
        """The judge's probability per completion, and how many of its quotes the source does not hold."""
        cases, sides = [], []
        for index, (text, meta) in enumerate(zip(batch.texts, batch.metas, strict=True)):
            missing = [c for c in _COLUMNS if c not in meta]
            if missing:
                raise UserError(f"reward judge-verdict: prompt {meta.get('id', index)!r} has no {missing[0]!r} column "
                                "(write the prompts with tether.oversight.rewards.arguer_rows)")
            question = Question(str(meta.get("id", index)), meta["question"], tuple(meta["options"]), meta["source"])
            side = int(meta["side"])
            cases.append((question, [make_turn("Debater", side, text, question.source,
                                               word_similarity=self.word_similarity)]))
            sides.append(side)
        with torch.no_grad():
            probs = self.judge.judge(cases)
        values = torch.tensor([p[side] for p, side in zip(probs, sides, strict=True)], dtype=torch.float32)
        unverified = torch.tensor([float(sum(not c.verified for c in turns[0].quotes)) for _, turns in cases])
        return RewardOutput(values, {"unverified_quotes": unverified})
