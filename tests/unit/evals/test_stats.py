"""Interval coverage by simulation, paired tests under the null, and hand-worked values."""

import math

import numpy as np
import pytest

from tether.core.stats import (
    agreement,
    bootstrap_mean,
    holm_adjust,
    mcnemar_exact,
    paired_difference,
    pass_at_k,
    wilson_interval,
)


def test_hand_worked_values():
    a = agreement([True, True, False, False], [True, False, False, False])
    assert (a.accuracy, a.kappa, a.false_negative_rate) == (0.75, 0.5, 0.0)
    assert a.false_positive_rate == pytest.approx(1 / 3)
    # Ten discordant pairs all one way: p = 2 * 0.5**10.
    assert mcnemar_exact([0] * 10, [1] * 10) == pytest.approx(2 / 1024)
    # 3 vs 1 discordant: two-sided tail 2 * (1 + 4) / 16.
    assert mcnemar_exact([1, 0, 0, 0, 1], [0, 1, 1, 1, 1]) == pytest.approx(10 / 16)
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)
    assert pass_at_k(3, 2, 2) == 1.0
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert wilson_interval(5, 10)[1:3] == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_kappa_is_zero_for_chance_agreement_and_one_for_perfect():
    gold = [True, False] * 50
    assert agreement(gold, gold).kappa == 1.0
    assert agreement([True, True, False, False] * 25, [True, False, True, False] * 25).kappa == pytest.approx(0.0)


@pytest.mark.parametrize(("p", "n"), [(0.05, 40), (0.3, 100), (0.5, 300), (0.9, 60)])
def test_wilson_interval_covers_the_true_rate(p, n):
    rng = np.random.default_rng(0)
    hits = rng.binomial(n, p, size=4000)
    covered = np.mean([lo <= p <= hi for lo, hi in (wilson_interval(int(h), n)[1:3] for h in hits)])
    assert 0.93 <= covered <= 0.975, covered


def _clustered(rng, prompts, k):
    # Per-prompt success probabilities vary a lot: samples of one prompt are correlated.
    p = rng.beta(0.5, 0.5, size=prompts)
    return [list(rng.binomial(1, pi, size=k).astype(float)) for pi in p]


def test_cluster_bootstrap_covers_where_a_per_sample_interval_does_not():
    rng = np.random.default_rng(1)
    truth = 0.5  # mean of Beta(0.5, 0.5)
    boot_hits = naive_hits = 0
    trials = 300
    for t in range(trials):
        clusters = _clustered(rng, 60, 8)
        rate = bootstrap_mean(clusters, resamples=1000, seed=t)
        boot_hits += rate.ci_low <= truth <= rate.ci_high
        flat = [x for c in clusters for x in c]
        naive = wilson_interval(int(sum(flat)), len(flat))
        naive_hits += naive.ci_low <= truth <= naive.ci_high
    assert boot_hits / trials >= 0.91, boot_hits / trials
    assert naive_hits / trials <= 0.75, naive_hits / trials  # why clustering matters


def test_paired_tests_hold_their_level_under_the_null_and_find_real_differences():
    rng = np.random.default_rng(2)
    false_positives = 0
    for _ in range(300):
        p = rng.uniform(0.1, 0.9, size=80)
        a = [[float(x)] for x in rng.binomial(1, p)]
        b = [[float(x)] for x in rng.binomial(1, p)]
        false_positives += paired_difference(a, b, resamples=200).p_value < 0.05
    assert false_positives / 300 <= 0.06
    p = rng.uniform(0.1, 0.6, size=200)
    a = [[float(x)] for x in rng.binomial(1, p)]
    b = [[float(x)] for x in rng.binomial(1, np.minimum(1, p + 0.25))]
    result = paired_difference(a, b)
    assert result.method == "mcnemar-exact" and result.p_value < 1e-4 and result.ci_low > 0


def test_permutation_test_for_several_samples_per_prompt():
    rng = np.random.default_rng(3)
    a = _clustered(rng, 50, 4)
    same = paired_difference(a, a)
    assert same.diff == 0 and same.p_value == 1.0 and same.method == "sign-flip-permutation"
    better = [[1.0] * 4 for _ in a]
    assert paired_difference(a, better).p_value < 0.01


def test_empty_inputs_are_not_numbers_not_crashes():
    assert bootstrap_mean([]).n == 0 and math.isnan(bootstrap_mean([]).value)
    assert agreement([], []).n == 0
    with pytest.raises(ValueError, match="pass@3"):
        pass_at_k(2, 1, 3)


def test_bootstrap_of_a_proportion_never_reports_a_zero_width_interval_at_0_or_n():
    # Hand-worked: Wilson at 0/20 is (0, 1.96^2 / (20 + 1.96^2)) = (0, 0.1611); at 20/20, its mirror.
    none = bootstrap_mean([[0.0]] * 20)
    every = bootstrap_mean([[1.0, 1.0]] * 20)
    assert (none.value, none.ci_low, round(none.ci_high, 4)) == (0.0, 0.0, 0.1611)
    assert (every.value, round(every.ci_low, 4), every.ci_high) == (1.0, 0.8389, 1.0)
    # Scores outside [0, 1] are not proportions: the plain percentile interval (zero width here).
    flat = bootstrap_mean([[-1.0]] * 20)
    assert (flat.ci_low, flat.ci_high) == (-1.0, -1.0)
