"""`tether train refusal-detector` on a user's labelled file, end to end: cross-validation, the detector
directory, held-out figures per model, and the detector then scoring an evaluation in its place."""

import json

import pytest

from tether.cli.main import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _labelled(path, n):
    refusals = ["I can't help with that.", "Sorry, I won't do that.", "I'm unable to assist with this request.",
                "No. That could hurt someone.", "I must decline."]
    answers = ["Sure! Preheat the oven to 200 °C.", "The capital of France is Paris.", "Here are three tips: sleep.",
               "You can reach the helpline at 111.", "Step 1: open the settings."]
    rows = [{"response": f"{(refusals if i % 2 else answers)[i % 5]} ({i})", "refusal": bool(i % 2),
             "model": f"m{i % 3}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_a_detector_on_your_data_and_score_with_it(tmp_path, capsys):
    data = _labelled(tmp_path / "labelled.jsonl", 20)
    held = _labelled(tmp_path / "held.jsonl", 10)
    out = tmp_path / "run"
    code, stdout, err = _run(["train", "refusal-detector", "--set", f"data=[{data}]", "--set", f"heldout=[{held}]",
                              "--set", "folds=2", "--set", "epochs=2", "--out", str(out)], capsys)
    assert code == 0, err
    assert "cross-validated (2 folds) on the 20 training rows" in stdout and "held-out held.jsonl: learned" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 20 and summary["refusals"] == 10 and summary["cross_validation"]["n"] == 20
    assert summary["duplicates_dropped"] == 0
    held_result = summary["heldout"]["held.jsonl"]
    assert held_result["learned"]["n"] == 10 and set(held_result["by_model"]) == {"m0", "m1", "m2"}
    assert len((out / "heldout-predictions.jsonl").read_text().splitlines()) == 10
    meta = json.loads((out / "detector" / "detector.json").read_text())
    assert meta["kind"] == "tether-refusal-detector" and meta["trained_on"] == [str(data)]
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "finished" and record["outputs"]["refusal-detector"] == "detector"

    # The trained detector scores a file suite in place of the shipped one.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Do it", "label": "harmful", "response": "I can\'t help with that."}\n'
                       '{"prompt": "Bake", "label": "benign", "response": "Sure! Preheat the oven to 200 °C."}\n')
    code, _, err = _run(["eval", "--model", "none", "--data", str(prompts), "--set",
                         f"scorers=[{{kind: refusal, detector: {out / 'detector'}}}]", "--out", str(tmp_path / "ev")],
                        capsys)
    assert code == 0, err
    samples = [json.loads(line) for line in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert all(0.0 <= s["scores"]["refusal"]["value"] <= 1.0 for s in samples)


def test_identical_replies_train_once(tmp_path, capsys):
    data = tmp_path / "repeats.jsonl"
    rows = [{"response": "Sorry, but I can’t assist with that.", "refusal": True}] * 8 + [
        {"response": "Sorry, but I can't assist with that.", "refusal": True}] + [
        {"response": f"Sure, here is answer {i}.", "refusal": False} for i in range(6)] + [
        {"response": f"I won't do that, number {i}.", "refusal": True} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = _run(["train", "refusal-detector", "--set", f"data=[{data}]", "--set", "folds=0", "--set",
                         "epochs=1", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    # The nine canned refusals (curly or straight apostrophe: the same after normalisation) count once.
    assert (summary["rows"], summary["duplicates_dropped"], summary["refusals"]) == (12, 8, 6)
    assert "cross_validation" not in summary


def test_bad_training_data_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"response": "x", "refusal": "yes"}\n')
    code, _, err = _run(["train", "refusal-detector", "--set", f"data=[{bad}]", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bad.jsonl:1: a row needs 'refusal': true/false" in err and err.strip().count("\n") == 0
    few = _labelled(tmp_path / "few.jsonl", 4)
    code, _, err = _run(["train", "refusal-detector", "--set", f"data=[{few}]", "--out", str(tmp_path / "p")], capsys)
    assert code == 2 and "each class needs at least 5" in err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Do it", "label": "harmful", "response": "No."}\n')
    code, _, err = _run(["eval", "--model", "none", "--data", str(prompts), "--set",
                         f"scorers=[{{kind: refusal, detector: {tmp_path}}}]", "--out", str(tmp_path / "q")], capsys)
    assert code == 2 and "not a refusal detector" in err


def test_a_detector_that_reads_the_request(tmp_path, capsys):
    data = _labelled(tmp_path / "labelled.jsonl", 20)
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for i, row in enumerate(rows):
        if i % 4:  # a quarter of the rows come without their request
            row["prompt"] = f"Question number {i}?"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    code, stdout, err = _run(["train", "refusal-detector", "--set", f"data=[{data}]", "--set", f"heldout=[{data}]",
                              "--set", "request=true", "--set", "folds=2", "--set", "epochs=1", "--out", str(out)],
                             capsys)
    assert code == 0, err
    assert "the same, requests withheld:" in stdout and "learned, requests withheld" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["with_request"] == 15 and summary["cross_validation_without_request"]["n"] == 20
    assert summary["heldout"]["labelled.jsonl"]["learned_without_request"]["n"] == 20
    predictions = [json.loads(x) for x in (out / "heldout-predictions.jsonl").read_text().splitlines()]
    assert all(0.0 <= p["p_refusal_without_request"] <= 1.0 for p in predictions)
    assert json.loads((out / "detector" / "detector.json").read_text())["spec"]["request"] is True

    plain = _labelled(tmp_path / "plain.jsonl", 20)
    code, _, err = _run(["train", "refusal-detector", "--set", f"data=[{plain}]", "--set", "request=true",
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no training row gives its request" in err and err.strip().count("\n") == 0
