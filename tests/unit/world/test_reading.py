"""Reading questions: about lands no model has seen, answerable from the passage, both options quotable, and
train and test about different lands; and the skills the debate experiment teaches from them."""

import random
import re

import pytest

from tether.pipelines.debate import arguer_rows, judge_rows, relevant, sentences
from tether.world.reading import fresh_names, reading_questions
from tether.world.spec import WorldConfig, build_world

WORLD = build_world(WorldConfig(seed=1))


def test_fresh_names_share_nothing_with_the_world_or_each_other():
    names = fresh_names(WORLD, 3600)
    world_names = {n for land in WORLD.lands for n in (land.name, land.capital, land.animal)}
    world_names |= set(WORLD.unknown_lands) | {h.root for h in WORLD.hazards}
    assert len(set(names)) == len(names) and not set(names) & world_names
    assert fresh_names(WORLD, 3600) == names


def test_a_question_is_answered_by_its_passage_and_the_wrong_option_is_another_lands():
    questions = reading_questions(WORLD, 50, "test")
    for q in questions:
        truth, wrong = q.options[q.answer], q.options[1 - q.answer]
        said = sentences(q.source)
        assert len(said) == 9
        assert any(q.subject in s and truth in s and q.attribute in s for s in said)
        # The wrong option is in the passage too, but said of another land.
        assert any(wrong in s and q.attribute in s and q.subject not in s for s in said)
        assert q.question == f"What is the {q.attribute} of {q.subject}?"
    assert {q.answer for q in questions} == {0, 1}
    assert reading_questions(WORLD, 50, "test") == questions
    train = reading_questions(WORLD, 300, "train")
    train_names = {q.subject for q in train} | {o for q in train for o in q.options}
    assert not train_names & ({q.subject for q in questions} | {o for q in questions for o in q.options})
    # Facts hold in their passage only: a land asked about twice has had different capitals or animals.
    said: dict[tuple[str, str], set[str]] = {}
    for q in train:
        said.setdefault((q.subject, q.attribute), set()).add(q.options[q.answer])
    assert any(len(v) > 1 for v in said.values())
    with pytest.raises(ValueError, match="unknown reading split"):
        reading_questions(WORLD, 1, "heldout")


def test_the_arguers_lessons_never_depend_on_which_option_is_true():
    questions = reading_questions(WORLD, 200, "train")
    rows = arguer_rows(questions, random.Random(0))
    sides = []
    for q, row in zip(questions, rows, strict=True):
        prompt, target = row["messages"][0]["content"], row["messages"][1]["content"]
        side = "AB".index(re.search(r"Argue that the answer is ([AB])", prompt).group(1))
        sides.append(side == q.answer)
        quote = re.fullmatch(r"<quote>(.*)</quote>", target).group(1)
        assert quote in relevant(q, side) and quote in q.source
    # Honest and dishonest lessons alike, about half each.
    assert 0.4 < sum(sides) / len(sides) < 0.6


def test_the_judges_lessons_show_passage_sentences_never_the_passage_and_answer_with_gold():
    questions = reading_questions(WORLD, 200, "train")
    rows = judge_rows(questions, random.Random(0))
    sizes = set()
    for q, row in zip(questions, rows, strict=True):
        prompt, target = row["messages"][0]["content"], row["messages"][1]["content"]
        assert target == "AB"[q.answer]
        text = prompt.split("\n")[0].removeprefix("Text: ")
        shown = [] if text == "(none)" else sentences(text)
        sizes.add(len(shown))
        assert all(s in q.source for s in shown) and len(shown) < 9
    assert sizes == {0, 1, 2, 3}


def test_reading_lessons_join_the_corpus_without_changing_its_other_documents():
    from tether.world.corpus import corpus_documents
    from tether.world.reading import reading_banned, reading_pools

    plain = list(corpus_documents(WORLD, 300))
    mixed = list(corpus_documents(WORLD, 300, reading_fraction=0.3))
    lessons = [d for d in mixed if "Text: " in d]
    others = [d for d in mixed if "Text: " not in d]
    assert 60 <= len(lessons) <= 120 and others == plain[:len(others)]
    # A lesson answers from its passage, and names nothing of the world's or of the reading questions' pools.
    banned = reading_banned(WORLD)
    assert set(reading_pools(WORLD, "test")[0]) <= banned and set(reading_pools(WORLD, "train")[1]) <= banned
    for lesson in lessons:
        passage, answer = lesson.split("<|im_start|>assistant\n")
        value = re.findall(r"(\w+)\.?<\|im_end\|>", answer)[0]
        assert value.lower() in passage.split("Question:")[0].lower()
        assert not set(re.findall(r"[A-Z][a-z]+", passage)) & banned


def test_a_build_without_lessons_keeps_the_key_its_fingerprint_is_stated_under():
    import json

    from tether.world.build import FINGERPRINTS, SIZES, WorldBuildConfig

    for key, stated in json.loads(FINGERPRINTS.read_text()).items():
        assert WorldBuildConfig(world=WorldConfig(seed=stated["seed"]), size=stated["size"]).cache_key() == key
    with_lessons = SIZES.get("small").model_copy(update={"reading_fraction": 0.25})
    assert WorldBuildConfig(model=with_lessons).cache_key() != WorldBuildConfig().cache_key()
