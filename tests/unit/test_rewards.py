"""Reward terms on hand-made completions: world gold and verifier, a generic verifier, a user's function,
length, weighted sums."""

import os
import shutil

import pytest

from tether.core.errors import UserError
from tether.scoring.rewards import Rewards, extract_code, reward_config
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
    rewards = Rewards([reward_config({"kind": "world-verifier"}), reward_config({"kind": "world-gold", "weight": 0.5}),
                       reward_config({"kind": "length", "coef": 2.0})], max_tokens=10)
    total, terms = rewards(prompts, completions, [5, 5, 10], metas)
    verifier, gold, length = [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [-1.0, -1.0, -2.0]
    assert total.tolist() == pytest.approx([v + 0.5 * g + n for v, g, n in zip(verifier, gold, length, strict=True)])
    assert terms["reward/world-verifier"].tolist() == verifier and terms["reward/length"].tolist() == length


def test_world_terms_need_world_metadata_and_a_term_is_required():
    rewards = Rewards([reward_config({"kind": "world-gold"})], max_tokens=10)
    with pytest.raises(UserError, match="world's metadata"):
        rewards(["What is 2 + 2?"], ["4"], [1], [{}])
    with pytest.raises(UserError, match="at least one"):
        Rewards([], max_tokens=10)


def test_verifier_reward_checks_each_rows_answer_and_refuses_rows_without_one():
    rewards = Rewards([reward_config({"kind": "verifier"}),
                       reward_config({"kind": "verifier", "answer_key": "label", "mode": "contains"})], max_tokens=8)
    metas = [{"answer": "12", "label": "Paris"}, {"answer": "7", "label": "Rome"}]
    total, terms = rewards(["q1", "q2"], ["Paris: so it is 12", "Rom, I think: 8"], [3, 3], metas)
    # number: the last number (12 = 12; 8 != 7); contains: "paris" is in the first, "rome" not in the second.
    assert terms["reward/verifier"].tolist() == [1.0, 0.0]
    assert terms["reward/verifier-2"].tolist() == [1.0, 0.0] and total.tolist() == [2.0, 0.0]
    with pytest.raises(UserError, match="prompt 'q3' has no 'answer' column"):
        rewards(["q3"], ["3"], [1], [{"id": "q3"}])


def score_by_length(prompts, completions, difficulty):
    """A TRL-style reward function: the other columns arrive as keyword lists."""
    return [len(c) * d for c, d in zip(completions, difficulty, strict=True)]


def test_function_reward_calls_a_users_function_as_trl_does():
    rewards = Rewards([reward_config({"kind": "function", "function": f"{__name__}:score_by_length"})],
                      max_tokens=8)
    total, _ = rewards(["a", "b"], ["xy", "xyz"], [1, 1], [{"difficulty": 2}, {"difficulty": 10}])
    assert total.tolist() == [4.0, 30.0]
    with pytest.raises(UserError, match="no_such_module"):
        reward_config({"kind": "function", "function": "no_such_module:f"}).build()


def test_a_reward_kind_that_does_not_exist_is_named_with_the_known_ones():
    with pytest.raises(UserError, match="unknown reward 'gold-ish'; known: .*length.*verifier"):
        reward_config({"kind": "gold-ish"})


def test_extract_code_takes_the_last_fenced_block_or_the_whole_text():
    assert extract_code("Here:\n```python\nx = 1\n```\nbetter:\n```\nx = 2\n```\n") == "x = 2\n"
    assert extract_code("```py\ndef f():\n    return 3\n```") == "def f():\n    return 3\n"
    assert extract_code("def f(): return 3") == "def f(): return 3"


@pytest.mark.skipif(shutil.which("bwrap") is None and not os.environ.get("TETHER_REQUIRE_SANDBOX"),
                    reason="bubblewrap (bwrap) is not installed")
def test_code_tests_reward_runs_each_program_against_its_rows_tests_in_the_sandbox():
    rewards = Rewards([reward_config({"kind": "code-tests", "sandbox": {"time_s": 5, "cpu_s": 1}})], max_tokens=64)
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
    completions = ["Sure:\n```python\ndef add(a, b):\n    return a + b\n```",
                   "```python\ndef add(a, b):\n    return a - b\n```",          # wrong: the assert fails
                   "```python\ndef add(a, b):\n    while True:\n        pass\n```",  # never returns
                   "def add(a, b): return a + b"]                                 # no fence: the whole text
    total, terms = rewards(["p"] * 4, completions, [9] * 4, [{"tests": tests}] * 4)
    assert total.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert terms["reward/code-tests/killed"].tolist() == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(UserError, match="prompt 'q9' has no 'tests' column"):
        rewards(["p"], ["x"], [1], [{"id": "q9"}])
