"""Recursive reward modelling's parts: multi-fact questions and replies, what raters find with and without
the helper, the crowd's labels, and the routine that asks the helper, against hand-worked values."""

import random

from tether.pipelines.rrm import (
    MultiFact,
    assist,
    crowd_label,
    is_right,
    matches_helper,
    multi_fact_questions,
    one_claim_checked,
    read_answer,
    reply,
    stated,
    wrong_replies,
)
from tether.world.annotators import DEFAULT_POOL, Annotator
from tether.world.spec import WorldConfig, build_world

WORLD = build_world(WorldConfig(seed=0))
Q = MultiFact("q", (("Peyar", "capital"), ("Zorn", "animal"), ("Tesk", "colour")), ("Ixixix", "Mulbo", "red"))


def test_question_and_reply_text() -> None:
    assert Q.question == "What are the capital of Peyar, the animal of Zorn and the colour of Tesk?"
    assert MultiFact("e", (("Peyar", "capital"),), ("Ixixix",)).question == "What is the capital of Peyar?"
    assert reply(Q, Q.truth) == ("The capital of Peyar is Ixixix. The animal of Zorn is Mulbo. "
                                 "The colour of Tesk is red.")


def test_stated_reads_each_fact_wherever_it_is() -> None:
    text = "Great question! Red is nice. the colour of Tesk is Red. The capital of Peyar is Ixixix."
    assert stated(Q, text) == ["Ixixix", None, "Red"]
    assert not is_right(Q, text)  # the animal is not stated
    assert is_right(Q, "What a question! " + reply(Q, ["ixixix", "Mulbo", "RED"]))
    assert not is_right(Q, reply(Q, ["Ixixix", "Mulbo", "blue"]))


def test_wrong_replies_change_exactly_one_fact_to_another_lands_value() -> None:
    names = sorted(WORLD.heldout_lands)  # the wrong values come from these lands only
    world_q = multi_fact_questions(WORLD, names, 20, 3, random.Random(0), prefix="t")
    values = {a: {getattr(WORLD.land_by_name[n], a) for n in names} for a in ("capital", "animal", "colour")}
    for q in world_q:
        assert len({land for land, _ in q.facts}) == 3
        for wrong in wrong_replies(WORLD, q, names, 3, random.Random(q.id)):
            said = stated(q, wrong)
            differ = [i for i, (s, t) in enumerate(zip(said, q.truth, strict=True)) if s != t]
            assert len(differ) == 1 and not is_right(q, wrong)
            assert said[differ[0]] in values[q.facts[differ[0]][1]]


def test_one_claim_check_sees_only_the_checked_fact() -> None:
    wrong_animal = reply(Q, ["Ixixix", "Grob", "red"])
    assert [one_claim_checked(Q, wrong_animal, i) for i in range(3)] == [1.0, 0.0, 1.0]


def test_matches_helper_needs_every_claim_to_agree() -> None:
    helper = {("Peyar", "capital"): "Ixixix", ("Zorn", "animal"): "mulbo", ("Tesk", "colour"): "red"}
    assert matches_helper(Q, reply(Q, Q.truth), helper) == 1.0
    assert matches_helper(Q, reply(Q, ["Ixixix", "Mulbo", "blue"]), helper) == 0.0
    # A helper that is wrong makes the true reply fail and a reply sharing its mistake pass.
    wrong_helper = {**helper, ("Tesk", "colour"): "blue"}
    assert matches_helper(Q, reply(Q, Q.truth), wrong_helper) == 0.0
    assert matches_helper(Q, reply(Q, ["Ixixix", "Mulbo", "blue"]), wrong_helper) == 1.0
    assert matches_helper(Q, reply(Q, Q.truth), {**helper, ("Zorn", "animal"): None}) == 0.0


def test_crowd_follows_findings_and_falls_back_on_style() -> None:
    careful = [Annotator(name="a", noise=0.05), Annotator(name="b", noise=0.05), Annotator(name="c", noise=0.05)]
    plain, flattering = "The capital of Peyar is Ixixix.", "Great question! The capital of Peyar is Ixixix."
    labels = crowd_label(careful, [(1.0, 0.0), (0.0, 1.0)] * 20, [(plain, plain)] * 40, random.Random(0))
    assert labels == [True, False] * 20
    # No finding tells the replies apart: the biased pool's flattery bias decides, for the flattering reply.
    labels = crowd_label(DEFAULT_POOL, [(0.0, 0.0)] * 200, [(flattering, plain)] * 200, random.Random(0))
    assert sum(labels) > 150


def test_read_answer_takes_the_last_stated_word() -> None:
    assert read_answer("The capital of Peyar is Ixixix.") == "Ixixix"
    assert read_answer("It is known that the animal is Mulbo") == "Mulbo"
    assert read_answer("I do not know.") is None


def test_assist_asks_each_fact_once() -> None:
    asked: list[list[str]] = []

    def ask(questions: list[str]) -> list[str]:
        asked.append(questions)
        return [f"The answer is X{i}." for i in range(len(questions))]

    other = MultiFact("o", (("Peyar", "capital"), ("Tesk", "animal")), ("Ixixix", "Grob"))
    answers = assist([Q, other], ask)
    assert len(asked) == 1 and len(asked[0]) == 4 == len(set(asked[0]))
    assert "What is the capital of Peyar?" in asked[0]
    assert set(answers) == {("Peyar", "capital"), ("Zorn", "animal"), ("Tesk", "colour"), ("Tesk", "animal")}
    assert sorted(answers.values()) == ["X0", "X1", "X2", "X3"]
