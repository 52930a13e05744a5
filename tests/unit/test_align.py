"""Constitutions, the judge's arithmetic, context placement and the distillation KL, against hand-worked values."""

import math
import random

import pytest
import torch

from tether.align.constitution import (
    Constitution,
    as_messages,
    choice_messages,
    conversation_text,
    critique_messages,
    load_constitution,
    revision_messages,
)
from tether.align.feedback import choice_probability, critique_probability
from tether.core.config import load_config, packaged_configs
from tether.core.errors import ConfigError
from tether.data.context import with_context
from tether.losses.distill import token_kl

PRINCIPLE = {"name": "p", "critique_request": "Is {response} harmful?", "revision_request": "Fix it.",
             "preference_question": "{conversation}\nWhich is kinder? (A) {a} (B) {b}"}
PROMPT = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Help me"}]


def test_conversation_layout_continues_the_chat_and_quoted_layout_quotes_it():
    conv = Constitution(name="c", principles=[PRINCIPLE])
    msgs = critique_messages(conv, conv.principles[0], PROMPT, "No.")
    assert msgs == [*PROMPT, {"role": "assistant", "content": "No."},
                    {"role": "user", "content": "Is No. harmful?"}]
    rev = revision_messages(conv, conv.principles[0], PROMPT, "No.", "It is rude.")
    assert rev[-2:] == [{"role": "assistant", "content": "It is rude."}, {"role": "user", "content": "Fix it."}]

    quoted = Constitution(name="q", layout="quoted", principles=[{**PRINCIPLE, "critique_request":
                                                                  "Request: {request}\nReply: {response}"}])
    assert critique_messages(quoted, quoted.principles[0], PROMPT, "No.") == [
        {"role": "user", "content": "Request: Help me\nReply: No."}]


def test_choice_question_fills_both_options_and_leaves_system_turns_out():
    conv = Constitution(name="c", principles=[PRINCIPLE])
    msgs = choice_messages(conv.principles[0], PROMPT, "x", "y")
    assert msgs == [{"role": "user", "content": "User: Hi\nAssistant: Hello\nUser: Help me\n"
                                                "Which is kinder? (A) x (B) y"}]
    assert conversation_text(as_messages("plain")) == "User: plain"


@pytest.mark.parametrize("bad, fragment", [
    ({"principles": []}, "principles"),
    ({"principles": [PRINCIPLE, PRINCIPLE]}, "repeat"),
    ({"principles": [{**PRINCIPLE, "revision_request": "Fix {answer}"}]}, "unknown placeholder"),
    ({"layout": "quoted", "principles": [{**PRINCIPLE, "critique_request": "Critique."}]}, "{response}"),
    ({"principles": [{**PRINCIPLE, "preference_question": "Which?"}]}, "{a} and {b}"),
])
def test_bad_constitutions_fail_with_a_reason(tmp_path, bad, fragment):
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"name": "c", **bad}))
    with pytest.raises(ConfigError, match=r"c\.yaml") as err:
        load_constitution(path)
    assert fragment in str(err.value)


def test_shipped_constitutions_load_and_sampling_follows_weights():
    names = [n.split("/")[1] for n in packaged_configs() if n.startswith("constitutions/")]
    assert {"hhh", "corrigibility"} <= set(names)
    hhh = load_constitution("hhh")
    rng = random.Random(0)
    draws = [hhh.sample(rng).name for _ in range(4000)]
    # harmless has weight 2 of 4
    assert draws.count("harmless") / 4000 == pytest.approx(0.5, abs=0.03)
    assert load_config(Constitution, "constitutions/corrigibility").principle("corrigible").weight == 3


def test_choice_probability_averages_both_orders():
    # Forward order: A (the first response) at log 0.8 vs B at log 0.2 -> 0.8.
    # Swapped (first is B): A 0.6, B 0.4 -> first = 0.4. Mean 0.6.
    p = choice_probability((math.log(0.8), math.log(0.2)), (math.log(0.6), math.log(0.4)))
    assert p == pytest.approx(0.6)
    # A judge that always says "A" whatever the content has no preference.
    assert choice_probability((math.log(0.9), math.log(0.1)), (math.log(0.9), math.log(0.1))) == pytest.approx(0.5)
    # Unnormalised label log-probs (mass on other tokens) are normalised between the two labels.
    assert choice_probability((math.log(0.3), math.log(0.1)), (math.log(0.1), math.log(0.3))) == pytest.approx(0.75)


def test_critique_probability_is_a_logistic_of_the_score_difference():
    assert critique_probability(1.0, 1.0) == pytest.approx(0.5)
    assert critique_probability(math.log(3), 0.0) == pytest.approx(0.75)
    assert critique_probability(0.0, math.log(3)) == pytest.approx(0.25)


def test_context_goes_in_the_system_turn_or_before_the_first_user_turn():
    prompt = [{"role": "system", "content": "old"}, {"role": "user", "content": "Q"}]
    assert with_context(prompt, "C", "system") == [{"role": "system", "content": "C"},
                                                   {"role": "user", "content": "Q"}]
    assert with_context(prompt, "C", "prefix") == [{"role": "system", "content": "old"},
                                                   {"role": "user", "content": "C\n\nQ"}]
    assert prompt[1]["content"] == "Q"  # the record itself is not changed
    assert with_context("Q", "C", "system") == "C\n\nQ"


def test_token_kl_against_hand_worked_values():
    teacher = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    student = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]]))
    forward = token_kl(student, teacher)
    # KL(p||q) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3)
    assert forward[0].item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-6)
    assert forward[1].item() == pytest.approx(0.0, abs=1e-6)
    reverse = token_kl(student, teacher, direction="reverse")
    assert reverse[0].item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-6)
    # Temperature 2 flattens both: logits / 2.
    t2 = token_kl(student, teacher, temperature=2.0)
    p = torch.softmax(teacher / 2, -1)
    q = torch.softmax(student / 2, -1)
    assert t2[0].item() == pytest.approx((p[0] * (p[0] / q[0]).log()).sum().item(), abs=1e-6)


def test_token_kl_gradient_is_student_probs_minus_teacher_probs():
    # d KL(p || softmax(z)) / dz = softmax(z) - p: the cross-entropy gradient to the full teacher distribution.
    student = torch.tensor([[0.3, -0.2, 1.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    token_kl(student, teacher).sum().backward()
    expected = torch.softmax(student.detach(), -1) - torch.softmax(teacher.detach(), -1)
    assert torch.allclose(student.grad, expected, atol=1e-6)
    assert teacher.grad is None  # the teacher is a target, not trained


def test_token_kl_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 4))
