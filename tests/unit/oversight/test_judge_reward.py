"""Training the overseen: the judge-verdict reward is the judge's probability for the side argued, quotes
checked against the source; its prompt rows carry what it reads; GRPO trains an arguer on it end to end."""

import json

import pytest

from tether.core.errors import UserError
from tether.oversight.protocols import Question, evidence
from tether.oversight.rewards import JudgeVerdictReward, arguer_rows
from tether.scoring.rewards import Completions

SOURCE = "The capital of Peyar is Ixixix. The capital of Dorva is Tesk."
Q = Question("q1", "What is the capital of Peyar?", ("Tesk", "Ixixix"), SOURCE, answer=1)


class Reader:
    """1 + the verified evidence sentences naming the option, normalised."""

    def judge(self, cases):
        out = []
        for q, turns in cases:
            weights = [1 + sum(o in s for s in evidence(turns)) for o in q.options]
            out.append([w / sum(weights) for w in weights])
        return out


def _batch(rows, texts):
    metas = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    return Completions([r["prompt"] for r in rows], texts, [len(t.split()) for t in texts], metas, 32)


def test_the_reward_is_the_judges_probability_for_the_side_argued():
    rows = arguer_rows([Q])
    assert [(r["id"], r["side"], r["options"]) for r in rows] == [("q1:0", 0, ["Tesk", "Ixixix"]),
                                                                   ("q1:1", 1, ["Tesk", "Ixixix"])]
    assert SOURCE in rows[0]["prompt"][0]["content"] and "answer is A: Tesk" in rows[0]["prompt"][0]["content"]
    texts = ["<quote>The capital of Peyar is Tesk</quote>",      # side 0: fabricated, dropped: 1/2
             "<quote>The capital of Peyar is Ixixix</quote>"]    # side 1: verified: 2/3
    out = JudgeVerdictReward(Reader())(_batch(rows, texts))
    assert out.values.tolist() == pytest.approx([0.5, 2 / 3])
    assert out.parts["unverified_quotes"].tolist() == [1.0, 0.0]


def test_a_prompt_row_without_the_columns_the_reward_reads_is_named():
    rows = arguer_rows([Q])
    del rows[1]["source"]
    with pytest.raises(UserError, match="prompt 'q1:1' has no 'source' column"):
        JudgeVerdictReward(Reader())(_batch(rows, ["a", "b"]))


def test_grpo_trains_an_arguer_on_the_judges_verdict(tmp_path):
    from tether.core.config import load_config
    from tether.train import grpo

    data = tmp_path / "arguer.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in arguer_rows([Q] * 4)))
    summary = grpo.run(load_config(grpo.GRPOConfig, None, [
        "model.path=world:tiny", f"data.train={data}", "generation.max_new_tokens=12", "group_size=4",
        "loop.batch_size=8", "loop.max_steps=2", "rewards=[{kind: judge-verdict, judge: 'world:tiny', view: evidence}]",
        "seed=0", f"out={tmp_path / 'run'}"]))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 2 and {"reward/judge-verdict", "reward/judge-verdict/unverified_quotes"} <= set(
        metrics[0])
    assert all(0.0 <= m["reward/judge-verdict"] <= 1.0 for m in metrics)
