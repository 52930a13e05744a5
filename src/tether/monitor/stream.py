"""A streaming monitor: requests grouped into windows, each signal's window mean standardised against the
reference traffic, and a two-sided CUSUM per signal whose threshold gives the false-alarm rate asked for.

Signals are numbers per request (:mod:`tether.monitor.signals`). For each signal the window statistic is the
window's mean, standardised by the reference: ``z = (mean − μ) / (σ / √n)`` with μ and σ the reference's
per-request mean and standard deviation and ``n`` the requests in the window that carry the signal.

Thresholds, two kinds of signal:

- a **rate** (a 0/1 signal: refused, blocked, a category, a novelty flag): the window count is binomial,
  so ``z`` takes known discrete values with known probabilities, and the threshold comes from the exact
  run length of the CUSUM on them (:func:`tether.monitor.detectors.cusum_threshold_discrete`). This matters
  for rare events: at one event per window on average the count is skewed, and the normal approximation
  would alarm several times more often than asked;
- a **mean** (lengths, latency, scores, embedding components): the window mean is close to normal (central
  limit theorem) and Siegmund's approximation sets the threshold
  (:func:`tether.monitor.detectors.cusum_threshold`).

The false-alarm budget is shared out: with ``arl_windows`` the wanted average number of windows between
false alarms over all ``m`` signals, each signal's CUSUM gets ``m · arl_windows`` (the chance that any of
them alarms is at most the sum of their chances: Bonferroni for run lengths). The reference's μ and σ are
estimates; their error is part of the false-alarm rate :mod:`tether.pipelines` measures on long unshifted
streams rather than assumed away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from tether.monitor.detectors import Cusum, cusum_threshold, cusum_threshold_rate

EXAMPLES = 5


@dataclass(frozen=True)
class SignalStats:
    """A signal's reference: per-request ``mean`` and ``std`` over ``n`` reference requests, its ``kind`` and
    its CUSUM threshold ``h``."""

    mean: float
    std: float
    kind: Literal["mean", "rate"]
    h: float
    n: int = 0

    def z(self, window_mean: float, count: int) -> float:
        """A window mean over ``count`` requests, standardised: ``(mean − μ) / (σ / sqrt(count))``."""
        return (window_mean - self.mean) / (self.std / math.sqrt(count))


@dataclass(frozen=True)
class Alarm:
    """A signal's CUSUM passed its threshold at the end of window ``window`` (0-based) of ``scope`` (``all``, or
    ``key:ID`` for one key's traffic), after ``requests`` requests; ``z`` is that window's standardised mean,
    ``mean`` and ``reference`` the raw means; ``examples`` the window's requests that pushed hardest in the
    alarm's direction."""

    signal: str
    window: int
    requests: int
    z: float
    mean: float
    reference: float
    scope: str = "all"
    examples: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "examples": [dict(e) for e in self.examples]}


def signal_stats(values: dict[str, list[float]], rows: int, *, window: int, arl_windows: float, k: float,
                 confidence: float = 0.95, min_std: float = 1e-9) -> dict[str, SignalStats]:
    """Each signal's reference statistics and threshold from its reference ``values`` (over ``rows`` records).
    A signal that never varies in the reference (a rate always 0) gets the variance of one pseudo-event in
    the reference, so its first appearances count as evidence rather than as an infinite shift. The
    reference's statistics are estimates: each threshold holds its share of the budget for a reference off by
    the ``confidence`` quantile of their error (:func:`tether.monitor.detectors.cusum_threshold`).

    Raises:
        ValueError: no signals.
    """
    if not values:
        raise ValueError("the reference has no signals")
    per_signal = arl_windows * len(values)
    out = {}
    for name, seen in sorted(values.items()):
        data = np.asarray(seen, dtype=np.float64)
        mean = float(data.mean())
        if np.isin(data, (0.0, 1.0)).all():
            p = min(max(mean, 1.0 / (rows + 2)), 1.0 - 1.0 / (rows + 2))  # one pseudo-event either way
            out[name] = SignalStats(p, math.sqrt(p * (1 - p)), "rate",
                                    cusum_threshold_rate(p, window, per_signal, k, reference=len(data),
                                                         confidence=confidence), len(data))
            continue
        std = float(data.std(ddof=1)) if len(data) > 1 else 0.0
        try:
            h = cusum_threshold(per_signal, k, estimate_sd=math.sqrt(window / len(data)), confidence=confidence)
        except ValueError:
            z = NormalDist().inv_cdf((1 + confidence) / 2)
            needed = math.floor(window * (z / k) ** 2) + 1
            raise ValueError(f"signal {name} has {len(data)} reference requests; windows of {window} need at least "
                             f"{needed} for its threshold to allow for the reference's own error at confidence "
                             f"{confidence} (a smaller window, a larger k or a lower confidence need fewer)") from None
        out[name] = SignalStats(mean, max(std, min_std), "mean", h, len(data))
    return out


@dataclass
class StreamMonitor:
    """Windows of ``window`` requests; per signal a CUSUM on the window mean, standardised by the reference.

    Build it with :meth:`calibrate` from the signals of reference requests (traffic known to be normal);
    feed it each request's signals with :meth:`update` (each returns the alarms of a window it completed, if
    any; :attr:`last` then holds that window's means).
    """

    window: int
    stats: dict[str, SignalStats]
    k: float = 0.5
    scope: str = "all"
    requests: int = 0
    windows: int = 0
    last: dict[str, float] | None = None
    detectors: dict[str, Cusum] = field(default_factory=dict)
    _sums: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)
    _seen: list[tuple[Mapping[str, float], Mapping[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.detectors = {name: Cusum(0.0, 1.0, k=self.k, h=s.h) for name, s in self.stats.items()}

    @classmethod
    def calibrate(cls, reference: Iterable[Mapping[str, float]], *, window: int = 100,
                  arl_windows: float = 10_000.0, k: float = 0.5, confidence: float = 0.95) -> StreamMonitor:
        """A monitor whose false alarms on traffic like ``reference`` (one dict of signals per request) come
        on average once every ``arl_windows`` windows over all signals together (with chance ``confidence``
        over the reference's draw: see :func:`signal_stats`).

        Raises:
            ValueError: the reference is empty or has no signals.
        """
        values: dict[str, list[float]] = {}
        rows = 0
        for features in reference:
            rows += 1
            for name, value in features.items():
                values.setdefault(name, []).append(value)
        return cls(window, signal_stats(values, rows, window=window, arl_windows=arl_windows, k=k,
                                        confidence=confidence), k)

    def fork(self, scope: str) -> StreamMonitor:
        """A fresh monitor with this one's calibration, for another stream (one key's traffic)."""
        return StreamMonitor(self.window, self.stats, self.k, scope)

    def update(self, features: Mapping[str, float], example: Mapping[str, Any] | None = None) -> list[Alarm]:
        """Take one request's signals (and what to show of it if it ends up an alarm's example); the alarms
        raised when it completes a window (else none)."""
        self.requests += 1
        for name, value in features.items():
            if name in self.stats:
                self._sums[name] = self._sums.get(name, 0.0) + value
                self._counts[name] = self._counts.get(name, 0) + 1
        if example is not None:
            self._seen.append((features, example))
        if self.requests % self.window:
            return []
        alarms, means = [], {}
        for name, stats in self.stats.items():
            n = self._counts.get(name, 0)
            if n == 0:
                continue
            means[name] = window_mean = self._sums[name] / n
            z = stats.z(window_mean, n)
            if self.detectors[name].update(float(z)):
                alarms.append(Alarm(name, self.windows, self.requests, float(z), window_mean, stats.mean, self.scope,
                                    self._examples(name, z > 0)))
        self.last = means
        self.windows += 1
        self._sums.clear()
        self._counts.clear()
        self._seen.clear()
        return alarms

    def _examples(self, name: str, upward: bool) -> tuple[Mapping[str, Any], ...]:
        carrying = [(f[name], i, e) for i, (f, e) in enumerate(self._seen) if name in f]
        carrying.sort(key=lambda t: (-t[0] if upward else t[0], -t[1]))  # ties: the latest first
        return tuple(e for _, _, e in carrying[:EXAMPLES])

    def state(self) -> dict[str, Any]:
        """The calibration, JSON-ready (:meth:`from_state` rebuilds the monitor)."""
        return {"window": self.window, "k": self.k, "stats": {n: asdict(s) for n, s in self.stats.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], scope: str = "all") -> StreamMonitor:
        """The monitor :meth:`state` describes, its CUSUMs at rest."""
        return cls(int(state["window"]), {n: SignalStats(**s) for n, s in state["stats"].items()},
                   float(state["k"]), scope)


def replay(monitor: StreamMonitor, features: Sequence[Mapping[str, float]]) -> list[Alarm]:
    """Every alarm ``monitor`` raises over ``features`` in order."""
    return [alarm for row in features for alarm in monitor.update(row)]
