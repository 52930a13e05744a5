"""Cards from a run directory's records: numbers copied exactly and checked back through huggingface_hub, data
hashed, regressions against the base found by hand-worked intervals, and a directory that is not a run refused in
one line."""

import json

import pytest
import yaml

from tether.core.errors import UserError
from tether.pipelines.card import check_card, regressions, sha256, write_cards


def _rate(value, low, high, n=100):
    return {"value": value, "ci_low": low, "ci_high": high, "n": n}


def _run(tmp_path):
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    data = tmp_path / "demos.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    (run / "sft" / "config.yaml").write_text(yaml.safe_dump({"data": {"train": str(data)}, "loop": {"max_steps": 2}}))
    summary = {"schema_version": 1, "world_seed": None, "base_model": "tiny:llama",
               "final_model": str(run / "sft" / "model"), "stages": [
                   {"name": "base", "recipe": "base", "model": "tiny:llama", "seconds": 1.0,
                    "metrics": {"harmless.harmful_compliance": _rate(0.1, 0.05, 0.18),
                                "helpful.task_accuracy": _rate(0.5, 0.4, 0.6)}},
                   {"name": "sft", "recipe": "sft", "model": str(run / "sft" / "model"), "seconds": 2.0,
                    "metrics": {"harmless.harmful_compliance": _rate(0.3333, 0.25, 0.43),
                                "helpful.task_accuracy": _rate(0.55, 0.45, 0.65)}},
                   {"name": "redteam", "recipe": "redteam", "model": str(run / "sft" / "model"), "seconds": 3.0,
                    "metrics": {"asr.direct": _rate(0.125, 0.02, 0.47, 8)}}]}
    (run / "summary.json").write_text(json.dumps(summary))
    return run, data


def test_the_cards_copy_every_final_number_and_hash_the_data(tmp_path):
    run, data = _run(tmp_path)
    written = write_cards(run)
    assert written["metrics_checked"] == 3
    card = (run / "card" / "README.md").read_text()
    assert "value: 0.3333" in card and "value: 0.125" in card
    assert "| harmless.harmful_compliance | 0.3333 [0.2500, 0.4300] | 100 |" in card
    system = (run / "card" / "SYSTEM_CARD.md").read_text()
    assert f"`{data}` | `{sha256(data)}`" in system
    # Harmful compliance rose from [0.05, 0.18] to [0.25, 0.43]: apart, so a known failure; task accuracy did
    # not move apart.
    assert "harmless.harmful_compliance: 0.3333 [0.2500, 0.4300] after the last stage" in system
    assert "- no held-out prompts" in system


def test_a_card_whose_numbers_differ_from_the_summary_is_refused(tmp_path):
    run, _ = _run(tmp_path)
    write_cards(run)
    card = run / "card" / "README.md"
    card.write_text(card.read_text().replace("value: 0.3333", "value: 0.3334"))
    with pytest.raises(UserError, match="differs from"):
        check_card(card, run)


def test_regressions_need_intervals_apart_and_know_which_way_is_better():
    def summary(base, final):
        return {"stages": [{"name": "base", "recipe": "base", "metrics": base},
                           {"name": "x", "recipe": "sft", "metrics": final}]}

    assert regressions(summary({"m": _rate(0.1, 0.0, 0.2)}, {"m": _rate(0.3, 0.15, 0.4)})) == []  # overlapping
    assert len(regressions(summary({"m": _rate(0.1, 0.0, 0.2)}, {"m": _rate(0.3, 0.21, 0.4)}))) == 1
    accuracy = "helpful.task_accuracy"
    assert len(regressions(summary({accuracy: _rate(0.5, 0.4, 0.6)}, {accuracy: _rate(0.2, 0.1, 0.3)}))) == 1
    assert regressions(summary({accuracy: _rate(0.2, 0.1, 0.3)}, {accuracy: _rate(0.5, 0.4, 0.6)})) == []


def test_a_directory_that_is_not_a_run_is_refused_in_one_line(tmp_path, capsys):
    from tether.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["card", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no summary.json" in err and err.strip().count("\n") == 0


def test_a_guard_or_certificate_that_is_not_one_is_refused_before_anything_is_written(tmp_path, capsys):
    from tether.cli.main import main

    run, _ = _run(tmp_path)
    for option in ("--guard", "--verify"):
        with pytest.raises(SystemExit) as exit_info:
            main(["card", str(run), option, str(tmp_path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and str(tmp_path) in err and err.strip().count("\n") == 0
    assert not (run / "card").exists()
    system = (write_cards(run) and (run / "card" / "SYSTEM_CARD.md").read_text())
    assert "No guards were part of this run" in system and "no guards in front of the model" in system
