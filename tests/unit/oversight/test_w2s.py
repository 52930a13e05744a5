"""Weak-to-strong components against hand-worked values: the auxiliary confidence loss and PGR."""

import math

import pytest
import torch

from tether.core.stats import performance_gap_recovered
from tether.losses.w2s import confidence_coef, confidence_loss


def _bce(z: float, t: float) -> float:
    p = 1 / (1 + math.exp(-z))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_the_confidence_loss_matches_the_hand_worked_example():
    # One of two hardened positive (weak mean 0.5): targets 0.75 and 0.25.
    loss = confidence_loss(torch.tensor([2.0, -2.0]), torch.tensor([0.5, 0.5]), coef=0.5)
    assert loss.item() == pytest.approx(0.6269, abs=1e-4)
    assert loss.item() == pytest.approx((_bce(2, 0.75) + _bce(-2, 0.25)) / 2, abs=1e-6)


def test_without_the_auxiliary_term_it_is_cross_entropy_on_the_weak_labels():
    logits, weak = torch.tensor([0.3, -1.2, 2.0, 0.0]), torch.tensor([0.9, 0.2, 0.6, 0.5])
    expected = sum(_bce(z, t) for z, t in zip(logits.tolist(), weak.tolist(), strict=True)) / 4
    assert confidence_loss(logits, weak, coef=0.0).item() == pytest.approx(expected, abs=1e-6)


def test_hardened_labels_keep_the_weak_labels_class_balance_and_carry_no_gradient():
    # Weak labels say a quarter are positive; the student's most confident example is the one hardened to 1.
    logits = torch.tensor([0.1, 3.0, -0.5, 0.2], requires_grad=True)
    weak = torch.tensor([1.0, 0.0, 0.0, 0.0])
    loss = confidence_loss(logits, weak, coef=1.0)
    targets = [0.0, 1.0, 0.0, 0.0]
    assert loss.item() == pytest.approx(sum(_bce(z, t) for z, t in zip(logits.tolist(), targets, strict=True)) / 4,
                                        abs=1e-6)
    loss.backward()
    # The gradient of mean BCE is (σ(z) - target) / B: the targets are constants.
    expected = [(1 / (1 + math.exp(-z)) - t) / 4 for z, t in zip(logits.tolist(), targets, strict=True)]
    assert logits.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_the_coefficient_warms_up_linearly():
    assert confidence_coef(0, warmup_steps=10, coef=0.5) == 0.0
    assert confidence_coef(5, warmup_steps=10, coef=0.5) == 0.25
    assert confidence_coef(50, warmup_steps=10, coef=0.5) == 0.5
    assert confidence_coef(0, warmup_steps=0, coef=0.5) == 0.5


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one logit and one weak label"):
        confidence_loss(torch.zeros(3), torch.zeros(2), coef=0.5)


def test_pgr_matches_the_hand_worked_example_with_an_interval_around_it():
    weak = [1, 1, 1, 0, 0, 1, 0, 1, 0, 1]     # 0.6
    student = [1, 1, 1, 1, 0, 1, 0, 1, 0, 1]  # 0.7
    ceiling = [1, 1, 1, 1, 1, 1, 0, 1, 0, 1]  # 0.8
    found = performance_gap_recovered(weak, student, ceiling, seed=0)
    assert found.value == pytest.approx(0.5) and (found.weak, found.student, found.ceiling) == pytest.approx(
        (0.6, 0.7, 0.8))
    assert found.ci_low <= 0.5 <= found.ci_high and found.n == 10
    # Two examples of gap in ten: the ceiling's lead has an interval that reaches zero.
    assert found.gap_ci_low <= 0 < found.gap_ci_high
    # A student that matches the ceiling on every example recovers the whole gap in every resample.
    full = performance_gap_recovered(weak, ceiling, ceiling, seed=0)
    assert (full.value, full.ci_low, full.ci_high) == (1.0, 1.0, 1.0)
    # A wide, consistent gap is measurable.
    wide = performance_gap_recovered([0] * 30 + [1] * 10, [1] * 20 + [0] * 20, [1] * 40, seed=0)
    assert wide.value == pytest.approx((0.5 - 0.25) / 0.75) and wide.gap_ci_low > 0


def test_pgr_is_undefined_without_a_gap_to_recover():
    same = [1, 0, 1, 0]
    found = performance_gap_recovered(same, [1, 1, 1, 1], same)
    assert math.isnan(found.value) and math.isnan(found.ci_low)
    # A weak model above the ceiling: no gap either (the ratio's sign would say the opposite of the truth).
    above = performance_gap_recovered([1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0])
    assert math.isnan(above.value) and above.weak == 0.75 and above.ceiling == 0.5
    with pytest.raises(ValueError, match="same, non-empty"):
        performance_gap_recovered([1], [1, 0], [1])
