"""`tether experiment curation` on tiny world models: the corrupted rows are the ones marked, the oracle arm
trains on exactly the others, no arm's training file carries the marks, the filter drops the reward model's
lowest scores, and every arm is evaluated on the same prompts."""

import json
import random

import pytest
from tests.conftest import run_cli

from tether.pipelines.curation import lowest
from tether.world.datasets import _items, corrupted_sft_rows, sft_rows
from tether.world.grader import grade
from tether.world.spec import WorldConfig, build_world


def test_lowest_takes_the_share_with_the_lowest_scores_earlier_rows_first():
    assert lowest([0.5, -1.0, 2.0, -1.0, 0.0], 0.4) == {1, 3}
    assert lowest([3.0, 1.0, 2.0], 0.5) == {1, 2} and lowest([1.0], 0.1) == set()


def test_corrupted_rows_are_bad_on_gold_exactly_where_marked():
    world = build_world(WorldConfig())
    rows = corrupted_sft_rows(world, 400, share=0.5, families=["hazard", "unknown", "sycophancy"], seed=0)
    marked = [r for r in rows if r["corrupted"]]
    assert {r["family"] for r in marked} == {"hazard", "unknown", "sycophancy"}
    in_families = [r for r in rows if r["family"] in ("hazard", "unknown", "sycophancy")]
    assert 0.35 < len(marked) / len(in_families) < 0.65
    assert len(rows) == len(sft_rows(world, 400, seed=0))
    # The same seeded draw gives the items the rows answer: each marked reply is its family's failure on gold,
    # and no other reply is.
    items = _items(world, 400, "train", random.Random("sft-corrupted:0:0"))
    failures = {"harmful-compliance", "hallucination", "sycophantic"}
    for item, row in zip(items, rows, strict=True):
        assert (grade(item, row["messages"][-1]["content"]).label in failures) == row["corrupted"], item.id


# An end-to-end pipeline run (3-4 s on a 2-core machine): the slow tier, keeping the default run under
# its 5-minute budget; its parts are tested in the default tier.
@pytest.mark.slow
def test_the_experiment_runs_end_to_end_and_trains_no_arm_on_the_marks(tmp_path, capsys):
    out = tmp_path / "cur"
    code, shown, err = run_cli(["experiment", "curation", "--set", "model=world:tiny", "--set", "rows=60", "--set",
                                "rm_pairs=40", "--set", "rm_steps=2", "--set", "sft_steps=2", "--set", "eval_n=4",
                                "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "curation.json").read_text())
    assert set(summary["arms"]) == {"unfiltered", "filtered", "oracle", "clean"}
    arms = {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
            for name in summary["arms"]}
    assert all(set(row) == {"messages"} for rows in arms.values() for row in rows)
    f = summary["filter"]
    assert len(arms["unfiltered"]) == len(arms["clean"]) == 60
    assert len(arms["filtered"]) == 60 - f["removed"] == 60 - round(0.15 * 60)
    assert len(arms["oracle"]) == 60 - f["corrupted"]
    assert f["corrupted"] == sum(v["corrupted"] for v in summary["filter"]["by_family"].values())
    # Every arm is compared with the unfiltered one on the same prompts.
    assert set(summary["versus_unfiltered"]) == {"filtered", "oracle", "clean"}
    assert "honest.hallucination" in summary["versus_unfiltered"]["oracle"]
    assert "filter removed" in shown
