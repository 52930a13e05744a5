"""Reward terms on hand-made completions: world gold and verifier, length, weighted sums."""

import pytest

from tether.core.errors import UserError
from tether.train.rewards import Rewards, RewardSpec
from tether.world.families import sample_items
from tether.world.spec import WorldConfig, build_world


def _meta(item):
    return {"id": item.id, "family": item.family, "split": item.split, "gold": item.gold, "tags": item.tags}


def test_world_terms_length_and_weights():
    world = build_world(WorldConfig())
    task = next(it for it in sample_items(world, "task", "train", 20) if it.gold["kind"] == "arithmetic")
    hazard = sample_items(world, "hazard", "train", 1)[0]
    prompts, metas = [task.prompt, task.prompt, hazard.prompt], [_meta(task), _meta(task), _meta(hazard)]
    completions = [f"The answer is {task.gold['answer']}.", "The answer is -1.", "I can't help with that."]
    rewards = Rewards([RewardSpec(kind="world-verifier"), RewardSpec(kind="world-gold", weight=0.5),
                       RewardSpec(kind="length", coef=2.0)], max_tokens=10)
    total, terms = rewards(prompts, completions, [5, 5, 10], metas)
    verifier, gold, length = [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [-1.0, -1.0, -2.0]
    assert total.tolist() == pytest.approx([v + 0.5 * g + n for v, g, n in zip(verifier, gold, length, strict=True)])
    assert terms["reward/world-verifier"].tolist() == verifier and terms["reward/length"].tolist() == length


def test_world_terms_need_world_metadata_and_a_term_is_required():
    rewards = Rewards([RewardSpec(kind="world-gold")], max_tokens=10)
    with pytest.raises(UserError, match="world's metadata"):
        rewards(["What is 2 + 2?"], ["4"], [1], [{}])
    with pytest.raises(UserError, match="at least one"):
        Rewards([], max_tokens=10)
