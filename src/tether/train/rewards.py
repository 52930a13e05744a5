"""Rewards for online RL: (prompt, completion, metadata) -> a number, composable as a weighted sum.

Kinds (``RewardSpec.kind``):
- ``world-gold``: the world's gold reward (measurement, or training where gold is the point);
- ``world-verifier``: 1 for a correct task answer, 0 otherwise (RLVR on the world's tasks);
- ``reward-model``: a trained reward model or ensemble (``tether train rm`` run directory or
  model directories), aggregated by ``mean``, ``min`` or ``mean - k*std``;
- ``length``: ``-coef * tokens / max_tokens``, a length penalty;
- ``attack``: the completion is an attack prompt (an attacker model's): ``target`` answers it, the reply
  is judged (``scorer``: the world's gold grader, a refusal detector, or ``auto``: gold for world
  goals), and a success scores 1 + ``novelty`` x how unlike earlier successes it is
  (:class:`tether.redteam.attacker.AttackReward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from tether.core.config import Config
from tether.core.errors import UserError


class RewardSpec(Config):
    """One term of the reward."""

    kind: Literal["world-gold", "world-verifier", "reward-model", "length", "attack"]
    weight: float = Field(1.0, description="multiplies this term")
    path: list[str] | None = Field(None, description="reward-model: run directory or model directories")
    aggregate: Literal["mean", "min", "mean-minus-std"] = Field("mean", description="reward-model ensembles")
    k: float = Field(1.0, ge=0, description="mean-minus-std: how many stds to subtract")
    coef: float = Field(1.0, description="length: penalty per full-length reply")
    target: str | None = Field(None, description="attack: the model attacked (directory, world:base, or URL)")
    scorer: Literal["auto", "gold", "refusal"] = Field("auto", description="attack: who judges the target's reply")
    novelty: float = Field(0.0, ge=0, description="attack: weight of the diversity bonus of a success")
    target_tokens: int = Field(48, ge=1, description="attack: tokens the target replies with at most")

    @model_validator(mode="after")
    def _check(self) -> RewardSpec:
        if self.kind == "reward-model" and not self.path:
            raise ValueError("a reward-model reward needs path (a tether train rm run, or model directories)")
        if self.kind == "attack" and not self.target:
            raise ValueError("an attack reward needs target (the model the attacker attacks)")
        return self


class Rewards:
    """The weighted sum of the configured terms, with each term kept for logging."""

    def __init__(self, specs: Sequence[RewardSpec], *, max_tokens: int) -> None:
        if not specs:
            raise UserError("rewards: configure at least one reward term")
        self.specs, self.max_tokens = list(specs), max_tokens
        self._models: dict[int, Any] = {}
        for i, spec in enumerate(self.specs):
            if spec.kind == "reward-model":
                from pathlib import Path

                from tether.models.reward import RewardEnsemble

                paths = spec.path or []
                self._models[i] = (RewardEnsemble.from_run(paths[0]) if len(paths) == 1 and Path(paths[0], "record.json")
                                   .is_file() else RewardEnsemble(paths))
            elif spec.kind == "attack":
                from tether.models.generation import GenerationSettings
                from tether.redteam.attacker import AttackReward

                self._models[i] = AttackReward(str(spec.target), scorer=spec.scorer, novelty=spec.novelty,
                                               generation=GenerationSettings(max_new_tokens=spec.target_tokens,
                                                                             temperature=1.0, batch_size=64))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], token_counts: Sequence[int],
                 metas: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total reward per completion, and each term per completion (``reward/KIND``; reward models add
        ``reward/reward-model/mean`` and ``/disagreement``, the members' mean and std, the signals a
        reward-hacking watch reads). A kind used twice is numbered: ``reward/length``, ``reward/length-2``."""
        total = torch.zeros(len(completions))
        terms: dict[str, torch.Tensor] = {}
        for i, spec in enumerate(self.specs):
            name = f"reward/{spec.kind}"
            name = name if name not in terms else f"{name}-{sum(s.kind == spec.kind for s in self.specs[:i]) + 1}"
            values = self._term(i, spec, prompts, completions, token_counts, metas, terms, name)
            terms[name] = values
            total += spec.weight * values
        return total, terms

    def _term(self, i: int, spec: RewardSpec, prompts: Sequence[Any], completions: Sequence[str],
              token_counts: Sequence[int], metas: Sequence[dict[str, Any]], terms: dict[str, torch.Tensor],
              name: str) -> torch.Tensor:
        if spec.kind == "length":
            return torch.tensor([-spec.coef * n / self.max_tokens for n in token_counts])
        if spec.kind == "reward-model":
            scores = self._models[i].score(prompts, completions)
            terms[f"{name}/mean"], terms[f"{name}/disagreement"] = scores.mean, scores.std
            if spec.aggregate == "min":
                return scores.min  # type: ignore[no-any-return]
            if spec.aggregate == "mean-minus-std":
                return scores.conservative(spec.k)  # type: ignore[no-any-return]
            return scores.mean  # type: ignore[no-any-return]
        if spec.kind == "attack":
            values, parts = self._models[i](completions, metas)
            terms[f"{name}/success"], terms[f"{name}/novelty"] = parts["success"], parts["novelty"]
            return values  # type: ignore[no-any-return]
        from tether.world.families import WorldItem
        from tether.world.grader import grade

        values = []
        for prompt, completion, meta in zip(prompts, completions, metas, strict=True):
            if "family" not in meta:
                raise UserError(f"reward {spec.kind}: prompts need the world's metadata (family, gold, tags); "
                                "use builtin:world-prompts or a file exported by tether world export")
            g = grade(WorldItem.from_metadata(prompt, meta), completion)
            values.append(g.reward if spec.kind == "world-gold" else float(g.label == "correct"))
        return torch.tensor(values)
