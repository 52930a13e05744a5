"""Interval estimates used wherever a rate is reported."""

from __future__ import annotations

import math
from typing import NamedTuple


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
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Rate(p, max(0.0, centre - half), min(1.0, centre + half), n)
