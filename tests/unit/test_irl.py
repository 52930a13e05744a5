"""IQ-Learn's loss against hand-worked values, its SFT special case, the next-state bookkeeping, and the
recovered reward summing per-token rewards per reply."""

import math

import torch

from tether.losses.irl import iq_learn_loss, next_states
from tether.losses.sft import sft_loss


def test_next_states_follow_a_reply_and_stop_at_its_end_or_a_gap():
    assert next_states(torch.tensor([[False, True, True, False, True]])).tolist() == [1, -1, -1]
    two_rows = torch.tensor([[False, True, True, True], [False, False, True, True]])
    assert next_states(two_rows).tolist() == [1, 2, -1, 4, -1]


def test_one_terminal_token_by_hand():
    logits, action, end = torch.tensor([[0.0, math.log(3)]]), torch.tensor([1]), torch.tensor([-1])
    plain = iq_learn_loss(logits, action, end, alpha=None)
    assert abs(float(plain.loss_sum) - math.log(4 / 3)) < 1e-6  # -log π(a): the NLL
    regularised = iq_learn_loss(logits, action, end, alpha=1.0)
    assert abs(float(regularised.loss_sum) - (math.log(4 / 3) + math.log(3) ** 2 / 4)) < 1e-6
    assert abs(float(plain.rewards[0]) - math.log(3)) < 1e-6


def test_two_tokens_by_hand_with_a_discount():
    # Token 0 (logits [0, 0], action 0) leads to token 1 (logits [ln 3, 0], action 0, the last).
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    loss = iq_learn_loss(logits, torch.tensor([0, 0]), torch.tensor([1, -1]), gamma=0.5, alpha=None)
    v0, v1 = math.log(2), math.log(4)
    r0, r1 = 0.0 - 0.5 * v1, math.log(3)
    assert torch.allclose(loss.rewards, torch.tensor([r0, r1]))
    expected = -(r0 + r1) + (v0 - 0.5 * v1) + v1
    assert abs(float(loss.loss_sum) - expected) < 1e-6


def test_without_the_regulariser_it_is_sft_for_any_discount():
    torch.manual_seed(0)
    logits, actions = torch.randn(6, 11), torch.randint(0, 11, (6,))
    token_logps = logits.log_softmax(-1).gather(1, actions[:, None]).squeeze(1)
    nll = sft_loss(token_logps[None], torch.ones(1, 6, dtype=torch.bool)).loss_sum
    following = torch.tensor([1, 2, -1, 4, 5, -1])
    for gamma in (0.0, 0.9):  # without the regulariser the value terms cancel, whatever the discount
        iq = iq_learn_loss(logits, actions, following, gamma=gamma, alpha=None).loss_sum
        assert torch.allclose(iq, nll, atol=1e-5)
    assert not torch.allclose(iq_learn_loss(logits, actions, following, gamma=0.9, alpha=1.0).loss_sum, nll)


def test_irft_splits_steps_over_rounds_and_cycles_demonstrations():
    from tether.train.irl import round_indices, round_steps

    assert round_steps(10, 3) == [4, 3, 3]
    assert round_steps(2, 2) == [1, 1]
    picked = round_indices(4, 10, seed=0, round_=1)
    assert len(picked) == 10 and sorted(picked[:4]) == [0, 1, 2, 3] and sorted(picked[4:8]) == [0, 1, 2, 3]
    assert picked != round_indices(4, 10, seed=0, round_=2)  # each round draws its own order
    assert picked == round_indices(4, 10, seed=0, round_=1)  # and a resumed round the same one


def test_a_demonstration_splits_into_its_prompt_and_last_assistant_turn():
    from tether.data.records import SFTRecord

    chat = SFTRecord.model_validate({"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4."}]})
    plain = SFTRecord.model_validate({"prompt": "Q: 1 + 1 =", "completion": " 2"})
    (prompt, reply), (p2, r2) = chat.prompt_and_reply(), plain.prompt_and_reply()
    assert [m["content"] for m in prompt] == ["Hi", "Hello.", "2 + 2?"] and reply == "4."
    assert (p2, r2) == ("Q: 1 + 1 =", " 2")
