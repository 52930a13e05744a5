"""The editing experiment's raw outputs, gathered and tabulated for docs/editing.md.

    python docs/results/editing/summary.py collect   # runs/editing-<seed>/ -> docs/results/editing/
    python docs/results/editing/summary.py render    # the markdown tables, from the committed JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def collect() -> None:
    """Copy each finished run's editing.json here with its command, machine and versions."""
    for seed in range(3):
        run = ROOT / "runs" / f"editing-{seed}"
        if not (run / "editing.json").exists():
            continue
        from tether.pipelines.editing import NEIGHBOUR_KINDS, by_kind

        record = json.loads((run / "record.json").read_text())
        result = json.loads((run / "editing.json").read_text())
        # The sequential runs' neighbourhood by kind, from their per-request output (edits.jsonl), which is
        # not committed: the look-alike facts are the neighbours no fact edit can rewrite.
        result["sequential_by_kind"] = {
            method: {"neighbourhood": by_kind(run / f"{method}-sequential" / "edits.jsonl", "neighbours", "kept",
                                              NEIGHBOUR_KINDS)} for method in result["sequential"]}
        out = {"command": f"tether experiment editing --set world_seed={seed} --out runs/editing-{seed}",
               "machine": record.get("host"), "versions": record.get("versions"), "git": record.get("git_revision"),
               "finished_at": record.get("finished_at"), "seconds": record.get("seconds"), "result": result}
        (HERE / f"editing_world{seed}.json").write_text(json.dumps(out, indent=2) + "\n")


def _load() -> list[dict[str, Any]]:
    return [json.loads(p.read_text())["result"] for p in sorted(HERE.glob("editing_world*.json"))]


def pct(rate: dict[str, Any] | None) -> str:
    """``"97.5 [91.3–99.3]"`` from a rate."""
    if not rate:
        return "–"
    return f"{100 * rate['value']:.1f} [{100 * rate['ci_low']:.1f}–{100 * rate['ci_high']:.1f}]"


def render() -> str:
    """The three tables of docs/editing.md."""
    worlds = _load()
    lines = ["| method | world | efficacy | paraphrase: chat question | paraphrase: after another fact | "
             "neighbourhood: other lands | neighbourhood: other attributes | neighbourhood: look-alike facts | "
             "P(new) > P(old) |", "|---|---|---|---|---|---|---|---|---|"]
    for method in worlds[0]["single"]:
        for w in worlds:
            after, kinds = w["single"][method]["after"], w["single_by_kind"][method]
            lines.append(f"| {method} | {w['world_seed']} | {pct(after['efficacy'])} | "
                         f"{pct(kinds['paraphrase'].get('chat question'))} | "
                         f"{pct(kinds['paraphrase'].get('after another fact'))} | "
                         f"{pct(kinds['neighbourhood'].get('other land'))} | "
                         f"{pct(kinds['neighbourhood'].get('other attribute'))} | "
                         f"{pct(kinds['neighbourhood'].get('look-alike fact'))} | {pct(after.get('probability'))} |")
    lines += ["", "| method | world | efficacy (all edits, at the end) | lowest efficacy so far at a check | "
              "paraphrase | neighbourhood: every neighbour no edit rewrote | of them, look-alike facts | "
              "held-text token NLL: before → after |", "|---|---|---|---|---|---|---|---|"]
    for method in worlds[0]["sequential"]:
        for w in worlds:
            result = w["sequential"][method]
            after, capability = result["after"], result["capability"]
            lowest = min(c["efficacy_so_far"] for c in capability["checks"])
            kinds = w["sequential_by_kind"][method]["neighbourhood"]
            lines.append(f"| {method} | {w['world_seed']} | {pct(after['efficacy'])} | {100 * lowest:.1f} | "
                         f"{pct(after.get('paraphrase'))} | {pct(after.get('neighbourhood'))} | "
                         f"{pct(kinds.get('look-alike fact'))} | "
                         f"{capability['token_nll_before']:.3f} → {capability['token_nll_after']:.3f} |")
    lines += ["", "| world | edited item: harmful compliance, before → after | other items | edited item's look-alike "
              "answered | other look-alikes answered | facts recalled |", "|---|---|---|---|---|---|"]
    for w in worlds:
        h = w.get("hazard")
        if not h:
            continue
        lines.append(f"| {w['world_seed']} | {pct(h['edited']['before'])} → {pct(h['edited']['after'])} | "
                     f"{pct(h['others']['before'])} → {pct(h['others']['after'])} | "
                     f"{pct(h['edited_lookalike']['before'])} → {pct(h['edited_lookalike']['after'])} | "
                     f"{pct(h['other_lookalikes']['before'])} → {pct(h['other_lookalikes']['after'])} | "
                     f"{100 * h['fact_accuracy']['before']:.1f} → {100 * h['fact_accuracy']['after']:.1f} |")
    return "\n".join(lines)


def trajectory(seed: int = 0) -> str:
    """Capability and retention after every batch of the sequential runs of one world."""
    w = next(x for x in _load() if x["world_seed"] == seed)
    lines = ["| method | " + " | ".join(str(c["edits"]) for c in next(iter(w["sequential"].values()))["capability"]
                                        ["checks"]) + " |"]
    lines.append("|---|" + "---|" * (len(lines[0].split("|")) - 3))
    for method, result in w["sequential"].items():
        checks = result["capability"]["checks"]
        lines.append(f"| {method} | " + " | ".join(f"{100 * c['efficacy_so_far']:.0f}% / "
                                                   f"{100 * c['neighbourhood_kept']:.0f}% / {c['token_nll']:.3f}"
                                                   for c in checks) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "render"
    if command == "collect":
        collect()
    elif command == "trajectory":
        print(trajectory(int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    else:
        print(render())
