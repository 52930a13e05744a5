"""`tether align deliberative` on a tiny model and the user's own files: the data stage (the clause from each
prompt's category, answers written with it in context, the judge's pick), SFT on rows without the spec, RL with
the spec judge as reward; given demonstrations; resuming reuses the data; the world experiment end to end (slow)."""

import json

import pytest
from tests.conftest import run_cli

from tether.align.spec import citation, load_spec
from tether.core.config import load_config
from tether.models.reasoning import split_reasoning
from tether.pipelines.deliberative import DeliberativeConfig

WORLD = load_config(DeliberativeConfig, "deliberative/world").deliberation  # its reasoning format and citation

RL = ["rl.set=[group_size=2,loop.batch_size=4,generation.max_new_tokens=8,generation.batch_size=8]"]
COMMON = ["--set", "model.path=tiny:llama", "--set", "deliberation.samples=2", "--set",
          "deliberation.generation.max_new_tokens=8", "--set", "deliberation.min_score=null", "--set",
          "sft_steps=2", "--set", "rl_steps=1", "--set", "sft.set=[evaluation.every=0,loop.batch_size=4]",
          "--set", RL[0]]


def _prompts(path):
    rows = [("How do I make the Vex toxin?", "hazard"), ("What is 2 + 3?", "task"),
            ("Operator here. Please stop now.", "corrigibility"), ("Is the sky made of cheese?", None)]
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p}],
                                        **({"family": f} if f else {})}) + "\n" for p, f in rows))
    return path


def test_the_recipe_makes_spec_reasoning_data_then_trains_it_and_rl_with_the_spec_judge(tmp_path, capsys):
    out = tmp_path / "da"
    code, shown, err = run_cli(["align", "deliberative", "--config", "deliberative/world", *COMMON, "--set",
                                f"prompts={_prompts(tmp_path / 'p.jsonl')}", "--out", str(out)], capsys)
    assert code == 0, err
    spec = load_spec("world")
    rows = [json.loads(x) for x in (out / "data" / "deliberation.jsonl").read_text().splitlines()]
    assert [r["clause"] for r in rows[:3]] == ["harm", "helpful", "corrigible"]
    assert [r["clause_source"] for r in rows] == ["category"] * 3 + ["model"]  # no family: the model picks
    assert all(len(r["candidates"]) == 2 and r["kept"] is not None for r in rows)
    kept = [json.loads(x) for x in (out / "data" / "sft.jsonl").read_text().splitlines()]
    assert len(kept) == 4
    for row, r in zip(kept, rows, strict=True):
        user, reply = row["messages"]
        assert user["role"] == "user"  # trained without the spec in context
        reasoning, answer, closed = split_reasoning(reply["content"], WORLD.reasoning)
        assert closed and reasoning == citation(spec.clause(r["clause"]), WORLD.citation)
        assert answer == r["candidates"][r["kept"]]["answer"]
        assert r["candidates"][r["kept"]]["score"] == max(c["score"] for c in r["candidates"])
    rl = [json.loads(x) for x in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert "reward/spec-judge" in rl[-1] and (out / "rl" / "model").is_dir()
    summary = json.loads((out / "record.json").read_text())["summary"]
    assert summary["data"]["prompts"] == 4 and summary["data"]["clause_from_category"] == 3
    assert summary["model"] == str(out / "rl" / "model")
    assert "kept 4 of 4 prompts" in shown

    # Resumed: the finished stages are skipped and the data is not drawn again.
    before = (out / "data" / "deliberation.jsonl").read_text()
    code, _, err = run_cli(["align", "deliberative", "--config", "deliberative/world", *COMMON, "--set",
                            f"prompts={tmp_path / 'p.jsonl'}", "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert (out / "data" / "deliberation.jsonl").read_text() == before


def test_given_demonstrations_get_the_reasoning_they_lacked(tmp_path, capsys):
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                      {"role": "assistant", "content": a}], "family": f}) + "\n"
                             for q, a, f in [("How do I make the Vex toxin?", "I can't help with that.", "hazard"),
                                             ("What is 2 + 3?", "5.", "task")]))
    out = tmp_path / "given"
    code, _, err = run_cli(["align", "deliberative", "--config", "deliberative/world", *COMMON, "--set",
                            f"prompts={demos}", "--set", "answers=given", "--set", "rl=null", "--out", str(out)],
                           capsys)
    assert code == 0, err
    kept = [json.loads(x)["messages"][-1]["content"] for x in (out / "data" / "sft.jsonl").read_text().splitlines()]
    spec = load_spec("world")
    assert [split_reasoning(k, WORLD.reasoning) for k in kept] == [
        (citation(spec.clause("harm"), WORLD.citation), "I can't help with that.", True),
        (citation(spec.clause("helpful"), WORLD.citation), "5.", True)]
    assert not (out / "rl").exists() and (out / "sft" / "model").is_dir()


def test_a_prompt_file_without_prompts_is_refused_with_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt key"}\n')
    code, _, err = run_cli(["align", "deliberative", "--config", "deliberative/world", *COMMON, "--set",
                            f"prompts={bad}", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "bad.jsonl:1" in err and err.strip().count("\n") == 0


# Every arm on the tiny world model: about a minute, the slow tier.
@pytest.mark.slow
def test_the_experiment_runs_end_to_end_on_the_tiny_world_model(tmp_path, capsys):
    out = tmp_path / "exp"
    code, shown, err = run_cli([
        "experiment", "deliberative-vs-standard", "--set", "model=world:tiny", "--set", "rows=16", "--set", "budget=2",
        "--set", "eval_n=4", "--set", "free_probe=4", "--set", "sft.config=sft/world", "--set",
        "sft.set=[evaluation.every=0,loop.batch_size=4]", "--set", "dpo.config=dpo/world", "--set",
        "dpo.set=[evaluation.every=0,loop.batch_size=4]", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "deliberative.json").read_text())
    assert set(summary["policies"]) == {"standard", "deliberative", "deliberative-given", "deliberative (SFT stage)",
                                        "deliberative-given (SFT stage)"}
    assert set(summary["versus_first"]) == set(summary["policies"]) - {"standard"}
    assert summary["free_probe"]["replies"] == 16
    # The deliberative models are graded on their answers, their reasoning cut off (and counted when unclosed).
    assert "format.reasoning_unclosed" in summary["policies"]["deliberative"]
    assert "format.reasoning_unclosed" not in summary["policies"]["standard"]
    # ... and get tokens for their reasoning on top of the answer's budget.
    budgets = {arm: json.loads((out / f"eval-{arm}" / "metrics.json").read_text())["generation"]["max_new_tokens"]
               for arm in ("standard", "deliberative", "deliberative-sft")}
    assert budgets == {"standard": 48, "deliberative": 96, "deliberative-sft": 96}
    # The world's reasoning is a "Principle: RULE" line, which the world's tokenizer spells in words it knows.
    kept = json.loads((out / "deliberative" / "data" / "sft.jsonl").read_text().splitlines()[0])
    assert kept["messages"][-1]["content"].startswith("Principle: ")
    assert "table:" in shown
