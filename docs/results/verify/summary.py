"""Tables of certified against attacked accuracy from the certify.json files beside this script.

Usage: python docs/results/verify/summary.py render     (Markdown: the tables in docs/verify.md and the README)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _load(prefix: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted(HERE.glob(f"{prefix}-*-world*.json")):
        variant = path.stem[len(prefix) + 1:].rsplit("-world", 1)[0]
        out.setdefault(variant, []).append(json.loads(path.read_text()))
    return out


def _cell(values: list[float]) -> str:
    """Mean over worlds, and the range, in percent."""
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    return f"{sum(pct) / len(pct):.1f} ({min(pct):.1f}–{max(pct):.1f})"


def feature_table(prefix: str) -> str:
    """Accuracy against epsilon, each head: clean, certified by IBP and CROWN, under PGD."""
    runs = _load(prefix)
    lines = ["| head | epsilon | clean | certified, IBP | certified, CROWN | PGD attack (upper bound) |",
             "|---|---|---|---|---|---|"]
    for variant, docs in runs.items():
        for i, point in enumerate(docs[0]["feature"]):
            row = [d["feature"][i] for d in docs]
            lines.append(f"| {variant} | {point['epsilon']} | " + " | ".join(
                _cell([r[k]["value"] for r in row]) for k in ("clean", "certified_ibp", "certified_crown",
                                                               "empirical")) + " |")
    return "\n".join(lines)


def substitution_table(prefix: str) -> str:
    """Accuracy against the swap budget, each head: certified, and under the greedy attack."""
    runs = _load(prefix)
    lines = ["| head | word swaps | certified | how | greedy attack (upper bound) |", "|---|---|---|---|---|"]
    for variant, docs in runs.items():
        for i, point in enumerate(docs[0]["substitution"]):
            row = [d["substitution"][i] for d in docs]
            sure = "—" if point["certified"] is None else _cell([r["certified"]["value"] for r in row])
            lines.append(f"| {variant} | {point['budget']} | {sure} | {point['method'] or 'not tractable'} | "
                         f"{_cell([r['empirical']['value'] for r in row])} |")
    return "\n".join(lines)


def exported_line(prefix: str) -> str:
    """What the exact check said of the exported properties."""
    docs = [d for ds in _load(prefix).values() for d in ds]
    n = sum(d["exported"]["n"] for d in docs)
    agree = sum(d["exported"]["agree"] for d in docs)
    unsat = sum(c["status"] == "unsat" for d in docs for c in d["exported"].get("checks", []))
    certified = sum(c["crown"] == "certified" for d in docs for c in d["exported"].get("checks", []))
    return (f"{n} exported properties: CROWN certified {certified}, the exact MILP found {unsat} unreachable "
            f"(holding) and {n - unsat} reachable; it contradicted CROWN on {n - agree}.")


def main() -> None:
    """Print the tables."""
    if sys.argv[1:] != ["render"]:
        sys.exit(__doc__)
    for prefix in ("embedding", "static"):
        if not _load(prefix):
            continue
        counts = ", ".join(f"{variant}: {len(docs)}" for variant, docs in _load(prefix).items())
        print(f"### {prefix} guard (worlds per head: {counts})\n")
        print(feature_table(prefix) + "\n")
        print(substitution_table(prefix) + "\n")
        print(exported_line(prefix) + "\n")


if __name__ == "__main__":
    main()
