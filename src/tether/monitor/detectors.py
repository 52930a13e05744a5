"""Drift and change detectors: two-sample tests for a window against a reference, and sequential detectors
for a stream, each with its false-alarm rate set by the user rather than by habit.

Two-sample tests (a window of live traffic against a reference window), each giving a p-value, so a
false-alarm rate per window is the level the alarm is set at (:func:`bonferroni` for several signals):

- :func:`mmd_test`: the maximum mean discrepancy between two samples of vectors (embeddings), Gaussian
  kernel at the median-distance bandwidth, unbiased estimate, permutation null (Gretton et al. 2012);
- :func:`classifier_test`: a classifier two-sample test: the cross-validated AUC of a logistic regression
  telling the two samples apart, against the AUC's null distribution (Mann–Whitney, normal
  approximation); what evidently flags at AUC 0.55, here with its p-value;
- :func:`ks_test` (continuous scalars: lengths, scores, latencies), :func:`chi2_test` (categories: guard
  verdicts, topics), :func:`proportion_test` (rates: refusals, errors).

Sequential detectors (one observation at a time, an alarm when the evidence of a change passes a
threshold), whose false-alarm rate is the average run length between false alarms (ARL0):

- :class:`Cusum`: two-sided CUSUM for a shift of the mean of standardised observations (Page 1954), with
  :func:`cusum_threshold` choosing the threshold for a target ARL0 by Siegmund's approximation;
- :class:`PageHinkley`: the Page–Hinkley test on the running mean (as river and Frouros use it).

Everything here is a pure function of its inputs (arrays in, numbers out) or a small stateful detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TestResult:
    """A two-sample test's statistic and p-value (the chance of a statistic this large with no shift)."""

    statistic: float
    p_value: float

    def alarm(self, alpha: float) -> bool:
        """Whether the test rejects at level ``alpha`` (the false-alarm rate per window)."""
        return self.p_value <= alpha


def bonferroni(alpha: float, signals: int) -> float:
    """The level per signal that keeps the chance of any false alarm among ``signals`` tests at ``alpha``."""
    if signals < 1:
        raise ValueError("bonferroni needs at least one signal")
    return alpha / signals


def _pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and of ``b``."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median distance between distinct points of the pooled sample (the usual kernel bandwidth)."""
    pooled = np.concatenate([np.atleast_2d(x), np.atleast_2d(y)]).astype(np.float64)
    distances = np.sqrt(_pairwise_sq(pooled, pooled))[np.triu_indices(len(pooled), k=1)]
    median = float(np.median(distances)) if distances.size else 0.0
    return median if median > 0 else 1.0


def _mmd2_from_kernel(kernel: np.ndarray, n: int) -> float:
    """The unbiased MMD² of the first ``n`` rows against the rest, from the pooled kernel matrix."""
    m = len(kernel) - n
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """The unbiased estimate of MMD² between samples ``x`` (n × d) and ``y`` (m × d), Gaussian kernel
    ``exp(-|a - b|² / (2 bandwidth²))``; about 0 when both come from one distribution (it can be negative).
    """
    x, y = np.atleast_2d(x).astype(np.float64), np.atleast_2d(y).astype(np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two points in each sample")
    pooled = np.concatenate([x, y])
    kernel = np.exp(-_pairwise_sq(pooled, pooled) / (2.0 * bandwidth**2))
    return _mmd2_from_kernel(kernel, len(x))


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int = 200, bandwidth: float | None = None,
             seed: int = 0) -> TestResult:
    """MMD² of ``x`` against ``y`` and its permutation p-value, ``(1 + #{permuted >= observed}) / (1 +
    permutations)`` (exact in level: never below the chance of a false alarm). The kernel matrix is computed
    once; each permutation re-indexes it."""
    x, y = np.atleast_2d(x).astype(np.float64), np.atleast_2d(y).astype(np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two points in each sample")
    width = median_bandwidth(x, y) if bandwidth is None else bandwidth
    pooled = np.concatenate([x, y])
    kernel = np.exp(-_pairwise_sq(pooled, pooled) / (2.0 * width**2))
    observed = _mmd2_from_kernel(kernel, len(x))
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(len(pooled))
        exceed += _mmd2_from_kernel(kernel[np.ix_(order, order)], len(x)) >= observed
    return TestResult(observed, (1 + exceed) / (1 + permutations))


def auc_null_p_value(auc: float, n_first: int, n_second: int) -> float:
    """One-sided p-value of an AUC this high when the two samples cannot be told apart: the Mann–Whitney
    statistic's normal approximation, AUC ~ N(1/2, (n1 + n2 + 1) / (12 n1 n2))."""
    sd = math.sqrt((n_first + n_second + 1) / (12.0 * n_first * n_second))
    return 0.5 * math.erfc((auc - 0.5) / (sd * math.sqrt(2.0)))


def classifier_test(x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0) -> TestResult:
    """A classifier two-sample test: the AUC of a logistic regression (scikit-learn) telling ``y`` from ``x``,
    each point scored by a model that did not see it (``folds``-fold cross-validation), and the AUC's
    one-sided p-value under no difference (:func:`auc_null_p_value`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = np.atleast_2d(x).astype(np.float64), np.atleast_2d(y).astype(np.float64)
    features = np.concatenate([x, y])
    labels = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), features, labels, cv=splitter,
                               method="predict_proba")[:, 1]
    auc = float(roc_auc_score(labels, scores))
    return TestResult(auc, auc_null_p_value(auc, len(x), len(y)))


def ks_test(x: np.ndarray, y: np.ndarray) -> TestResult:
    """The two-sample Kolmogorov–Smirnov test (scipy): the largest gap between the two empirical CDFs."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return TestResult(float(result.statistic), float(result.pvalue))


def chi2_test(reference: dict[str, int], window: dict[str, int]) -> TestResult:
    """The chi-squared test of homogeneity (scipy) of two count tables over categories (a category absent
    from one counts 0 there; categories neither has are dropped)."""
    from scipy.stats import chi2_contingency

    categories = sorted(c for c in set(reference) | set(window) if reference.get(c, 0) + window.get(c, 0) > 0)
    if len(categories) < 2:
        return TestResult(0.0, 1.0)  # one category: nothing can have shifted between categories
    table = np.array([[reference.get(c, 0) for c in categories], [window.get(c, 0) for c in categories]])
    result = chi2_contingency(table, correction=False)
    return TestResult(float(result.statistic), float(result.pvalue))


def proportion_test(hits_reference: int, n_reference: int, hits_window: int, n_window: int) -> TestResult:
    """The two-sided two-proportion z-test (pooled variance) of a rate: z and its p-value."""
    if min(n_reference, n_window) < 1:
        raise ValueError("proportion_test needs at least one observation on each side")
    pooled = (hits_reference + hits_window) / (n_reference + n_window)
    variance = pooled * (1 - pooled) * (1 / n_reference + 1 / n_window)
    if variance == 0:
        return TestResult(0.0, 1.0)  # both all 0 or all 1: no evidence of a change
    z = (hits_window / n_window - hits_reference / n_reference) / math.sqrt(variance)
    return TestResult(z, math.erfc(abs(z) / math.sqrt(2.0)))


def siegmund_arl(k: float, h: float) -> float:
    """The average run length of a one-sided CUSUM with allowance ``k`` and threshold ``h`` (both in standard
    deviations) on unshifted normal data, by Siegmund's approximation: (e^{2kb} − 2kb − 1) / (2k²) with
    b = h + 1.166 (about 338 at k = 0.5, h = 4, where tables of the exact value give 336; b² in the limit
    k → 0)."""
    b = h + 1.166
    if k == 0:
        return b * b
    return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)


def siegmund_arl_shifted(k: float, h: float, delta: float) -> float:
    """Siegmund's approximation of a one-sided upper CUSUM's average run length when the standardised
    observations have mean ``delta`` (not 0): ``(e^{−2θb} + 2θb − 1) / (2θ²)`` with ``θ = delta − k`` and
    ``b = h + 1.166`` (``b²`` at θ = 0). At ``delta = 0`` it is :func:`siegmund_arl`."""
    theta, b = delta - k, h + 1.166
    if abs(theta) < 1e-9:
        return b * b
    if -2 * theta * b > 700:  # beyond a float's range: no false alarm in any run anyone will see
        return math.inf
    return (math.exp(-2 * theta * b) + 2 * theta * b - 1) / (2 * theta * theta)


def cusum_threshold(arl: float, k: float = 0.5, *, two_sided: bool = True, estimate_sd: float = 0.0,
                    confidence: float = 0.95) -> float:
    """The threshold ``h`` whose unshifted average run length is ``arl`` (a two-sided CUSUM raises a false
    alarm when either side does), by bisection on Siegmund's approximation.

    ``estimate_sd``: the reference mean is an estimate, off from the truth by about ``estimate_sd`` standard
    deviations of a standardised observation (``sqrt(window / reference)`` for a window mean). Every window
    is then standardised with the same error, which shortens the run length sharply (a bias of 0.16 cuts it
    25-fold at ``h`` = 11; Jones, Champ & Rigdon 2004). The threshold is raised until the run length is
    ``arl`` for a reference off by the ``confidence`` quantile of that error, so that with that chance over
    the reference's draw the false alarms come no more often than asked (the guarantee Gandy & Kvaløy 2013
    give by the bootstrap, here from the normal error of a mean).
    """
    bias = _two_sided_quantile(confidence) * estimate_sd
    if bias >= k:
        raise ValueError(f"the reference is too small: its mean may be off by {bias:.2f} standard deviations of a "
                         f"window mean, more than the allowance k = {k}, and no threshold keeps the false alarms "
                         f"down; it needs over {(bias / k) ** 2:.2f} times as many requests (or a smaller window, a "
                         "larger k, a lower confidence)")

    def rate(h: float) -> float:
        up = 1.0 / siegmund_arl_shifted(k, h, bias)
        return up + 1.0 / siegmund_arl_shifted(k, h, -bias) if two_sided else up

    low, high = 0.0, 1.0
    while rate(high) > 1.0 / arl:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if rate(middle) > 1.0 / arl else (low, middle)
    return high


def _two_sided_quantile(confidence: float) -> float:
    """The ``z`` with ``P(|N(0, 1)| <= z) = confidence``."""
    from statistics import NormalDist

    return NormalDist().inv_cdf((1 + confidence) / 2)


class Cusum:
    """Two-sided CUSUM on observations standardised by the reference's ``mean`` and ``std``: upper and lower
    sums ``S+ = max(0, S+ + z − k)``, ``S− = max(0, S− − z − k)``; an alarm when either passes ``h``, after
    which both restart. ``k`` is half the shift (in standard deviations) it is tuned to find fastest."""

    def __init__(self, mean: float, std: float, *, k: float = 0.5, h: float = 5.0) -> None:
        if std <= 0:
            raise ValueError("Cusum needs a positive reference standard deviation")
        self.mean, self.std, self.k, self.h = mean, std, k, h
        self.upper = self.lower = 0.0

    def update(self, value: float) -> bool:
        """Take one observation; whether it raises an alarm."""
        z = (value - self.mean) / self.std
        self.upper = max(0.0, self.upper + z - self.k)
        self.lower = max(0.0, self.lower - z - self.k)
        if self.upper > self.h or self.lower > self.h:
            self.upper = self.lower = 0.0
            return True
        return False


class PageHinkley:
    """The Page–Hinkley test for an increase of the mean: the cumulative deviation from the running mean,
    ``m_t = Σ (x_i − x̄_t − delta)``, against its smallest value so far; an alarm when ``m_t − min m > lam``,
    after which it restarts. (For a decrease, feed it the negated values.)"""

    def __init__(self, *, delta: float = 0.005, lam: float = 50.0) -> None:
        self.delta, self.lam = delta, lam
        self.count, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0

    def update(self, value: float) -> bool:
        """Take one observation; whether it raises an alarm."""
        self.count += 1
        self.mean += (value - self.mean) / self.count
        self.cumulative += value - self.mean - self.delta
        self.minimum = min(self.minimum, self.cumulative)
        if self.cumulative - self.minimum > self.lam:
            self.count, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0
            return True
        return False


def cusum_arl_discrete(values: np.ndarray, probs: np.ndarray, k: float, h: float, *, grid: int = 400) -> float:
    """The average run length of a one-sided upper CUSUM ``S = max(0, S + x − k)``, alarm when ``S > h``,
    for observations ``x`` with the discrete distribution ``values`` / ``probs`` (a binomial count
    standardised, say), by the Markov chain of Brook & Evans (1972): ``S`` on a grid of ``grid`` cells of
    width ``2h / (2·grid − 1)``, the run length from 0 solved exactly on that chain. Exact for lattice
    observations as the grid refines; used where the normal approximation behind :func:`siegmund_arl`
    fails (a rare event's window count is skewed)."""
    values, probs = np.asarray(values, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    keep = probs > 1e-300
    values, probs = values[keep], probs[keep] / probs[keep].sum()
    width = 2.0 * h / (2 * grid - 1)
    start = np.arange(grid)[:, None] * width                          # each cell's midpoint
    after = start + values[None, :] - k                              # grid × support
    target = np.where(after <= width / 2, 0, np.rint(after / width)).astype(np.int64)
    stays = after <= h
    transition = np.zeros((grid, grid))
    rows = np.broadcast_to(np.arange(grid)[:, None], target.shape)
    weights = np.broadcast_to(probs[None, :], target.shape)
    np.add.at(transition, (rows[stays], np.minimum(target[stays], grid - 1)), weights[stays])
    try:
        run = np.linalg.solve(np.eye(grid) - transition, np.ones(grid))
    except np.linalg.LinAlgError:
        return math.inf  # the chain never leaves: no alarm is possible at this threshold
    return float(run[0]) if np.isfinite(run[0]) and run[0] > 0 else math.inf


def binomial_window(p: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A rate's window mean standardised as the monitor does, ``z = (c/n − p) / sqrt(p(1 − p)/n)`` for a count
    ``c ~ Binomial(n, p)``: the values z takes and their probabilities."""
    from scipy.stats import binom

    counts = np.arange(n + 1)
    z = (counts / n - p) / math.sqrt(p * (1 - p) / n)
    return z, binom.pmf(counts, n, p)


def cusum_threshold_rate(p: float, window: int, arl: float, k: float = 0.5, *, reference: int = 0,
                         confidence: float = 0.95, grid: int = 200) -> float:
    """The threshold of a two-sided CUSUM on a rate's standardised window mean (:func:`binomial_window` at the
    reference rate ``p``) whose false alarms come once every ``arl`` windows. With ``reference`` > 0 the
    rate ``p`` is an estimate from that many requests: the run length is made ``arl`` at the true rates
    ``p ± z·sqrt(p(1 − p)/reference)`` (``z`` the ``confidence`` quantile of the error; the worse of the two),
    the windows standardised with the estimate as the monitor does (see :func:`cusum_threshold`)."""
    from scipy.stats import binom

    counts = np.arange(window + 1)
    z = (counts / window - p) / math.sqrt(p * (1 - p) / window)
    spread = _two_sided_quantile(confidence) * math.sqrt(p * (1 - p) / reference) if reference > 0 else 0.0
    truths = sorted({min(max(p + sign * spread, 1e-12), 1 - 1e-12) for sign in (-1.0, 1.0)})
    tables = [binom.pmf(counts, window, q) for q in truths]

    def rate(h: float) -> float:
        return max(1.0 / cusum_arl_discrete(z, probs, k, h, grid=grid)
                   + 1.0 / cusum_arl_discrete(-z, probs, k, h, grid=grid) for probs in tables)

    low, high = 0.0, 1.0
    while rate(high) > 1.0 / arl:
        low, high = high, 2 * high
        if high > 1e4:
            raise ValueError(f"no threshold reaches a run length of {arl:g}")
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if rate(middle) > 1.0 / arl else (low, middle)
    return high


def cusum_threshold_discrete(values: np.ndarray, probs: np.ndarray, arl: float, k: float = 0.5, *,
                             grid: int = 400) -> float:
    """The threshold ``h`` at which a two-sided CUSUM on observations with the discrete distribution
    ``values`` / ``probs`` has unshifted average run length ``arl``: each side's run length from
    :func:`cusum_arl_discrete`, combined as ``1/ARL = 1/ARL+ + 1/ARL−`` (the usual two-sided
    approximation), bisected on ``h``."""
    values, probs = np.asarray(values, dtype=np.float64), np.asarray(probs, dtype=np.float64)

    def both(h: float) -> float:
        up, down = cusum_arl_discrete(values, probs, k, h, grid=grid), cusum_arl_discrete(-values, probs, k, h,
                                                                                         grid=grid)
        return 1.0 / (1.0 / up + 1.0 / down)

    low, high = 0.0, 1.0
    while both(high) < arl:
        low, high = high, 2 * high
        if high > 1e4:
            raise ValueError(f"no threshold reaches a run length of {arl:g}")
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if both(middle) < arl else (low, middle)
    return high
