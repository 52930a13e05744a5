"""`tether experiment crowd` end to end on a small draw: every annotator labels every pair, agreement and
aggregation are measured against gold, and the Dawid-Skene labels are exported as TRL preference rows."""

import json

import pytest

from tether.cli.main import main


def test_the_crowd_experiment_measures_agreement_and_aggregation_against_gold(tmp_path, capsys):
    out = tmp_path / "crowd"
    with pytest.raises(SystemExit) as done:
        main(["experiment", "crowd", "--set", "pairs=80", "--set", "resamples=50", "--out", str(out)])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "Krippendorff's alpha (nominal)" in printed and "dawid-skene" in printed
    summary = json.loads((out / "crowd.json").read_text())
    assert summary["pairs"] == 80 and summary["labels"] == 80 * 4  # the whole pool on every pair
    alpha = summary["alpha"]
    assert -1 <= alpha["ci_low"] <= alpha["value"] <= alpha["ci_high"] <= 1 and alpha["resamples"] == 50
    methods = summary["agreement_with_gold"]
    assert {"majority", "dawid-skene", "annotator:expert"} <= set(methods)
    assert all(m["n"] == 80 - summary["gold_ties"] for m in methods.values())
    # The pool's expert (least noise, no bias) agrees with gold most, and the label model sees it.
    experts = summary["annotators"]
    assert summary["best_single_annotator"] == "annotator:expert"
    assert experts["expert"]["dawid_skene_accuracy"] > experts["hurried"]["dawid_skene_accuracy"]
    rows = [json.loads(line) for line in (out / "aggregated.jsonl").read_text().splitlines()]
    assert len(rows) == 80 and {"prompt", "chosen", "rejected"} <= set(rows[0])
    # The same pairs by majority, and every raw label a row of its own: reward models are trained on each.
    assert len((out / "majority.jsonl").read_text().splitlines()) == 80
    raw = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]
    assert len(raw) == 80 * 4 and {r["aggregated_by"] for r in raw} == {f"annotator:{a}" for a in experts}
    # Whose preferences: the unbiased annotator against the biased three's majority, where they differ.
    groups = summary["groups"]
    assert groups["members"] == {"biased": ["hurried", "pleaser", "typical"], "unbiased": ["expert"]}
    assert groups["disputed_pairs"] > 0
    sides = groups["on_disputed_pairs_gold_sides_with"]
    assert sides["unbiased"]["value"] > sides["biased"]["value"]
