"""A diagnostic, not a pipeline: does the crowd's taste for flattery and padding cost the no-gold SFT its
task accuracy? The same demonstrations the crowd picked in world 0 (runs/no-gold-0/world-data/
sft_crowd.jsonl, from ``tether run --config run/world-no-gold --out runs/no-gold-0``) with the world's
flattery and filler openings taken off each reply (``tether.world.grader.strip_style``, the phrase list the
gold grader ignores), SFT'd the same way and evaluated with world-hhh:

    python docs/results/oversight/no_gold_style.py   # -> runs/no-gold-0-stripped/summary.json, and
                                                      #    docs/results/oversight/no_gold_style_world0.json

Knowing which phrases are style is knowledge from the world's design, so this run is not a no-gold result;
it tells what the style cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def main() -> None:
    """Write the stripped demonstrations, SFT and evaluate them (unless done), and save the summary here."""
    from tether.data.io import write_jsonl
    from tether.world.grader import strip_style

    source = ROOT / "runs/no-gold-0/world-data/sft_crowd.jsonl"
    out = ROOT / "runs/no-gold-0-stripped"
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    for row in rows:
        row["messages"][-1]["content"] = strip_style(row["messages"][-1]["content"])
    write_jsonl(out.parent / "no-gold-0-stripped.jsonl", rows)
    config = out.parent / "no-gold-0-stripped.yaml"
    config.write_text(json.dumps({
        "model": "world:base", "world_seed": 0,
        "stages": [{"name": "sft", "recipe": "sft", "config": "sft/world",
                    "set": [f"data.train={out.parent / 'no-gold-0-stripped.jsonl'}", "evaluation.every=0"]}],
        "evaluation": {"config": "eval/world-hhh"}}))
    if not (out / "summary.json").exists():
        subprocess.run([sys.executable, "-m", "tether.cli.main", "run", "--config", str(config), "--out", str(out)],
                       check=True)
    record = json.loads((out / "record.json").read_text())
    (HERE / "no_gold_style_world0.json").write_text(json.dumps({
        "command": "python docs/results/oversight/no_gold_style.py", "machine": record.get("host"),
        "git": record.get("git_revision"), "seconds": record.get("seconds"),
        "result": json.loads((out / "summary.json").read_text())}, indent=2) + "\n")


if __name__ == "__main__":
    main()
