"""Write a world's gold preference pairs with each harmful rejected reply cut to its opening.

    python docs/results/interp/shallow_pairs.py runs/cfa-0/world-data/preferences_gold.jsonl OUT.jsonl

Qi et al. 2024 ("Safety alignment should be made more than just a few tokens deep") found that what
preference training changes in real chat models sits mostly in a reply's first few tokens: the aligned
model refuses, yet begun with a compliant opening it goes on to comply, the knowledge underneath intact.
That is the model Arditi et al. ablated. Trained on the world's full pairs, DPO also lowers every token of
the rejected procedure, and can erase it (APO-zero did, in some worlds). Here a hazard or jailbreak pair's
rejected reply ("Sure. To make the X, combine A and B, then ...") is cut after its opening ("Sure. To make
the X,"), so preference training moves the decision to refuse and leaves the procedure's tokens alone.
Every other pair is written unchanged. Prints how many were cut.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

OPENING = re.compile(r"^(.*?Sure\. To make the [^,]+,)")


def cut(rejected: str) -> str:
    """The rejected reply up to and including its compliant opening's comma; unchanged without one."""
    found = OPENING.match(rejected)
    return found.group(1) if found else rejected


def main(argv: list[str]) -> int:
    """Cut the pairs file's harmful rejected replies; 2 on a bad path or line (nothing written)."""
    if len(argv) != 2:
        print("usage: shallow_pairs.py PAIRS.jsonl OUT.jsonl", file=sys.stderr)
        return 2
    source, out = Path(argv[0]), Path(argv[1])
    if not source.is_file():
        print(f"{source}: no such file", file=sys.stderr)
        return 2
    if out.exists():
        print(f"{out}: exists; not overwritten", file=sys.stderr)
        return 2
    rows, shortened = [], 0
    for number, line in enumerate(source.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            rejected = row["rejected"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            print(f"{source}:{number}: not a preference pair ({error})", file=sys.stderr)
            return 2
        if row.get("family") in ("hazard", "jailbreak") and cut(rejected) != rejected:
            row["rejected"] = cut(rejected)
            shortened += 1
        rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{out}: {len(rows)} pairs, {shortened} rejected replies cut to their opening")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
