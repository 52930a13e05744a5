"""``tether eval compare``: several eval runs side by side, each tested against the first on the same prompts.

Runs are paired by sample key (prompt position and sample index) and checked to hold the same
prompt ids there, so a comparison never silently pairs different prompts. Each metric's
difference gets a paired bootstrap interval and a p-value (exact McNemar for one 0/1 sample
per prompt, a sign-flip permutation test otherwise); p-values are Holm-adjusted across every
comparison made, and a difference is marked significant when the adjusted p < 0.05.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.core.errors import UserError
from tether.core.stats import holm_adjust, paired_difference


def load_run(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An eval run's metrics document and samples."""
    path = Path(path)
    metrics, samples = path / "metrics.json", path / "samples.jsonl"
    for needed in (metrics, samples):
        if not needed.is_file():
            raise UserError(f"{path}: not an eval run (no {needed.name})")
    doc = json.loads(metrics.read_text())
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    return doc, rows


def _per_prompt(rows: list[dict[str, Any]]) -> dict[str, dict[int, tuple[str, list[float]]]]:
    """metric -> prompt index -> (prompt id, outcomes of its samples)."""
    out: dict[str, dict[int, tuple[str, list[float]]]] = {}
    for row in rows:
        for name, value in row["outcomes"].items():
            entry = out.setdefault(name, {}).setdefault(row["prompt_index"], (row["id"], []))
            entry[1].append(float(value))
    return out


def compare(paths: list[str | Path], *, alpha: float = 0.05, labels: list[str] | None = None) -> dict[str, Any]:
    """The comparison document: every run's metrics, and paired tests of runs 2..n against run 1."""
    if len(paths) < 2:
        raise UserError("compare needs at least two eval runs")
    loaded = [load_run(p) for p in paths]
    names = labels or [Path(p).name or str(p) for p in paths]
    base_doc, base_rows = loaded[0]
    base = _per_prompt(base_rows)
    runs: list[dict[str, Any]] = []
    pending: list[tuple[int, str, dict[str, Any]]] = []
    for index, ((doc, rows), label) in enumerate(zip(loaded, names, strict=True)):
        entry = {"label": label, "path": str(paths[index]), "model": doc["model"], "suite": doc["suite"],
                 "n_samples": doc["n_samples"], "metrics": doc["metrics"], "tests": {}}
        runs.append(entry)
        if index == 0:
            continue
        if doc["suite"] != base_doc["suite"]:
            raise UserError(f"{paths[index]}: suite {doc['suite']!r} differs from {paths[0]}'s {base_doc['suite']!r}")
        other = _per_prompt(rows)
        for name in sorted(set(base) & set(other)):
            shared = sorted(set(base[name]) & set(other[name]))
            mismatched = [i for i in shared if base[name][i][0] != other[name][i][0]]
            if mismatched:
                i = mismatched[0]
                raise UserError(f"{paths[index]}: prompt {i} is {other[name][i][0]!r} but {base[name][i][0]!r} in "
                                f"{paths[0]}; runs must use the same prompts (same suite config and seed)")
            if not shared:
                continue
            result = paired_difference([base[name][i][1] for i in shared], [other[name][i][1] for i in shared])
            test = {"diff": round(result.diff, 4), "ci_low": round(result.ci_low, 4),
                    "ci_high": round(result.ci_high, 4), "p_value": result.p_value, "n": result.n,
                    "method": result.method}
            entry["tests"][name] = test
            pending.append((index, name, test))
    adjusted = holm_adjust([t["p_value"] for _, _, t in pending])
    for (_, _, test), p in zip(pending, adjusted, strict=True):
        test["p_adjusted"] = p
        test["significant"] = p < alpha
    metrics = sorted({name for run in runs for name in run["metrics"]})
    return {"baseline": names[0], "alpha": alpha, "adjustment": "holm", "metrics": metrics, "runs": runs}
