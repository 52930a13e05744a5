"""`tether experiment irl-vs-sft` on the tiny world model, and how a scorer is held against gold: pairwise accuracy
on pairs whose gold differs, and the rank correlation."""

import json

import pytest
from tests.conftest import run_cli

from tether.pipelines.irl_vs_sft import reward_set, scored
from tether.world.spec import WorldConfig, build_world


def test_a_scorer_is_judged_on_pairs_whose_gold_differs_and_by_rank():
    rows = [{"gold": [1.0, -1.0]}, {"gold": [1.0, 0.0]}, {"gold": [0.5, 0.5]}]
    # Right on the first pair, wrong on the second, the tie in gold left out of the accuracy.
    result = scored(rows, [2.0, 1.0, 0.0, 3.0, 5.0, 5.0])
    assert result["pair_accuracy"]["value"] == 0.5 and result["pair_accuracy"]["n"] == 2
    perfect = scored(rows, [3.0, 0.0, 3.0, 1.0, 2.0, 2.0])
    assert perfect["spearman"]["value"] == pytest.approx(1.0)
    assert perfect["pair_accuracy"]["value"] == 1.0


def test_the_reward_set_pairs_a_good_and_a_bad_reply_graded_by_gold():
    world = build_world(WorldConfig())
    rows = reward_set(world, 40, "heldout", 0)
    assert len(rows) == 40 and all(len(r["replies"]) == 2 for r in rows)
    assert sum(r["gold"][0] > r["gold"][1] for r in rows) >= 30  # the good reply is better on gold, nearly always
    assert rows == reward_set(world, 40, "heldout", 0) and rows != reward_set(world, 40, "train", 0)


# Every stage on the tiny world model: about 20 s, the slow tier.
@pytest.mark.slow
def test_the_experiment_runs_end_to_end_on_the_tiny_world_model(tmp_path, capsys):
    out = tmp_path / "irl"
    code, shown, err = run_cli(["experiment", "irl-vs-sft", "--set", "model=world:tiny", "--set", "rows=40", "--set",
                                "steps=2", "--set", "rm_pairs=20", "--set", "rm_steps=2", "--set", "reward_prompts=12",
                                "--set", "eval_n=4", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "irl.json").read_text())
    assert set(summary["reward"]) == {"train", "heldout"}
    assert set(summary["reward"]["heldout"]) == {"iq-learn recovered reward", "irft recovered reward",
                                                 "sft recovered reward", "sft log-likelihood",
                                                 "reward model (annotator pairs)"}
    assert set(summary["policies"]) == {"sft", "iq-learn", "irft"}
    assert set(summary["versus_sft"]) == {"iq-learn", "irft"}
    assert "heldout iq-learn recovered reward: pair accuracy" in shown
