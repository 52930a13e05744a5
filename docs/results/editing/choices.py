"""Gather docs/results/editing/choices.sh's runs: efficacy and mean value-search loss per setting (JSON)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
out = []
for run in sorted((ROOT / "runs").glob("choice-*")):
    summary = json.loads((run / "edit.json").read_text())
    rows = [json.loads(x) for x in (run / "edits.jsonl").read_text().splitlines()]
    record = json.loads((run / "record.json").read_text())
    out.append({"setting": run.name.removeprefix("choice-"), "config": (run / "config.yaml").read_text(),
                "machine": record.get("host"), "git": record.get("git_revision"),
                "efficacy": summary["after"]["efficacy"], "neighbourhood": summary["after"].get("neighbourhood"),
                "mean_search_loss": round(sum(r["search_loss"] for r in rows) / len(rows), 4)})
print(json.dumps({"command": "bash docs/results/editing/choices.sh && python docs/results/editing/choices.py",
                  "runs": out}, indent=2))
