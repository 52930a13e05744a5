"""Agreement between annotators: Cohen's kappa, Fleiss' kappa, Krippendorff's alpha, with bootstrap intervals.

Annotations come in long form, one ``(item, annotator, value)`` per label (what a labelling tool stores);
an annotator need not label every item. Each coefficient is chance-corrected: 1 is perfect agreement, 0
what labels drawn at random from their own frequencies would give, below 0 systematic disagreement.

- :func:`cohen_kappa`: two annotators on the items both labelled (Cohen 1960).
- :func:`fleiss_kappa`: any number of annotators, the same number on every item (Fleiss 1971).
- :func:`krippendorff_alpha`: any number of annotators, any missing labels, at a level of measurement
  (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"): ``nominal`` (categories: any two
  different labels disagree equally), ``ordinal`` (ranks: disagreement grows with how many labels lie
  between), ``interval`` (numbers: squared difference), ``ratio`` (squared difference relative to the
  sum). The level matters: the interval metric on category codes scores "1 vs 2" as closer than "1 vs 5",
  which for categories is wrong.
- :func:`bootstrap`: a percentile interval for any of them, resampling items.
- :func:`per_annotator`: each annotator's Cohen's kappa against the majority of the others.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

Annotation = tuple[Hashable, Hashable, Hashable]  # (item, annotator, value)
Level = Literal["nominal", "ordinal", "interval", "ratio"]


def by_item(annotations: Sequence[Annotation]) -> dict[Hashable, dict[Hashable, Hashable]]:
    """``{item: {annotator: value}}`` (an annotator's last label for an item counts)."""
    out: dict[Hashable, dict[Hashable, Hashable]] = defaultdict(dict)
    for item, annotator, value in annotations:
        out[item][annotator] = value
    return dict(out)


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's kappa of two annotators' labels on the same items (paired by position)."""
    if len(first) != len(second) or not first:
        raise ValueError("cohen_kappa needs two equally long, non-empty label lists")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    a_counts, b_counts = Counter(first), Counter(second)
    expected = sum(a_counts[c] * b_counts[c] for c in a_counts) / (n * n)
    return 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)


def fleiss_kappa(annotations: Sequence[Annotation]) -> float:
    """Fleiss' kappa: every item labelled by the same number (at least two) of annotators."""
    items = by_item(annotations)
    sizes = {len(labels) for labels in items.values()}
    if len(sizes) != 1 or min(sizes) < 2:
        raise ValueError(f"fleiss_kappa needs the same number (>= 2) of labels on every item; found {sorted(sizes)}")
    raters = sizes.pop()
    totals: Counter[Hashable] = Counter()
    agreement = 0.0
    for labels in items.values():
        counts = Counter(labels.values())
        totals.update(counts)
        agreement += (sum(c * c for c in counts.values()) - raters) / (raters * (raters - 1))
    observed = agreement / len(items)
    expected = sum((c / (len(items) * raters)) ** 2 for c in totals.values())
    return 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)


def krippendorff_alpha(annotations: Sequence[Annotation], level: Level = "nominal") -> float:
    """Krippendorff's alpha at ``level`` (see the module). Items with fewer than two labels are not pairable
    and are left out; values must be numbers for every level but ``nominal``."""
    units = [list(labels.values()) for labels in by_item(annotations).values() if len(labels) >= 2]
    if not units:
        raise ValueError("krippendorff_alpha needs at least one item labelled twice")
    # The coincidence matrix: every ordered pair of labels within an item, weighted 1 / (labels in it - 1).
    coincidence: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for values in units:
        weight = 1.0 / (len(values) - 1)
        for i, a in enumerate(values):
            for j, b in enumerate(values):
                if i != j:
                    coincidence[a, b] += weight
    marginal: dict[Hashable, float] = defaultdict(float)
    for (a, _), count in coincidence.items():
        marginal[a] += count
    n = sum(marginal.values())
    distance = _distance(level, marginal)
    observed = sum(count * distance(a, b) for (a, b), count in coincidence.items())
    expected = sum(marginal[a] * marginal[b] * distance(a, b) for a in marginal for b in marginal) / (n - 1)
    return 1.0 if expected == 0 else 1.0 - observed / expected


def _distance(level: Level, marginal: dict[Hashable, float]) -> Callable[[Hashable, Hashable], float]:
    """The squared difference function of a level of measurement (Krippendorff's delta squared)."""
    if level == "nominal":
        return lambda a, b: float(a != b)
    try:
        values = sorted(marginal, key=float)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"the {level} level needs numeric labels; use nominal for categories") from None
    if level == "interval":
        return lambda a, b: (float(a) - float(b)) ** 2  # type: ignore[arg-type]
    if level == "ratio":
        return lambda a, b: ((float(a) - float(b)) / (float(a) + float(b))) ** 2 if a != b else 0.0  # type: ignore[arg-type]
    # Ordinal: how many labels lie between the two ranks (each end counted half), squared.
    rank = {v: i for i, v in enumerate(values)}
    cumulative = [0.0]
    for v in values:
        cumulative.append(cumulative[-1] + marginal[v])

    def ordinal(a: Hashable, b: Hashable) -> float:
        low, high = sorted((rank[a], rank[b]))
        between = cumulative[high + 1] - cumulative[low]
        return (between - (marginal[values[low]] + marginal[values[high]]) / 2) ** 2

    return ordinal


@dataclass(frozen=True)
class Estimate:
    """A coefficient with a percentile bootstrap interval over items (``n`` items, ``resamples`` draws)."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    resamples: int


def bootstrap(statistic: Callable[[Sequence[Annotation]], float], annotations: Sequence[Annotation], *,
              resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """``statistic`` on ``annotations`` with a percentile interval from resampling items with replacement (a
    resample where the statistic is undefined, e.g. no pairable item, is drawn again)."""
    items = by_item(annotations)
    keys = list(items)
    value = statistic(annotations)
    rng = random.Random(seed)
    draws: list[float] = []
    attempts = 0
    while len(draws) < resamples and attempts < 10 * resamples:
        attempts += 1
        sample: list[Annotation] = []
        for copy, key in enumerate(rng.choice(keys) for _ in keys):
            sample += [((copy, key), annotator, label) for annotator, label in items[key].items()]
        try:
            draws.append(statistic(sample))
        except (ValueError, ZeroDivisionError):
            continue
    draws.sort()
    if not draws:
        return Estimate(value, value, value, len(keys), 0)
    tail = (1 - confidence) / 2
    low = draws[min(len(draws) - 1, int(tail * len(draws)))]
    high = draws[min(len(draws) - 1, int((1 - tail) * len(draws)))]
    return Estimate(value, low, high, len(keys), len(draws))


def per_annotator(annotations: Sequence[Annotation], *, seed: int = 0) -> dict[Hashable, dict[str, float]]:
    """Each annotator's Cohen's kappa against the majority of the other annotators, on the items where both
    exist (ties among the others broken at random, seeded), with the number of such items."""
    items = by_item(annotations)
    rng = random.Random(seed)
    mine: dict[Hashable, list[Hashable]] = defaultdict(list)
    theirs: dict[Hashable, list[Hashable]] = defaultdict(list)
    for labels in items.values():
        for annotator, label in labels.items():
            others = Counter(v for a, v in labels.items() if a != annotator)
            if not others:
                continue
            top = max(others.values())
            mine[annotator].append(label)
            theirs[annotator].append(rng.choice(sorted((v for v, c in others.items() if c == top), key=repr)))
    return {a: {"kappa": cohen_kappa(mine[a], theirs[a]), "n": len(mine[a])} for a in sorted(mine, key=repr)}
