"""Guards measured on labelled text (``tether guard eval``): how often each catches what it should and
flags what it should not, with intervals, per category and per split, its AUROC where it gives scores,
and what a check costs.

Rows are JSONL: ``text`` (or ``prompt`` / ``response``), ``label`` (true, 1, ``unsafe``, ``harmful`` for what
the guard should flag; false, 0, ``safe``, ``benign`` otherwise), optional ``category`` and ``split``, and
``on`` (``input``, the default: checked as a user's message; ``output``: as a reply). A guard *flags* a row
when its verdict is not to allow it, or, for a guard that only labels (``annotate``), when the verdict carries
a category. Its score is the verdict's score where it gives one, else 1 for a flag and 0 otherwise (AUROC and
TPR at fixed FPRs are then reported only for guards with scores). F1 has a bootstrap interval. For a cascade,
the share of rows that reached each tier and each tier's p50/p99; for an LLM guard, its parse failures.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.core.errors import DataError
from tether.core.stats import auroc_rows, wilson_interval
from tether.guard.base import Guard

POSITIVE = {"true", "1", "unsafe", "harmful", "yes"}
NEGATIVE = {"false", "0", "safe", "benign", "no"}


@dataclass(frozen=True)
class GuardRow:
    """One labelled text."""

    text: str
    label: bool
    on: str = "input"
    category: str | None = None
    split: str | None = None


def read_guard_rows(path: str | Path) -> list[GuardRow]:
    """The labelled rows of a JSONL file (one-line errors naming the file and line)."""
    from tether.data.io import jsonl_objects

    rows = []
    for where, raw in jsonl_objects(path):
        text = raw.get("text", raw.get("prompt", raw.get("response")))
        if not isinstance(text, str):
            raise DataError(f"{where}: needs a text (or prompt / response) string")
        label = str(raw.get("label")).strip().lower()
        if label not in POSITIVE | NEGATIVE:
            raise DataError(f"{where}: label {raw.get('label')!r} is not one of true/false, 1/0, "
                            "unsafe/safe, harmful/benign")
        on = raw.get("on", "input")
        if on not in ("input", "output"):
            raise DataError(f"{where}: on is {on!r}; expected input or output")
        rows.append(GuardRow(text, label in POSITIVE, on, raw.get("category"), raw.get("split")))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """The chance a random positive scores above a random negative, ties counting half (Mann-Whitney U / n1 n2)."""
    if not positive or not negative:
        return float("nan")
    return float(auroc_rows([*positive, *negative], [True] * len(positive) + [False] * len(negative)))


def rates(flags: Sequence[bool], labels: Sequence[bool]) -> dict[str, Any]:
    """Confusion counts of ``flags`` against ``labels`` and TPR, FPR, precision (95% Wilson intervals) and F1."""
    tp = sum(f and t for f, t in zip(flags, labels, strict=True))
    fp = sum(f and not t for f, t in zip(flags, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    out: dict[str, Any] = {"n": len(labels), "positives": positives, "tp": tp, "fp": fp}
    out["tpr"] = wilson_interval(tp, positives).as_dict() if positives else None
    out["fpr"] = wilson_interval(fp, negatives).as_dict() if negatives else None
    out["precision"] = wilson_interval(tp, tp + fp).as_dict() if tp + fp else None
    fn = positives - tp
    out["f1"] = round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None
    return out


FIXED_FPRS = (0.001, 0.01, 0.05)


def threshold_at_fpr(negatives: Sequence[float], fpr: float) -> float:
    """The lowest threshold that flags at most ``fpr`` of ``negatives`` (a text flags at score >= threshold):
    just above the ``floor(fpr * n)``-th highest negative score (1-based: above the highest when that is 0)."""
    if not negatives:
        raise ValueError("no negatives to calibrate on")
    ordered = sorted(negatives, reverse=True)
    allowed = math.floor(fpr * len(ordered))
    if allowed >= len(ordered):
        return -math.inf
    return math.nextafter(ordered[allowed], math.inf)


def threshold_at_fnr(positives: Sequence[float], fnr: float) -> float:
    """The highest threshold below which at most ``fnr`` of ``positives`` fall (texts under it are allowed):
    the ``floor(fnr * n) + 1``-th lowest positive score."""
    if not positives:
        raise ValueError("no positives to calibrate on")
    ordered = sorted(positives)
    return ordered[min(len(ordered) - 1, math.floor(fnr * len(ordered)))]


def tpr_at_fpr(positives: Sequence[float], negatives: Sequence[float], fpr: float) -> float | None:
    """The share of positives scored at or above the lowest threshold that flags at most ``fpr`` of the
    negatives: the guard's best TPR at that FPR on this data (a threshold chosen on the data it is measured on,
    so an optimistic operating point; a guard's own threshold is the one its TPR and FPR are reported at)."""
    if not positives or not negatives:
        return None
    threshold = threshold_at_fpr(negatives, fpr)
    return round(sum(s >= threshold for s in positives) / len(positives), 4)


def f1_interval(flags: Sequence[bool], labels: Sequence[bool], *, resamples: int = 1000, seed: int = 0
                ) -> dict[str, float] | None:
    """A 95% percentile-bootstrap interval for F1 (rows resampled with replacement), or None without positives."""
    pairs = list(zip(flags, labels, strict=True))
    if not any(labels):
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        tp = fp = fn = 0
        for flag, label in (pairs[rng.randrange(len(pairs))] for _ in pairs):
            tp += flag and label
            fp += flag and not label
            fn += label and not flag
        values.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    values.sort()
    return {"ci_low": round(values[int(0.025 * resamples)], 4), "ci_high": round(values[int(0.975 * resamples) - 1], 4)}


def _latency(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50": round(1000 * statistics.median(ordered), 3),
            "p99": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)}


def evaluate_guards(guards: Sequence[Guard], rows: Sequence[GuardRow]) -> dict[str, Any]:
    """Every guard on every row: overall rates, per category and per split, AUROC, latency."""
    report: dict[str, Any] = {"rows": len(rows), "positives": sum(r.label for r in rows), "guards": {}}
    for guard in guards:
        flags, scores, seconds, scored = [], [], [], True
        reached: dict[str, list[float]] = {}  # a cascade's tiers: the time each took on each row that reached it
        for row in rows:
            start = time.perf_counter()
            verdict = (guard.check_input([{"role": "user", "content": row.text}]) if row.on == "input"
                       else guard.check_output(row.text))
            seconds.append(time.perf_counter() - start)
            for tier, took in zip(verdict.tiers, verdict.tier_seconds or [0.0] * len(verdict.tiers), strict=True):
                reached.setdefault(tier, []).append(took)
            flagged = (not verdict.allowed) or (guard.on_output == "annotate" and row.on == "output"
                                                and bool(verdict.categories))
            flags.append(flagged)
            scored = scored and verdict.score is not None
            scores.append(verdict.score if verdict.score is not None else float(flagged))
        labels = [r.label for r in rows]
        entry = rates(flags, labels)
        entry["f1_interval"] = f1_interval(flags, labels)
        if scored:
            positives = [s for s, t in zip(scores, labels, strict=True) if t]
            negatives = [s for s, t in zip(scores, labels, strict=True) if not t]
            entry["auroc"] = round(auroc(positives, negatives), 4)
            entry["tpr_at_fpr"] = {f"{100 * fpr:g}%": tpr_at_fpr(positives, negatives, fpr) for fpr in FIXED_FPRS}
        for field in ("category", "split"):
            values = sorted({getattr(r, field) for r in rows if getattr(r, field) is not None})
            if values:
                entry[f"by_{field}"] = {
                    v: rates([f for f, r in zip(flags, rows, strict=True) if getattr(r, field) == v],
                              [r.label for r in rows if getattr(r, field) == v]) for v in values}
        entry["latency_ms"] = _latency(seconds)
        if reached:
            entry["tiers"] = {tier: round(len(took) / len(rows), 4) for tier, took in reached.items()}
            entry["tier_latency_ms"] = {tier: _latency(took) for tier, took in reached.items()}
        if hasattr(guard, "parse_failures"):  # an LLM guard: answers that said neither safe nor unsafe
            entry["parse_failures"] = guard.parse_failures
        report["guards"][guard.name] = entry
    return report
