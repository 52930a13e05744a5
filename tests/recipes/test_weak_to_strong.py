"""`tether experiment weak-to-strong` on tiny models, and the statements it trains on."""

import json
import math

import pytest
from tests.conftest import run_cli

from tether.pipelines.weak_to_strong import most_confident, with_world_seed
from tether.world.datasets import STATEMENT_PARTS, statement_rows
from tether.world.spec import WorldConfig, build_world

# Both models the test build of the world (seconds), so the tests train the real loops on real models.
TINY = ["--set", "weak=world:tiny", "--set", "strong=world:tiny"]


@pytest.mark.parametrize("task", ["facts", "arithmetic"])
def test_statements_are_gold_labelled_half_true_and_each_part_holds_its_own_facts(task):
    world = build_world(WorldConfig(seed=1))
    parts = statement_rows(world, task, seed=0)
    assert set(parts) == set(STATEMENT_PARTS)
    keys = [{r["key"] for r in parts[name]} for name in STATEMENT_PARTS]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    for rows in parts.values():
        assert rows and sum(r["label"] for r in rows) * 2 == len(rows)
    for row in (r for rows in parts.values() for r in rows):
        if task == "arithmetic":
            expression, shown = row["text"].split(" = ")
            assert (eval(expression) == int(shown)) == bool(row["label"])
        else:
            land, attribute = row["key"].split(":")
            text = row["text"]
            # "The colour of X is blue." / "Blue is the colour of X." / "In X, the colour is blue."
            stated = text.split(" is the ")[0] if " is the " in text else text.rstrip(".").split(" is ")[-1]
            truth = getattr(world.land_by_name[land], attribute)
            assert land in text and (stated.lower() == truth.lower()) == bool(row["label"]), text
    assert statement_rows(world, task, seed=0) == parts and statement_rows(world, task, seed=1) != parts
    with pytest.raises(ValueError, match="unknown statement task"):
        statement_rows(world, "poems")


def test_the_confident_share_is_the_replies_with_the_highest_mean_log_probability():
    logprobs = [[-0.1, -0.1], [-1.0, -3.0], [-0.5], [-1.0, -1.0, -1.0]]
    assert most_confident(logprobs, 0.5) == [0, 2]
    assert most_confident(logprobs, 0.75) == [0, 2, 3]
    assert most_confident([[], [-5.0]], 0.5) == [1]  # a reply with no tokens has no confidence
    assert most_confident(logprobs, 0.01) == [0]      # at least one


def test_world_models_take_the_experiments_world_seed():
    assert with_world_seed("world:tiny", 2) == "world:tiny?seed=2"
    assert with_world_seed("world:base?seed=1", 2) == "world:base?seed=1"
    assert with_world_seed("runs/model", 2) == "runs/model"


def test_statement_classifiers_train_weak_ceiling_and_students_and_report_pgr(tmp_path, capsys):
    out = tmp_path / "w2s"
    code, shown, err = run_cli(["experiment", "weak-to-strong", *TINY, "--set", "steps=3", "--set", "per_part=24",
                                "--set", "tasks=[statements-facts]", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "weak_to_strong.json").read_text())
    facts = summary["tasks"]["statements-facts"]
    assert facts["items"] == {"weak": 24, "student": 24, "test": 24}
    assert set(facts["accuracy"]) == {"weak", "ceiling", "student", "student_aux"}
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 24
    # The reported accuracy is what the saved predictions give against gold.
    for name, acc in facts["accuracy"].items():
        right = sum((p[name] > 0.5) == bool(p["label"]) for p in predictions)
        assert acc["value"] == pytest.approx(right / 24, abs=1e-4) and acc["n"] == 24
    weak, student, ceiling = (facts["accuracy"][k]["value"] for k in ("weak", "student", "ceiling"))
    if ceiling > weak:
        assert facts["pgr"]["value"] == pytest.approx((student - weak) / (ceiling - weak), abs=1e-3)
    else:
        assert facts["pgr"]["value"] is None
    assert summary["weak"] == "world:tiny?seed=0" and "PGR" in shown
    assert math.isfinite(facts["weak_label_accuracy"])


def test_question_tasks_train_by_sft_on_gold_or_on_the_weak_models_replies(tmp_path, capsys):
    out = tmp_path / "w2s"
    code, shown, err = run_cli(["experiment", "weak-to-strong", *TINY, "--set", "sft_steps=2", "--set", "per_part=12",
                                "--set", "max_new_tokens=6", "--set", "tasks=[count]", "--out", str(out)], capsys)
    assert code == 0, err
    found = json.loads((out / "weak_to_strong.json").read_text())["tasks"]["count"]
    assert found["items"] == {"weak": 12, "student": 12, "test": 12, "confident": 6} and "pgr_aux" not in found
    # The student was trained on what the weak model said, not on gold.
    weak_replies = [json.loads(line)["messages"][-1]["content"]
                    for line in (out / "count" / "student.jsonl").read_text().splitlines()]
    gold_replies = [json.loads(line)["messages"][-1]["content"]
                    for line in (out / "count" / "ceiling.jsonl").read_text().splitlines()]
    assert all(r.startswith("There are ") for r in gold_replies) and weak_replies != gold_replies
    # The confident student's data: half the weak replies, word for word, the rest left out.
    confident = [json.loads(line)["messages"] for line in (out / "count" / "student_confident.jsonl").read_text()
                 .splitlines()]
    student = [json.loads(line)["messages"] for line in (out / "count" / "student.jsonl").read_text().splitlines()]
    assert len(confident) == 6 and all(m in student for m in confident)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for name in ("weak", "ceiling", "student", "student_confident"):
        assert found["accuracy"][name]["value"] == pytest.approx(
            sum(r[f"{name}_correct"] for r in rows) / 12, abs=1e-4)
