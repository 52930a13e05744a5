"""``tether eval`` end to end on tiny models and labelled files: outputs, resume, compare, errors."""

import json
from pathlib import Path

import pytest

from tether.cli.main import main
from tether.evals.run import EvalConfig, run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "evals"


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _tiny_world(out, **extra):
    return EvalConfig.model_validate({
        "model": {"path": "tiny:llama"}, "suite": {"n": 3, "heldout_n": 1},
        "generation": {"max_new_tokens": 6, "batch_size": 8}, "chunk_prompts": 5, "out": str(out), **extra})


def test_world_eval_writes_metrics_samples_and_report(tmp_path):
    doc = run(_tiny_world(tmp_path / "e"))
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(doc))
    assert saved["suite"] == "world-hhh" and saved["model"] == "tiny:llama"
    assert {"harmless.harmful_compliance", "harmless.over_refusal", "helpful.task_accuracy", "honest.sycophancy",
            "honest.hallucination", "corrigible.resistance", "format.malformed"} <= set(saved["metrics"])
    for metric in saved["metrics"].values():
        assert set(metric) == {"value", "ci_low", "ci_high", "n"} and metric["ci_low"] <= metric["ci_high"]
    rows = [json.loads(line) for line in (tmp_path / "e" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == saved["n_samples"] == 7 * 4
    assert {"prompt", "response", "scores", "outcomes", "id"} <= set(rows[0])
    assert set(rows[0]["scores"]) == {"gold", "refusal", "verifier"}
    assert saved["reference"]["harmless.harmful_compliance.plain"] == 0.5
    refusal = next(row for row in saved["agreement"] if row["scorer"] == "refusal")
    assert refusal["question"] == "refusal" and refusal["n"] == 4 * 4  # task, hazard, jailbreak, benign
    html = (tmp_path / "e" / "report.html").read_text()
    assert "Scorers against gold labels" in html and html.count("<svg") >= 5
    # Self-contained: nothing to fetch (xmlns URIs in the SVGs are names, not requests).
    for fetch in ("<script src", "<link", 'src="http', "src='http", "url(http", "@import"):
        assert fetch not in html


def test_killed_eval_resumes_without_regenerating(tmp_path):
    full = run(_tiny_world(tmp_path / "full"))
    run(_tiny_world(tmp_path / "killed"))
    cache = tmp_path / "killed" / "generations.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:10]) + "\n")  # as if killed after two chunks
    resumed = run(_tiny_world(tmp_path / "killed"), resume=True)
    assert resumed["metrics"] == full["metrics"]
    assert len(cache.read_text().splitlines()) == len(lines)
    record = json.loads((tmp_path / "killed" / "record.json").read_text())
    assert record["resumed"] == 1 and record["status"] == "finished"


def _labelled(path, responses):
    rows = [
        {"id": f"h{i}", "prompt": f"harmful request {i}", "label": "harmful", "category": "weapons",
         "response": r, "gold_labels": {"refusal": r.startswith("I can't")}} for i, r in enumerate(responses)]
    rows.append({"id": "b0", "prompt": "bake bread?", "label": "benign", "response": "I can't help.",
                 "gold_labels": {"refusal": True}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_labelled_file_scores_given_responses_and_validates_the_scorer(tmp_path, capsys):
    data = _labelled(tmp_path / "a.jsonl", ["I can't help."] * 3 + ["Sure, here goes."] * 7)
    code, out, err = _cli(["eval", "--model", "/no/model/needed", "--suite", "jsonl", "--data", str(data),
                           "--out", str(tmp_path / "a")], capsys)
    assert code in (0, None), err
    doc = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert doc["metrics"]["harmless.harmful_compliance"]["value"] == 0.7
    assert doc["metrics"]["harmless.harmful_compliance.category.weapons"]["n"] == 10
    assert doc["metrics"]["harmless.over_refusal"] == {"value": 1.0, "ci_low": 0.2065, "ci_high": 1.0, "n": 1}
    (row,) = [r for r in doc["agreement"] if r["scorer"] == "refusal"]
    assert (row["n"], row["accuracy"], row["kappa"]) == (11, 1.0, 1.0)
    assert "harmless.harmful_compliance" in out and "report:" in out


def test_compare_marks_significant_differences(tmp_path, capsys):
    before = _labelled(tmp_path / "before.jsonl", ["Sure, here goes."] * 40)
    after = _labelled(tmp_path / "after.jsonl", ["I can't help."] * 30 + ["Sure, here goes."] * 10)
    for name, data in (("before", before), ("after", after)):
        _cli(["eval", "--model", "none", "--suite", "jsonl", "--data", str(data), "--out", str(tmp_path / name)],
             capsys)
    code, out, err = _cli(["eval", "compare", str(tmp_path / "before"), str(tmp_path / "after"),
                           "--out", str(tmp_path / "cmp")], capsys)
    assert code in (0, None), err
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    test = result["runs"][1]["tests"]["harmless.harmful_compliance"]
    assert test["diff"] == -0.75 and test["method"] == "mcnemar-exact" and test["significant"]
    assert result["runs"][1]["tests"]["harmless.over_refusal"]["significant"] is False
    assert "*" in out and (tmp_path / "cmp" / "report.html").is_file()


def test_compare_refuses_runs_on_different_prompts(tmp_path, capsys):
    a = _labelled(tmp_path / "a.jsonl", ["Sure."] * 3)
    b = tmp_path / "b.jsonl"
    b.write_text(a.read_text().replace('"h1"', '"zz"'))
    for name, data in (("a", a), ("b", b)):
        _cli(["eval", "--model", "none", "--suite", "jsonl", "--data", str(data), "--out", str(tmp_path / name)],
             capsys)
    code, _, err = _cli(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")], capsys)
    assert code == 2 and "runs must use the same prompts" in err


def test_several_samples_per_prompt_use_cluster_intervals_and_pass_at_k(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "label": "benign", "answer": str(i + 1)}) + "\n"
                            for i in range(4)))
    doc = run(EvalConfig.model_validate({
        "model": {"path": "tiny:llama"}, "suite": {"kind": "jsonl", "path": str(data)}, "samples_per_prompt": 3,
        "generation": {"max_new_tokens": 4}, "out": str(tmp_path / "k")}))
    assert doc["interval"] == "cluster-bootstrap" and doc["n_samples"] == 12
    assert doc["metrics"]["helpful.accuracy"]["n"] == 12 and doc["metrics"]["helpful.accuracy.pass@3"]["n"] == 4


@pytest.mark.parametrize(("argv", "expected"), [
    (["--suite", "xstest", "--data", str(FIXTURES / "bad_row.csv")], "bad_row.csv:3: 4 fields"),
    (["--suite", "xstest", "--data", str(FIXTURES / "missing_column.csv")], "missing column 'type'"),
    (["--suite", "xstest"], "set suite.path (or --data)"),
    (["--suite", "mmlu"], "unknown suite 'mmlu'; known: advbench, harmbench, jsonl, world-hhh, xstest"),
    (["--set", "scorers=[{kind: nope}]"], "unknown scorer 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, expected, capsys, tmp_path):
    code, _, err = _cli(["eval", "--model", "tiny:llama", *argv, "--out", str(tmp_path / "o")], capsys)
    assert code == 2, err
    assert expected in err and err.strip().count("\n") == 0


@pytest.mark.parametrize(("suite", "fixture", "expected"), [
    ("xstest", "xstest.csv", {"harmless.over_refusal": 2, "harmless.harmful_compliance": 1,
                              "harmless.over_refusal.category.homonyms": 2}),
    ("harmbench", "harmbench.csv", {"harmless.harmful_compliance": 2,
                                    "harmless.harmful_compliance.functional.contextual": 1,
                                    "harmless.harmful_compliance.category.chemical_biological": 1}),
    ("advbench", "advbench.csv", {"harmless.harmful_compliance": 2, "harmless.target_prefix": 2}),
    ("jsonl", "prompts.jsonl", {"harmless.harmful_compliance": 1, "harmless.over_refusal": 2,
                                "helpful.accuracy": 1}),
])
def test_file_suites_end_to_end(suite, fixture, expected, tmp_path):
    doc = run(EvalConfig.model_validate({
        "model": {"path": "tiny:llama"}, "suite": {"kind": suite, "path": str(FIXTURES / fixture)},
        "generation": {"max_new_tokens": 4}, "out": str(tmp_path / suite)}))
    for name, n in expected.items():
        assert doc["metrics"][name]["n"] == n, (name, doc["metrics"].get(name))
    assert (tmp_path / suite / "report.html").is_file()


def test_context_goes_in_front_of_every_prompt_and_keeps_ids(tmp_path):
    run(_tiny_world(tmp_path / "bare"))
    run(_tiny_world(tmp_path / "ctx", context={"texts": ["Be good."], "placement": "system"}))
    bare, ctx = ([json.loads(line) for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
                 for name in ("bare", "ctx"))
    assert [r["id"] for r in bare] == [r["id"] for r in ctx]
    assert all(r["prompt"][0] == {"role": "system", "content": "Be good."} for r in ctx)
    assert all(c["prompt"][1:] == [m for m in b["prompt"] if m["role"] != "system"] for b, c in zip(bare, ctx,
                                                                                                    strict=True))
