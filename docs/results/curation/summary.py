"""The curation experiment's raw outputs, gathered and tabulated for docs/curation.md.

    python docs/results/curation/summary.py collect   # runs/curation-<seed>/ -> docs/results/curation/
    python docs/results/curation/summary.py render    # the markdown tables, from the committed JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ARMS = ("unfiltered", "filtered", "oracle", "clean")


def collect() -> None:
    """Copy each finished run's curation.json here with its command, machine and versions."""
    for seed in range(3):
        run = ROOT / "runs" / f"curation-{seed}"
        if not (run / "curation.json").exists():
            continue
        record = json.loads((run / "record.json").read_text())
        out = {"command": f"tether experiment curation --set world_seed={seed} --out runs/curation-{seed}",
               "machine": record.get("host"), "versions": record.get("versions"), "git": record.get("git_revision"),
               "finished_at": record.get("finished_at"), "seconds": record.get("seconds"),
               "result": json.loads((run / "curation.json").read_text())}
        (HERE / f"curation_world{seed}.json").write_text(json.dumps(out, indent=2) + "\n")
        print(f"{run} -> curation_world{seed}.json")


def _cell(m: dict[str, Any]) -> str:
    return f"{100 * m['value']:.1f} [{100 * m['ci_low']:.1f}–{100 * m['ci_high']:.1f}]"


def _diff(d: dict[str, Any]) -> str:
    mark = "*" if d.get("significant") else ""
    return f"{100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]{mark}"


def render() -> None:
    """Per target metric and world: each arm, and each arm minus the unfiltered one."""
    runs = {seed: json.loads(p.read_text())["result"] for seed in range(3)
            if (p := HERE / f"curation_world{seed}.json").exists()}
    if not runs:
        return
    metrics = next(iter(runs.values()))["targets"] + ["helpful.task_accuracy", "harmless.over_refusal"]
    print("| metric | world | " + " | ".join(ARMS) + " | filtered − unfiltered | oracle − unfiltered |")
    print("|---|---|" + "---|" * (len(ARMS) + 2))
    for metric in metrics:
        for seed, r in runs.items():
            cells = [_cell(r["arms"][arm][metric]) for arm in ARMS]
            vs = r["versus_unfiltered"]
            print(f"| {metric} | {seed} | " + " | ".join(cells) + f" | {_diff(vs['filtered'][metric])} | "
                  f"{_diff(vs['oracle'][metric])} |")
    print("\n| world | corrupted rows | filter removed | of them corrupted | precision | recall |")
    print("|---|---|---|---|---|---|")
    for seed, r in runs.items():
        f = r["filter"]
        print(f"| {seed} | {f['corrupted']} of {r['rows']} | {f['removed']} | {f['removed_corrupted']} | "
              f"{100 * f['precision']:.1f}% | {100 * f['recall']:.1f}% |")


if __name__ == "__main__":
    {"collect": collect, "render": render}[sys.argv[1] if len(sys.argv) > 1 else "render"]()
