"""Interval estimates and tests used wherever a rate is reported or two models are compared."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple


class Rate(NamedTuple):
    """A proportion with its 95% Wilson interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        """The JSON form every tether metric uses: value, ci_low, ci_high, n."""
        return {"value": round(self.value, 4), "ci_low": round(self.ci_low, 4), "ci_high": round(self.ci_high, 4),
                "n": self.n}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> Rate:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    Better than the normal approximation near 0 and 1 and for small n. Example: 5 of 10 gives
    0.5 with interval (0.2366, 0.7634).
    """
    if n == 0:
        return Rate(float("nan"), 0.0, 1.0, 0)
    return _wilson_fractional(successes, n, z)


def poisson_interval(count: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Garwood 1936) interval for a Poisson mean from one ``count``: chi-squared quantiles
    ``χ²(α/2; 2c)/2`` and ``χ²(1 − α/2; 2c + 2)/2``. Example: 0 events give (0, 3.689); 10 give
    (4.795, 18.39)."""
    from scipy.stats import chi2

    alpha = 1.0 - confidence
    low = 0.0 if count == 0 else float(chi2.ppf(alpha / 2, 2 * count)) / 2
    return low, float(chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2


def bootstrap_mean(values: Sequence[Sequence[float]], *, resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Rate:
    """Mean of per-sample values with a percentile bootstrap interval that resamples *clusters*.

    ``values[i]`` holds the samples drawn for prompt ``i`` (one or several). Resampling prompts,
    not samples, keeps the interval honest when several samples share a prompt: they are
    correlated, and treating them as independent would make the interval too narrow.

    For proportions (every value in [0, 1]) the interval is never narrower than the Wilson
    interval over the cluster means with one observation per cluster: a percentile bootstrap
    collapses to zero width at 0 or n (every resample is all zeros), which overstates
    certainty exactly where it matters. Example: 0 successes in 20 single-sample clusters gives
    (0.0, 0.1611), not (0.0, 0.0).
    """
    import numpy as np

    clusters = [np.asarray(v, dtype=float) for v in values if len(v)]
    if not clusters:
        return Rate(float("nan"), float("nan"), float("nan"), 0)
    sums = np.array([c.sum() for c in clusters])
    counts = np.array([len(c) for c in clusters])
    n = int(counts.sum())
    value = float(sums.sum() / n)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(clusters), size=(resamples, len(clusters)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    if all(((c >= 0) & (c <= 1)).all() for c in clusters):
        cluster_means = sums / counts
        z = float(_normal_quantile(1 - alpha))
        floor = _wilson_fractional(float(cluster_means.sum()), len(clusters), z)
        low, high = min(low, floor.ci_low), max(high, floor.ci_high)
    return Rate(value, float(low), float(high), n)


def _wilson_fractional(successes: float, n: int, z: float) -> Rate:
    """Wilson's formula with a possibly fractional success count (cluster means summed)."""
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / denom
    return Rate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def _normal_quantile(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


class PairedResult(NamedTuple):
    """Model B minus model A on the same prompts."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    method: str


def mcnemar_exact(a: Sequence[int], b: Sequence[int]) -> float:
    """Two-sided exact McNemar test (binomial on the discordant pairs) for paired 0/1 outcomes.

    Example: 10 pairs where B succeeds and A fails and 0 the other way give p = 2 * 0.5**10.
    """
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


def paired_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], *, resamples: int = 2000,
                      seed: int = 0) -> PairedResult:
    """Compare two models' per-prompt outcomes on the same prompts (``a[i]`` and ``b[i]``: prompt i).

    One 0/1 sample per prompt: exact McNemar p-value. Otherwise (several samples, or scores):
    a sign-flip permutation test on per-prompt mean differences. The interval is a paired
    bootstrap over prompts either way.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError("paired outcomes need the same prompts on both sides")
    pairs = [(np.mean(x), np.mean(y)) for x, y in zip(a, b, strict=True) if len(x) and len(y)]
    if not pairs:
        return PairedResult(float("nan"), float("nan"), float("nan"), 1.0, 0, "none")
    diffs = np.array([y - x for x, y in pairs])
    rng = np.random.default_rng(seed)
    boot = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    binary = all(len(x) == 1 and len(y) == 1 and x[0] in (0, 1) and y[0] in (0, 1)
                 for x, y in zip(a, b, strict=True))
    if binary:
        p = mcnemar_exact([int(x[0]) for x in a], [int(y[0]) for y in b])
        method = "mcnemar-exact"
    else:
        observed = abs(diffs.mean())
        signs = rng.choice((-1.0, 1.0), size=(resamples, len(diffs)))
        flipped = np.abs((signs * diffs).mean(axis=1))
        p = float((1 + (flipped >= observed - 1e-12).sum()) / (resamples + 1))
        method = "sign-flip-permutation"
    return PairedResult(float(diffs.mean()), float(low), float(high), float(p), len(diffs), method)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control across many comparisons)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def auroc_rows(scores: Any, labels: Any) -> Any:
    """The AUROC of each row of ``scores`` against the same row of boolean ``labels`` (both 2-D, every row
    holding both classes; 1-D for one): the Mann-Whitney U over average ranks, which equals the trapezoidal
    area under the ROC curve, a tie between a positive and a negative counting half. Rows at once, so that a
    thousand bootstrap resamples cost one call."""
    import numpy as np
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64), axis=-1)
    positives = labels.sum(axis=-1)
    negatives = labels.shape[-1] - positives
    u = np.where(labels, ranks, 0.0).sum(axis=-1) - positives * (positives + 1) / 2
    return np.asarray(u / (positives * negatives), dtype=np.float64)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


class Agreement(NamedTuple):
    """How a binary scorer agrees with gold labels."""

    n: int
    accuracy: float
    kappa: float
    false_positive_rate: float
    false_negative_rate: float


def agreement(predicted: Sequence[bool], gold: Sequence[bool]) -> Agreement:
    """Accuracy, Cohen's kappa (Cohen 1960), FPR = FP / gold negatives, FNR = FN / gold positives.

    Example: predicted (1,1,0,0), gold (1,0,0,0): accuracy 0.75, kappa 0.5, FPR 1/3, FNR 0.
    """
    n = len(gold)
    if n != len(predicted):
        raise ValueError("predicted and gold labels differ in length")
    if n == 0:
        nan = float("nan")
        return Agreement(0, nan, nan, nan, nan)
    tp = sum(1 for p, g in zip(predicted, gold, strict=True) if p and g)
    fp = sum(1 for p, g in zip(predicted, gold, strict=True) if p and not g)
    fn = sum(1 for p, g in zip(predicted, gold, strict=True) if not p and g)
    tn = n - tp - fp - fn
    observed = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    kappa = 1.0 if expected == 1 else (observed - expected) / (1 - expected)
    fpr = fp / (fp + tn) if fp + tn else float("nan")
    fnr = fn / (fn + tp) if fn + tp else float("nan")
    return Agreement(n, observed, kappa, fpr, fnr)


class GapRecovered(NamedTuple):
    """Performance gap recovered with its bootstrap interval (see :func:`performance_gap_recovered`)."""

    value: float
    ci_low: float
    ci_high: float
    weak: float
    student: float
    ceiling: float
    n: int
    gap_ci_low: float   # the ceiling's lead over the weak model, 95% bootstrap interval: where it reaches
    gap_ci_high: float  # zero there is no measurable gap, and PGR's value is noise


def performance_gap_recovered(weak: Sequence[float], student: Sequence[float], ceiling: Sequence[float], *,
                              resamples: int = 2000, seed: int = 0) -> GapRecovered:
    """PGR = (student - weak) / (ceiling - weak) over per-example scores on the same test examples
    (Burns et al. 2023): 0 when the student trained on weak labels is no better than its supervisor,
    1 when it matches the same model trained on gold.

    ``weak[i]``, ``student[i]``, ``ceiling[i]``: example i's score (1/0 for right/wrong) under the weak
    supervisor, the strong student trained on its labels, and the strong model trained on gold. PGR is
    defined only where the ceiling is above the weak model: otherwise there is no gap to recover and the
    value is NaN (with a negative gap the ratio's sign would invert its meaning). The interval resamples
    examples (all three models together, so their correlation is kept), leaving out resamples without a
    positive gap.

    Example (hand-worked): accuracies 0.6 (weak), 0.7 (student), 0.8 (ceiling): PGR = 0.1 / 0.2 = 0.5.
    """
    import numpy as np

    w, s, c = (np.asarray(x, dtype=float) for x in (weak, student, ceiling))
    if not (len(w) == len(s) == len(c)) or not len(w):
        raise ValueError("weak, student and ceiling need scores on the same, non-empty test examples")

    def ratio(ws: Any, ss: Any, cs: Any) -> Any:
        gap = cs - ws
        return np.where(gap > 0, (ss - ws) / np.where(gap > 0, gap, 1.0), np.nan)

    value = float(ratio(w.mean(), s.mean(), c.mean()))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(w), size=(resamples, len(w)))
    ws, ss, cs = w[index].mean(axis=1), s[index].mean(axis=1), c[index].mean(axis=1)
    gap_low, gap_high = np.quantile(cs - ws, [0.025, 0.975])
    boot = ratio(ws, ss, cs)
    boot = boot[~np.isnan(boot)]
    low, high = (np.quantile(boot, [0.025, 0.975]) if len(boot) else (float("nan"), float("nan")))
    return GapRecovered(value, float(low), float(high), float(w.mean()), float(s.mean()), float(c.mean()), len(w),
                        float(gap_low), float(gap_high))
