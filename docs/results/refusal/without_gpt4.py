"""The refusal detector's held-out figures without the gpt4 rows, whose replies are mostly one canned refusal.

Reads a run's ``heldout-predictions.jsonl`` (rows in the order of the test file) beside the shipped test
file, which names each row's model, and prints accuracy, precision and recall (95% Wilson intervals) over
the rows of the other four models, for the learned tier and the phrase tier.

    python docs/results/refusal/without_gpt4.py docs/results/refusal/test2-seed0-predictions.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tether.scoring.refusal import ASSETS, binary_metrics


def main(predictions: str) -> None:
    """Print the figures without gpt4."""
    rows = [json.loads(line) for line in Path(predictions).read_text(encoding="utf-8").splitlines()]
    test = [json.loads(line) for line in (ASSETS / "test-xstest.jsonl").read_text(encoding="utf-8").splitlines()]
    if len(rows) != len(test) or any(r["response"] != t["response"] for r, t in zip(rows, test, strict=True)):
        sys.exit(f"{predictions}: its rows are not the shipped test file's, in order")
    kept = [r for r, t in zip(rows, test, strict=True) if t["model"] != "gpt4"]
    truth = [r["refusal"] for r in kept]
    for tier in ("learned", "phrases"):
        m = binary_metrics([r[tier] for r in kept], truth).as_dict()
        print(f"{tier:8s} without gpt4: n={m['n']}  " + "  ".join(
            f"{k} {100 * m[k]['value']:.1f}% [{100 * m[k]['ci_low']:.1f}-{100 * m[k]['ci_high']:.1f}]"
            for k in ("accuracy", "precision", "recall")))


if __name__ == "__main__":
    main(sys.argv[1])
