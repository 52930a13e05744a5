"""Online-RL maths: hand-worked values, independent loop implementations, and estimator properties."""

import math

import pytest
import torch

from tether.losses.rl import (
    AdaptiveKL,
    aggregate,
    aggregate_sum,
    clipped_surrogate,
    gae,
    group_advantages,
    kl_estimate,
    policy_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    value_loss,
    value_loss_per_token,
    whiten,
)


def test_hand_worked_values():
    out = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2, dtype=torch.bool),
              gamma=1.0, lam=1.0)
    assert out.advantages.tolist() == [[0.5, 0.5]] and out.returns.tolist() == [[1.0, 1.0]]
    k = [kl_estimate(torch.tensor(-1.0), torch.tensor(-2.0), kind).item() for kind in ("k1", "k2", "k3")]
    assert k == pytest.approx([1.0, 0.5, math.exp(-1)], abs=1e-6)
    assert group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, eps=0.0).tolist() == pytest.approx(
        [0.866025, -0.866025, -0.866025, 0.866025], abs=1e-5)
    assert group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4, scale="none").tolist() == [0.5, -0.5, -0.5, 0.5]
    assert rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4).tolist() == pytest.approx(
        [2 / 3, -2 / 3, -2 / 3, 2 / 3])
    one = torch.ones(1, 1, dtype=torch.bool)
    up = policy_loss(torch.tensor([[math.log(1.5)]]), torch.zeros(1, 1), torch.tensor([1.0]), one)
    down = policy_loss(torch.tensor([[math.log(1.5)]]), torch.zeros(1, 1), torch.tensor([-1.0]), one)
    assert up.loss.item() == pytest.approx(-1.2) and up.clip_fraction.item() == 1.0
    assert down.loss.item() == pytest.approx(1.5) and down.clip_fraction.item() == 0.0
    asymmetric = policy_loss(torch.tensor([[math.log(1.5)]]), torch.zeros(1, 1), torch.tensor([1.0]), one,
                             clip_high=0.28)
    assert asymmetric.loss.item() == pytest.approx(-1.28)
    assert AdaptiveKL(0.1, 6.0, 100).update(12.0, 10) == pytest.approx(0.102)
    resumed = AdaptiveKL(0.1, 6.0, 100)  # a resumed run's controller, from the checkpoint
    controller = AdaptiveKL(0.1, 6.0, 100)
    controller.update(12.0, 10)
    resumed.load_state_dict(controller.state_dict())
    assert resumed.update(3.0, 10) == controller.update(3.0, 10) == pytest.approx(0.102 * (1 - 0.02))
    # V = 2, V_old = 1, R = 0, clip 0.2: max(4, 1.2²) / 2 = 2.
    assert value_loss(torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[0.0]]), one).item() == 2.0


def test_aggregation_modes():
    per_token = torch.tensor([[1.0, 1.0, 9.0], [2.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert aggregate(per_token, mask, "token-mean").item() == pytest.approx(4 / 3)
    assert aggregate(per_token, mask, "sequence-mean").item() == pytest.approx(1.5)
    assert aggregate(per_token, mask, "constant", max_tokens=3).item() == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate(per_token, mask, "constant")


def _gae_loop(rewards, values, length, gamma, lam):
    advantages, running = [0.0] * length, 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def test_gae_matches_a_loop_over_variable_length_rows():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    lengths = [7, 1, 4, 6, 3]
    mask = torch.tensor([[t < n for t in range(7)] for n in lengths])
    out = gae(rewards, values, mask, gamma=0.97, lam=0.9)
    for row, n in enumerate(lengths):
        want = _gae_loop(rewards[row].tolist(), values[row].tolist(), n, 0.97, 0.9)
        assert out.advantages[row, :n].tolist() == pytest.approx(want, abs=1e-5)
        assert out.advantages[row, n:].abs().sum() == 0 and out.returns[row, n:].abs().sum() == 0
        assert out.returns[row, :n].tolist() == pytest.approx([a + v for a, v in zip(want, values[row, :n].tolist(),
                                                                                       strict=True)], abs=1e-5)


def test_kl_estimators_are_unbiased_where_the_paper_says():
    # Sample from p, estimate KL(p || q): k1 and k3 are unbiased (k3 with lower variance), k2 is not.
    g = torch.Generator().manual_seed(1)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = float((p * (p / q).log()).sum())
    draws = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, logq = p.log()[draws], q.log()[draws]
    k1, k3 = kl_estimate(logp, logq, "k1"), kl_estimate(logp, logq, "k3")
    assert float(k1.mean()) == pytest.approx(exact, abs=0.01)
    assert float(k3.mean()) == pytest.approx(exact, abs=0.01)
    assert float(k3.var()) < float(k1.var()) and (k3 >= 0).all()


def test_group_methods_match_loops():
    g = torch.Generator().manual_seed(2)
    rewards = torch.randn(12, generator=g)
    grpo, rloo = group_advantages(rewards, 4, eps=0.0), rloo_advantages(rewards, 4)
    batch = group_advantages(rewards, 4, scale="batch", eps=0.0)
    for i in range(12):
        group = rewards[(i // 4) * 4:(i // 4 + 1) * 4].tolist()
        mean = sum(group) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / 3)
        assert grpo[i].item() == pytest.approx((rewards[i].item() - mean) / std, rel=1e-5)
        assert batch[i].item() == pytest.approx((rewards[i].item() - mean) / rewards.std().item(), rel=1e-5)
        others = (sum(group) - rewards[i].item()) / 3
        assert rloo[i].item() == pytest.approx(rewards[i].item() - others, abs=1e-6)
    pp = reinforce_pp_advantages(rewards, 4, baseline=True)
    assert float(pp.mean()) == pytest.approx(0.0, abs=1e-6) and float(pp.std(correction=0)) == pytest.approx(1.0)


def test_whiten_and_policy_gradient_direction():
    g = torch.Generator().manual_seed(3)
    x, mask = torch.randn(4, 6, generator=g) * 3 + 2, torch.rand(4, 6, generator=g) > 0.3
    w = whiten(x, mask)
    assert float(w[mask].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(w[mask].var(correction=0)) == pytest.approx(1.0, abs=1e-4) and (w[~mask] == 0).all()
    # A positive advantage pushes the token's log-prob up (the loss falls as it rises).
    logps = torch.zeros(1, 3, requires_grad=True)
    policy_loss(logps, torch.zeros(1, 3), torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool)).loss.backward()
    assert (logps.grad < 0).all()


class _Accelerator:
    """What TRL's loss code calls on its accelerator, for one process."""

    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def reduce(x, reduction="sum"):
        return x

    gather_for_metrics = gather


@pytest.mark.parametrize(("trl_loss", "ours"), [("grpo", "sequence-mean"), ("bnpo", "token-mean"),
                                                ("dr_grpo", "constant"), ("dapo", "token-mean")])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_group_policy_loss_matches_trl(trl_loss, ours, beta):
    """TRL's GRPOTrainer._compute_loss with a stand-in ``self`` whose model returns our log-probs."""
    from collections import defaultdict
    from types import SimpleNamespace

    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer", reason="TRL comes with the dev extra")
    g = torch.Generator().manual_seed(0)
    b, t = 6, 9
    logps = -torch.rand(b, t, generator=g) * 3
    old = logps + 0.3 * torch.randn(b, t, generator=g)        # ratios beyond the clip range on both sides
    ref = logps + 0.5 * torch.randn(b, t, generator=g)
    advantages = torch.randn(b, generator=g)
    mask = torch.ones(b, t)
    for row, n in enumerate([9, 3, 5, 1, 7, 9]):
        mask[row, n:] = 0
    me = SimpleNamespace(
        accelerator=_Accelerator(), model=SimpleNamespace(training=True),
        _metrics=defaultdict(lambda: defaultdict(list)),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type=trl_loss, epsilon_low=0.2, epsilon_high=0.28,
        use_vllm=False, current_gradient_accumulation_steps=1, max_completion_length=t, _entropy_bonus_enabled=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None))
    inputs = {"prompt_ids": torch.zeros(b, 2, dtype=torch.long), "prompt_mask": torch.ones(b, 2),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    theirs = grpo_trainer.GRPOTrainer._compute_loss(me, None, inputs)
    per_token, _ = clipped_surrogate(logps, old, advantages, clip_low=0.2, clip_high=0.28)
    if beta:
        per_token = per_token + beta * kl_estimate(logps, ref, "k3")
    assert aggregate(per_token, mask.bool(), ours, max_tokens=t).item() == pytest.approx(theirs.item(), abs=1e-6)


def test_rloo_advantages_match_trls_formula():
    """TRL's RLOOTrainer baseline (its advantage code is inline in a long method, so restated from it):
    baseline = (group sum − r) / (k − 1); advantage = r − baseline."""
    rewards = torch.tensor([0.3, 1.0, -0.5, 2.0, 0.0, 0.0, 1.0, 4.0])
    grouped = rewards.view(-1, 4)
    baselines = ((grouped.sum(1, keepdim=True) - grouped) / 3).view(-1)
    assert rloo_advantages(rewards, 4).tolist() == pytest.approx((rewards - baselines).tolist(), abs=1e-6)


def test_value_loss_and_summed_aggregation_hand_worked():
    v, old, ret = torch.tensor([[1.0, 0.1]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # Token 1: max(1, 0.04)/2 = 0.5. Token 2: V moves 0.1 (inside the clip): (0.9²)/2 = 0.405.
    assert value_loss_per_token(v, old, ret, clip=0.2)[0].tolist() == pytest.approx([0.5, 0.405])
    per_token, mask = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()
    assert aggregate_sum(per_token, mask, "token-mean").item() == 10.0
    assert aggregate_sum(per_token, mask, "sequence-mean").item() == 2.0 + 4.0
    assert aggregate_sum(per_token, mask, "constant", max_tokens=4).item() == 2.5


def test_best_of_n_estimate_matches_enumerating_subsets():
    import itertools

    from tether.losses.rl import best_of_n_expectation, best_of_n_kl

    assert best_of_n_kl(1) == 0.0 and best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    g = torch.Generator().manual_seed(0)
    selector, value = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    for n in (1, 2, 3, 7):
        brute = [sum(value[p, max(s, key=lambda i: selector[p, i])].item() for s in itertools.combinations(range(7), n))
                 / math.comb(7, n) for p in range(3)]
        assert best_of_n_expectation(selector, value, n).tolist() == pytest.approx(brute, abs=1e-6)
    assert best_of_n_expectation(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[0.0, 1.0, 2.0]]), 2).item() == \
        pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="at least 8"):
        best_of_n_expectation(selector, value, 8)


def test_by_prompt_keeps_each_prompts_completions_in_one_batch():
    from tether.data.collate import prompt_groups as by_prompt

    prompts = [[1], [1], [2, 2], [2, 2], [3], [3], [1], [2, 2]]
    lengths = [5, 9, 4, 4, 20, 21, 6, 3]
    batches = by_prompt(prompts, lengths, groups=2, max_size=8)
    # Groups ordered by their longest row: [2,2] (4), [1] (9), [3] (21); at most 4 rows where a group allows.
    assert batches == [[2, 3, 7], [0, 1, 6], [4, 5]]
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert by_prompt([], [], groups=4, max_size=8) == []
