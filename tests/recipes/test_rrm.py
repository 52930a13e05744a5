"""`tether oversee rrm` on tiny world models: the helper learns only one-fact questions of train lands, the
three reward models train on the same pairs labelled three ways, the held-out test asks only about held-out
lands, and the reported label figures are what the written files hold."""

import json
import re

import pytest
from tests.conftest import run_cli

from tether.world.spec import WorldConfig, build_world

TINY = ["--set", "model=world:tiny", "--set", "train_questions=12", "--set", "test_questions=10", "--set",
        "wrong_per_question=2", "--set", "easy_pairs=20", "--set", "helper_steps=2", "--set", "rm_steps=2"]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# An end-to-end pipeline run (3-4 s on a 2-core machine): the slow tier, keeping the default run under
# its 5-minute budget; its parts are tested in the default tier.
@pytest.mark.slow
def test_rrm_runs_end_to_end_and_reports_what_its_files_hold(tmp_path, capsys):
    out = tmp_path / "rrm"
    code, shown, err = run_cli(["oversee", "rrm", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    assert "recursive - plain" in shown
    world = build_world(WorldConfig(seed=0))
    summary = json.loads((out / "rrm.json").read_text())

    # The helper: one-fact questions about train lands, nothing else.
    helper = _rows(out / "helper.jsonl")
    assert len(helper) == summary["train"]["helper_demonstrations"] == 4 * 3 * (40 - len(world.heldout_lands))
    for row in helper:
        asked = re.fullmatch(r"What is the (capital|animal|colour) of (\w+)\?", row["messages"][0]["content"])
        assert asked and asked.group(2) not in world.heldout_lands

    # The three RMs: the same pairs, labelled three ways; the gold file agrees with gold everywhere.
    files = {name: _rows(out / f"rm-{name}.jsonl") for name in ("plain", "recursive", "gold")}
    key = lambda r: (r["question"], tuple(sorted((r["chosen"], r["rejected"]))))  # noqa: E731
    assert [key(r) for r in files["plain"]] == [key(r) for r in files["recursive"]] == [key(r) for r in files["gold"]]
    assert all(r["gold_agrees"] for r in files["gold"])
    hard = {name: [r for r in rows if r["question"].startswith("train:")] for name, rows in files.items()}
    assert len(hard["plain"]) == summary["train"]["pairs"] == 12 * 2
    for name, label in (("plain", "unassisted"), ("recursive", "assisted")):
        right = sum(r["gold_agrees"] for r in hard[name]) / len(hard[name])
        assert abs(summary["train"]["labels_right"][label]["value"] - right) < 1e-3  # equal pairs per question
    # No training row names a held-out land.
    named = re.compile(r"\b(" + "|".join(map(re.escape, world.heldout_lands)) + r")\b")
    assert not any(named.search(json.dumps(r)) for rows in files.values() for r in rows)

    for part in summary["test"].values():
        assert set(part["reward_models"]) == {"plain", "recursive", "gold"}
        assert all(0 <= m["ci_low"] <= m["value"] <= m["ci_high"] <= 1 for m in part["reward_models"].values())
        assert part["pairs"] == 2 * part["questions"]
    assert summary["test"]["held-out lands"]["questions"] == 10
