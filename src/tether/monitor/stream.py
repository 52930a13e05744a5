"""A streaming monitor: requests grouped into windows, each signal's window statistic standardised against
the reference traffic, and a two-sided CUSUM per signal whose threshold gives the false-alarm rate asked for.

Signals are numbers per request (:func:`scalar_signals`: lengths, latency, refusal and block flags, guard
scores; one 0/1 rate per category of a categorical field; a few principal components of an embedding).
For each signal the window statistic is the window's mean, which for independent requests is close to
normal (the central limit theorem), so a CUSUM on its standardised value has the run length Siegmund's
approximation gives (:func:`tether.monitor.detectors.cusum_threshold`). The reference's window means are
estimated from the reference itself: their mean is the reference mean and their standard deviation the
reference's over the square root of the window size.

The false-alarm budget is shared out: with ``arl_windows`` the wanted average number of windows between
false alarms over all ``m`` signals, each signal's CUSUM gets ``m · arl_windows`` (the chance that any of
them alarms is at most the sum of their chances: Bonferroni for run lengths).

Where the normal approximation is weak: a rate whose events are rare in a window (fewer than about five
expected) has a skewed window mean, and its false-alarm rate is then higher than asked; such signals want
an exact (binomial or Poisson) CUSUM, not written yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tether.monitor.detectors import Cusum, cusum_threshold

Record = Mapping[str, Any]
Extractor = Callable[[Record], dict[str, float]]


@dataclass(frozen=True)
class Alarm:
    """A signal's CUSUM passed its threshold at the end of window ``window`` (0-based), after ``requests``
    requests; ``z`` is that window's standardised mean, ``mean`` and ``reference`` the raw means."""

    signal: str
    window: int
    requests: int
    z: float
    mean: float
    reference: float


def scalar_signals(record: Record) -> dict[str, float]:
    """The numbers a request's record carries, by the names of tether's audit rows and eval samples:
    ``prompt_tokens``, ``completion_tokens``, ``latency_ms``, whether it was refused (``refused``) or blocked
    (``status`` 400 or ``finish_reason`` content_filter), and each guard's score (``guard:NAME``)."""
    out: dict[str, float] = {}
    for name in ("prompt_tokens", "completion_tokens", "latency_ms", "prompt_chars", "response_chars"):
        value = record.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    if isinstance(record.get("refused"), bool):
        out["refused"] = float(record["refused"])
    if "status" in record or "finish_reason" in record:
        out["blocked"] = float(record.get("status") == 400 or record.get("finish_reason") == "content_filter")
    for verdict in record.get("guards") or []:
        if isinstance(verdict, dict) and isinstance(verdict.get("score"), int | float):
            out[f"guard:{verdict.get('guard')}"] = float(verdict["score"])
    return out


def category_signals(field_name: str, categories: Sequence[str]) -> Extractor:
    """A 0/1 signal per category of ``field_name`` (``field_name=CATEGORY``), and one for any other value
    (``field_name=other``): a shift in the mix of topics, guard categories or keys shows as a rate change."""
    known = list(categories)

    def extract(record: Record) -> dict[str, float]:
        value = record.get(field_name)
        out = {f"{field_name}={c}": float(value == c) for c in known}
        out[f"{field_name}=other"] = float(value not in known)
        return out

    return extract


@dataclass
class Projection:
    """The top principal components of reference embeddings: new embeddings as a few scalar signals."""

    mean: np.ndarray
    components: np.ndarray  # k × d, rows orthonormal
    name: str = "embedding"

    @classmethod
    def fit(cls, reference: np.ndarray, k: int = 8, *, name: str = "embedding") -> Projection:
        """The top ``k`` components of ``reference`` (n × d) by SVD."""
        reference = np.asarray(reference, dtype=np.float64)
        mean = reference.mean(0)
        _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
        return cls(mean, vt[:k], name)

    def signals(self, vector: np.ndarray) -> dict[str, float]:
        """The embedding's coordinates on the components, ``NAME:pc0`` ... ."""
        coords = self.components @ (np.asarray(vector, dtype=np.float64) - self.mean)
        return {f"{self.name}:pc{i}": float(c) for i, c in enumerate(coords)}


@dataclass
class StreamMonitor:
    """Windows of ``window`` requests; per signal a CUSUM on the window mean, standardised by the reference.

    Build it with :meth:`calibrate` from reference records (traffic known to be normal); feed it records
    with :meth:`update` (each returns the alarms of a window it completed, if any).
    """

    window: int
    reference: dict[str, tuple[float, float]]  # signal -> (mean, standard deviation) per request
    detectors: dict[str, Cusum]
    extractors: list[Extractor]
    threshold: float
    requests: int = 0
    windows: int = 0
    _sums: dict[str, float] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def calibrate(cls, reference: Iterable[Record], *, window: int = 100, arl_windows: float = 10_000.0,
                  k: float = 0.5, extractors: Sequence[Extractor] = (scalar_signals,),
                  min_std: float = 1e-9) -> StreamMonitor:
        """A monitor whose false alarms on traffic like ``reference`` come on average once every
        ``arl_windows`` windows over all signals together. A signal that never varies in the reference (a
        rate that is always 0) is given the variance of one event in the reference (a Laplace-style floor),
        so that its first appearances count as evidence rather than as an infinite shift.

        Raises:
            ValueError: the reference is empty or has no signals.
        """
        values: dict[str, list[float]] = {}
        rows = 0
        for record in reference:
            rows += 1
            for extract in extractors:
                for name, value in extract(record).items():
                    values.setdefault(name, []).append(value)
        if not values:
            raise ValueError("the reference has no signals")
        stats = {}
        for name, seen in sorted(values.items()):
            data = np.asarray(seen, dtype=np.float64)
            std = float(data.std(ddof=1)) if len(data) > 1 else 0.0
            if std <= min_std:
                p = 1.0 / (rows + 2)  # one pseudo-event in the reference
                std = max(float(np.sqrt(p * (1 - p))), min_std)
            stats[name] = (float(data.mean()), std)
        h = cusum_threshold(arl_windows * len(stats), k)
        detectors = {name: Cusum(0.0, 1.0, k=k, h=h) for name in stats}
        return cls(window, stats, detectors, list(extractors), h)

    def update(self, record: Record) -> list[Alarm]:
        """Take one request's record; the alarms raised when it completes a window (else none)."""
        self.requests += 1
        for extract in self.extractors:
            for name, value in extract(record).items():
                if name in self.reference:
                    self._sums[name] = self._sums.get(name, 0.0) + value
                    self._counts[name] = self._counts.get(name, 0) + 1
        if self.requests % self.window:
            return []
        alarms = []
        for name, (mean, std) in self.reference.items():
            n = self._counts.get(name, 0)
            if n == 0:
                continue
            window_mean = self._sums[name] / n
            z = (window_mean - mean) / (std / np.sqrt(n))
            if self.detectors[name].update(float(z)):
                alarms.append(Alarm(name, self.windows, self.requests, float(z), window_mean, mean))
        self.windows += 1
        self._sums.clear()
        self._counts.clear()
        return alarms
