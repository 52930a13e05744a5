"""The amplification overseer: it routes and reads, never compares; hand-checked on scripted models."""

import random
import re

from tether.pipelines.amplification import amplify, chunks, list_questions, max_question, most_common, stated_number


def _numbers(question):
    return [int(x) for x in re.findall(r"\d+", question)]


def truthful(questions):
    return [f"The largest is {max(_numbers(q))}." for q in questions]


def test_chunks_keep_order_and_never_leave_a_lone_number():
    assert chunks([1, 2, 3, 4, 5, 6, 7, 8], 4) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4, 5]]
    assert chunks([7], 4) == [[7]] and chunks([1, 2, 3], 4) == [[1, 2, 3]]


def test_the_overseer_reads_only_the_stated_number():
    assert stated_number("The largest is 97.") == 97
    assert stated_number("Let me think. The largest is 5, I think") == 5
    assert stated_number("I cannot tell.") is None
    assert most_common(["The largest is 98.", "The largest is 98. 98.", "The largest is 5."]) == {"answer": 98,
                                                                                                 "share": 0.6667}


def test_with_a_model_right_on_every_chunk_the_overseer_is_right_on_every_list():
    lists = list_questions(30, 16, random.Random(0))
    found = amplify(lists, truthful, 4)
    assert [v for v, _ in found] == [max(x) for x in lists]
    # 16 numbers in chunks of 4: four chunk questions, then one over their four answers.
    assert all(len(calls) == 5 for _, calls in found)
    assert found[0][1][-1]["question"] == max_question([c["read"] for c in found[0][1][:4]])


def test_the_overseer_passes_on_the_models_mistakes_and_drops_what_states_nothing():
    def first_is_largest(questions):  # a wrong model: always the first number
        return [f"The largest is {_numbers(q)[0]}." for q in questions]

    assert amplify([[5, 9, 1, 2, 8, 3]], first_is_largest, 3)[0][0] == 5  # chunks (5,9,1) (2,8,3) -> 5, 2 -> 5

    def mute_on_eights(questions):
        return ["I cannot tell." if 8 in _numbers(q) else truthful([q])[0] for q in questions]

    assert amplify([[5, 9, 1, 2, 8, 3]], mute_on_eights, 3)[0][0] == 9   # the (2, 8, 3) chunk drops out
    assert amplify([[2, 8, 3, 8]], mute_on_eights, 2)[0][0] is None       # nothing left to answer with


def test_amplification_rounds_run_end_to_end_and_distil_only_what_the_amplified_system_said(tmp_path, capsys):
    import json

    from tests.conftest import run_cli

    out = tmp_path / "amp"
    code, shown, err = run_cli(["oversee", "amplification", "--set", "model=world:tiny", "--set", "size=2",
                                "--set", "rounds=2", "--set", "train_questions=6", "--set", "test_questions=5",
                                "--set", "sft_steps=2", "--set", "max_new_tokens=6", "--out", str(out)], capsys)
    assert code == 0, err
    rounds = json.loads((out / "amplification.json").read_text())["rounds"]
    assert [r["size"] for r in rounds] == [2, 4]
    assert all(set(r["most_common_answer"]) == {"direct", "amplified", "distilled"} for r in rounds)
    assert all(r[k]["n"] == 5 for r in rounds for k in ("direct_small", "direct", "amplified", "distilled"))
    # Each distillation trains on the overseer's answers: "The largest is N." or "I cannot tell.", nothing gold.
    for k in (0, 1):
        answers = [json.loads(line)["messages"][-1]["content"] for line in (out / f"round{k}.jsonl").read_text()
                   .splitlines()]
        assert len(answers) == 6 and all(re.fullmatch(r"The largest is -?\d+\.|I cannot tell\.", a) for a in answers)
    # Round 1 starts from round 0's distilled model.
    assert "round0/model" in (out / "round1" / "config.yaml").read_text()
    assert "amplified" in shown
