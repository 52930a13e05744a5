"""Drift detectors against hand-worked values: MMD², the AUC's null, the proportion and chi-squared tests,
CUSUM and Page–Hinkley step by step; and the false-alarm rates they are calibrated to, by simulation."""

import math

import numpy as np
import pytest

from tether.monitor.detectors import (
    Cusum,
    PageHinkley,
    auc_null_p_value,
    binomial_window,
    bonferroni,
    chi2_test,
    classifier_test,
    cusum_arl_discrete,
    cusum_threshold,
    cusum_threshold_rate,
    ks_test,
    median_bandwidth,
    mmd2_unbiased,
    mmd_test,
    proportion_test,
    siegmund_arl,
    siegmund_arl_shifted,
)


def test_mmd2_by_hand():
    # x = {0, 1}, y = {0, 2}, k(a, b) = exp(-(a - b)^2 / 2): within x e^-1/2, within y e^-2, across the mean of
    # 1, e^-2, e^-1/2, e^-1/2.
    across = (1 + math.exp(-2) + 2 * math.exp(-0.5)) / 4
    expected = math.exp(-0.5) + math.exp(-2) - 2 * across
    assert mmd2_unbiased(np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]), 1.0) == pytest.approx(expected)
    assert median_bandwidth(np.array([[0.0], [1.0]]), np.array([[3.0]])) == 2.0  # distances 1, 2, 3
    with pytest.raises(ValueError, match="two points"):
        mmd2_unbiased(np.array([[0.0]]), np.array([[0.0], [1.0]]), 1.0)


def test_mmd_finds_a_shift_and_not_its_absence():
    rng = np.random.default_rng(0)
    same = mmd_test(rng.normal(size=(60, 5)), rng.normal(size=(60, 5)), permutations=100)
    shifted = mmd_test(rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) + 0.8, permutations=100)
    assert same.p_value > 0.05 and shifted.p_value == pytest.approx(1 / 101)  # none of 100 permutations as large
    assert shifted.alarm(0.05) and not same.alarm(0.05)


def test_the_auc_null_and_the_classifier_test():
    assert auc_null_p_value(0.5, 50, 50) == pytest.approx(0.5)
    sd = math.sqrt(101 / (12 * 50 * 50))  # 0.0580
    assert auc_null_p_value(0.6, 50, 50) == pytest.approx(0.5 * math.erfc(0.1 / sd / math.sqrt(2)))  # 0.042
    rng = np.random.default_rng(1)
    apart = classifier_test(rng.normal(size=(80, 4)), rng.normal(size=(80, 4)) + 1.5)
    alike = classifier_test(rng.normal(size=(80, 4)), rng.normal(size=(80, 4)))
    assert apart.statistic > 0.9 and apart.p_value < 1e-6 and alike.p_value > 0.01


def test_scalar_tests_by_hand():
    assert ks_test([1, 2, 3], [4, 5, 6]).statistic == 1.0
    # [[10, 10], [20, 0]]: expected [[15, 5], [15, 5]], chi2 = 2 (25/15 + 25/5) = 13.33 on one degree of freedom.
    result = chi2_test({"a": 10, "b": 10}, {"a": 20})
    assert result.statistic == pytest.approx(40 / 3) and result.p_value == pytest.approx(2.607e-4, rel=1e-3)
    assert chi2_test({"a": 5}, {"a": 9}).p_value == 1.0
    # 10/100 against 20/100: pooled 0.15, sd sqrt(0.15 * 0.85 * 0.02) = 0.0505, z = 1.980, p = 0.0477.
    z = proportion_test(10, 100, 20, 100)
    assert z.statistic == pytest.approx(1.9803, abs=1e-4) and z.p_value == pytest.approx(0.0477, abs=1e-4)
    assert proportion_test(0, 10, 0, 10).p_value == 1.0
    assert bonferroni(0.01, 4) == 0.0025


def test_cusum_and_page_hinkley_step_by_step():
    cusum = Cusum(0.0, 1.0, k=0.5, h=2.0)
    assert [cusum.update(1.0) for _ in range(5)] == [False, False, False, False, True]  # S+ 0.5, 1, 1.5, 2, 2.5
    assert cusum.upper == 0.0  # restarted after the alarm
    assert [Cusum(0.0, 1.0, k=0.5, h=2.0).update(-4.0)] == [True]  # S- = 3.5: the lower side
    ph = PageHinkley(delta=0.0, lam=1.0)
    # Means 0, 0, 0, 0.5: the cumulative deviation is 0, 0, 0, then 2 - 0.5 = 1.5 > 1.
    assert [ph.update(v) for v in (0.0, 0.0, 0.0, 2.0)] == [False, False, False, True]


def test_cusum_thresholds_give_the_run_length_asked_for():
    assert siegmund_arl(0.5, 4.0) == pytest.approx(336, rel=0.01)  # the tabled ARL0 of k = 0.5, h = 4
    h = cusum_threshold(10_000, k=0.5)
    assert siegmund_arl(0.5, h) == pytest.approx(20_000, rel=1e-6)  # each side twice the run length
    # Simulated: a two-sided CUSUM calibrated to 200 observations between false alarms on unshifted normal data.
    rng = np.random.default_rng(0)
    cusum, runs, length = Cusum(0.0, 1.0, k=0.5, h=cusum_threshold(200)), [], 0
    for value in rng.normal(size=60_000):
        length += 1
        if cusum.update(float(value)):
            runs.append(length)
            length = 0
    mean = float(np.mean(runs))
    assert 170 < mean < 240, (mean, len(runs))  # Siegmund's approximation is within about 10% here


def test_the_markov_chain_run_length_by_hand_and_against_the_tables():
    # k = 0, steps of +1 or -1 with chance 1/2, alarm above 1.5: from 0, L0 = 1 + L0/2 + L1/2 and
    # L1 = 1 + L0/2 (a step up from 1 alarms), so L0 = 6.
    steps, halves = np.array([1.0, -1.0]), np.array([0.5, 0.5])
    assert cusum_arl_discrete(steps, halves, 0.0, 1.5, grid=2) == pytest.approx(6.0)
    assert cusum_arl_discrete(steps, halves, 0.0, 1.5, grid=5) == pytest.approx(6.0)
    # A finely discretised standard normal: the tabled exact ARL0 of k = 0.5, h = 5 is 930.
    x = np.linspace(-8, 8, 1601)
    density = np.exp(-x * x / 2)
    assert cusum_arl_discrete(x, density / density.sum(), 0.5, 5.0) == pytest.approx(930, rel=0.01)


def test_a_rare_rates_threshold_gives_its_run_length_where_the_normal_one_does_not():
    p, window, arl = 0.01, 50, 500.0  # half an event per window on average: a skewed count
    z, probs = binomial_window(p, window)
    assert probs.sum() == pytest.approx(1.0) and z[0] == pytest.approx(-0.5 / math.sqrt(0.99 * 0.5))
    exact, normal = cusum_threshold_rate(p, window, arl), cusum_threshold(arl)
    assert exact > normal  # the skewed upper tail needs a higher threshold

    def simulated(h, streams=4000, steps=4000):
        rng = np.random.default_rng(1)
        upper = np.zeros(streams)
        lower = np.zeros(streams)
        stopped = np.full(streams, steps)
        for t in range(steps):
            counts = rng.binomial(window, p, size=streams)
            zs = (counts / window - p) / math.sqrt(p * (1 - p) / window)
            upper, lower = np.maximum(0, upper + zs - 0.5), np.maximum(0, lower - zs - 0.5)
            fired = ((upper > h) | (lower > h)) & (stopped == steps)
            stopped[fired] = t + 1
        return stopped.mean()

    assert simulated(exact) == pytest.approx(arl, rel=0.1)  # measured 508
    assert simulated(normal) < 0.6 * arl  # the normal approximation's threshold alarms twice as often (255)


def test_thresholds_allow_for_the_references_own_error():
    plain = cusum_threshold(10_000)
    wary = cusum_threshold(10_000, estimate_sd=0.07, confidence=0.95)
    assert wary > plain
    bias = 1.959964 * 0.07  # a reference off by its 95% quantile: the run length is still the one asked for
    rate = 1 / siegmund_arl_shifted(0.5, wary, bias) + 1 / siegmund_arl_shifted(0.5, wary, -bias)
    assert 1 / rate == pytest.approx(10_000, rel=1e-4)
    assert siegmund_arl_shifted(0.5, 4.0, 0.0) == pytest.approx(siegmund_arl(0.5, 4.0))
    assert siegmund_arl_shifted(0.5, 4.0, 1.0) < 20  # a one-sigma shift is found within a few steps
    assert cusum_threshold_rate(0.05, 100, 1000, reference=2000) > cusum_threshold_rate(0.05, 100, 1000)
