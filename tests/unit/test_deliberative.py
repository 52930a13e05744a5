"""Deliberative alignment's parts by hand: reasoning blocks split and joined, specs from YAML and Markdown (bad
ones refused with where), the spec put in context, the clause a prompt's category picks, a prefilled assistant
turn continued, and the training row (the prompt without the spec)."""

import pytest

from tether.align.deliberative import Deliberation, category_clauses, training_row, with_spec
from tether.align.spec import Spec, citation, load_spec, parse_markdown_spec, render_spec
from tether.core.errors import ConfigError
from tether.models.reasoning import ReasoningFormat, join_reasoning, split_reasoning

FMT = ReasoningFormat()


def test_a_reply_splits_into_reasoning_and_answer():
    assert tuple(split_reasoning("<think>rule 2</think> No.", FMT)) == ("rule 2", "No.", True)
    assert tuple(split_reasoning("  <think> a\nb </think>\n\nYes, 4.", FMT)) == ("a\nb", "Yes, 4.", True)
    assert tuple(split_reasoning("Yes.", FMT)) == ("", "Yes.", True)           # no block: all answer
    assert tuple(split_reasoning("<think>rule 2 and", FMT)) == ("rule 2 and", "", False)  # never closed
    # Templates that open the block in the prompt: the reply starts inside it.
    assert tuple(split_reasoning("rule 2</think>No.", FMT)) == ("rule 2", "No.", True)
    assert split_reasoning(join_reasoning("r", "a", FMT), FMT) == ("r", "a", True)


def test_the_world_spec_loads_and_each_family_has_one_clause():
    spec = load_spec("world")
    families = ("task", "hazard", "jailbreak", "benign", "sycophancy", "unknown", "corrigibility")
    assert [spec.for_category(f).id for f in families] == ["helpful", "harm", "harm", "helpful", "honest", "honest",
                                                           "corrigible"]
    assert spec.for_category("weather") is None and spec.for_category(None) is None
    short = render_spec(spec, details=False)
    assert short.count("\n") == 4 and "[harm] Dangerous procedures: Do not help" in short
    assert len(render_spec(spec)) > len(short) + 200


def test_a_category_governed_twice_is_refused():
    with pytest.raises(ValueError, match="category 'x' is governed by clauses 'a' and 'b'"):
        Spec.model_validate({"name": "s", "clauses": [
            {"id": "a", "title": "A", "text": "t", "categories": ["x"]},
            {"id": "b", "title": "B", "text": "u", "categories": ["x"]}]})


def test_a_markdown_spec_parses_and_a_bad_heading_names_its_line():
    spec = parse_markdown_spec(
        "# House rules\nBe careful.\n\n## harm: Danger\nDo not help with harm.\nReally.\n\nEven in stories.\n"
        "categories: hazard, jailbreak\n\n## kind: Kindness\nBe kind.\n", name="house")
    assert spec.preamble == "Be careful." and spec.ids == ["harm", "kind"]
    harm = spec.clause("harm")
    assert harm.text == "Do not help with harm. Really." and harm.detail == "Even in stories."
    assert harm.categories == ["hazard", "jailbreak"] and spec.clause("kind").categories == []
    with pytest.raises(ConfigError, match=r"rules.md:3: a clause heading is '## id: title'"):
        parse_markdown_spec("## a: A\ntext\n## no title here\n", name="r", source="rules.md")
    with pytest.raises(ConfigError, match="no clauses"):
        parse_markdown_spec("just prose\n", name="r", source="rules.md")


def test_the_spec_goes_in_front_of_the_system_turn_and_a_category_picks_the_clause():
    spec = load_spec("world")
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    (system, user) = with_spec(spec, prompt, "Think first.", details=False, only=spec.clause("harm"))
    assert system["content"].startswith(spec.preamble) and "[helpful]" not in system["content"]
    assert system["content"].endswith("Think first.\n\nBe brief.") and user == prompt[1]
    clauses = category_clauses(spec, [{"family": "jailbreak"}, {"family": "weather"}, {}], "family")
    assert [c.id if c else None for c in clauses] == ["harm", None, None]
    assert category_clauses(spec, [{"family": "jailbreak"}], None) == [None]


def test_a_prefilled_assistant_turn_is_continued_not_answered(tokenizer):
    from tether.models.chat import prompt_text

    begun = prompt_text(tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>a"}])
    fresh = prompt_text(tokenizer, [{"role": "user", "content": "Hi"}])
    assert begun == fresh + "<think>a"


def test_a_citation_is_written_by_its_template():
    clause = load_spec("world").clause("harm")
    assert citation(clause) == "[harm] Dangerous procedures: Do not help with anything that could hurt people."
    assert citation(clause, "{text}") == "Do not help with anything that could hurt people."


def test_the_training_row_drops_the_spec_and_keeps_reasoning_then_answer():
    spec = load_spec("world")
    d = Deliberation("harm", "category", "helpful", [
        {"reasoning": citation(spec.clause("harm")), "answer": "Sure, step one.", "closed": True, "score": -1.0},
        {"reasoning": citation(spec.clause("harm")), "answer": "I can't help.", "closed": True, "score": 2.0}], 1)
    row = training_row({"prompt": [{"role": "user", "content": "How do I make X?"}], "family": "hazard"}, d, FMT)
    assert row is not None and row["family"] == "hazard" and row["clause"] == "harm" and row["judge_score"] == 2.0
    user, reply = row["messages"]
    assert user == {"role": "user", "content": "How do I make X?"}  # no system turn: trained without the spec
    assert split_reasoning(reply["content"], FMT) == (citation(spec.clause("harm")), "I can't help.", True)
    assert training_row({"prompt": "q"}, Deliberation("harm", "model", "harm", [], None), FMT) is None
