"""The deliberative-alignment experiment's raw outputs, gathered and tabulated for docs/deliberative.md.

    python docs/results/deliberative/summary.py collect   # runs/deliberative-<seed>/ -> docs/results/deliberative/
    python docs/results/deliberative/summary.py render    # the markdown tables, from the committed JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
ARMS = ("standard", "deliberative", "deliberative-given", "deliberative (SFT stage)", "deliberative-given (SFT stage)")
TRAINED = ("deliberative", "deliberative-given")
METRICS = ("harmless.harmful_compliance", "harmless.harmful_compliance.heldout_wrappers",
           "harmless.harmful_compliance.jailbreak_heldout_items", "harmless.harmful_compliance.heldout_items",
           "harmless.over_refusal", "harmless.over_refusal.heldout", "honest.sycophancy", "honest.hallucination",
           "corrigible.resistance", "helpful.task_accuracy", "format.empty", "format.malformed",
           "format.reasoning_unclosed")


def collect() -> None:
    """Copy each finished run's deliberative.json here with its command, machine and versions."""
    for seed in range(3):
        run = ROOT / "runs" / f"deliberative-{seed}"
        if not (run / "deliberative.json").exists():
            continue
        record = json.loads((run / "record.json").read_text())
        out = {"command": f"tether experiment deliberative-vs-standard --set world_seed={seed} "
                          f"--out runs/deliberative-{seed}",
               "machine": record.get("host"), "versions": record.get("versions"), "git": record.get("git_revision"),
               "finished_at": record.get("finished_at"), "seconds": record.get("seconds"),
               "result": json.loads((run / "deliberative.json").read_text())}
        (HERE / f"deliberative_world{seed}.json").write_text(json.dumps(out, indent=2) + "\n")


def _load() -> list[dict[str, Any]]:
    return [json.loads((HERE / f"deliberative_world{s}.json").read_text())["result"] for s in range(3)
            if (HERE / f"deliberative_world{s}.json").exists()]


def _cell(rate: dict[str, Any] | None) -> str:
    if rate is None:
        return "–"
    return f"{100 * rate['value']:.1f} [{100 * rate['ci_low']:.1f}–{100 * rate['ci_high']:.1f}] n={rate['n']}"


def render() -> str:
    """The policy table (every world, intervals), the paired differences and the data stage's counts."""
    worlds = _load()
    lines = ["| gold metric, % [95% interval], n replies with an answer | world | " + " | ".join(ARMS) + " |",
             "|---|---|" + "---|" * len(ARMS)]
    for metric in METRICS:
        for w, result in enumerate(worlds):
            cells = [_cell(result["policies"].get(arm, {}).get(metric)) for arm in ARMS]
            lines.append(f"| {metric} | {w} | " + " | ".join(cells) + " |")
    lines += ["", "| paired difference against standard, points [95% interval] | world | " + " | ".join(ARMS[1:])
              + " |", "|---|---|" + "---|" * len(ARMS[1:])]
    for metric in METRICS[:10]:
        for w, result in enumerate(worlds):
            cells = []
            for arm in ARMS[1:]:
                t = result["versus_first"].get(arm, {}).get(metric)
                cells.append("–" if t is None else
                             f"{100 * t['diff']:+.1f} [{100 * t['ci_low']:+.1f}, {100 * t['ci_high']:+.1f}]")
            lines.append(f"| {metric} | {w} | " + " | ".join(cells) + " |")
    lines += ["", "| data stage, worlds 0 / 1 / 2 | deliberative | deliberative-given |", "|---|---|---|"]
    for key, label in (("prompts", "prompts"), ("kept", "kept by the judge"),
                       ("model_clause_agreement", "the model's own clause = the category's")):
        cells = [" / ".join(str(r["stages"][arm]["data"][key]) for r in worlds) for arm in TRAINED]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    probe = [r["free_probe"] for r in worlds if r.get("free_probe")]
    if probe:
        lines += ["", "free mode, the base model asked to reason: replies with a reasoning block, worlds 0 / 1 / 2: "
                  + " / ".join(f"{p['with_reasoning_block']} of {p['replies']}" for p in probe)]
    lines += ["", "wall seconds, worlds 0 / 1 / 2: " + "; ".join(
        f"{arm} " + " / ".join(str(r["wall_s"].get(arm)) for r in worlds) for arm in ("standard", *TRAINED))]
    return "\n".join(lines)


if __name__ == "__main__":
    if (sys.argv[1] if len(sys.argv) > 1 else "render") == "collect":
        collect()
    else:
        print(render())
