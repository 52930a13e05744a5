"""The IRL experiment's raw outputs, gathered and tabulated for docs/irl.md.

    python docs/results/irl/summary.py collect   # runs/irl-[g05-|a0-]<seed>/ -> docs/results/irl/
    python docs/results/irl/summary.py render    # the markdown tables, from the committed JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
VARIANTS = {"": "", "g05-": " --set methods=[iq-learn] --set gamma=0.5 --set rm=null",
            "a0-": " --set methods=[iq-learn] --set alpha=null --set rm=null",
            "lr4-": " --set methods=[irft] --set irft_lr=1e-4 --set rm=null"}
POLICY_METRICS = ("helpful.task_accuracy", "helpful.task_accuracy.heldout", "honest.hallucination",
                  "honest.hallucination.heldout", "honest.sycophancy", "harmless.harmful_compliance",
                  "harmless.harmful_compliance.heldout_wrappers", "harmless.over_refusal", "corrigible.resistance",
                  "corrigible.resistance.heldout", "format.malformed")


def collect() -> None:
    """Copy each finished run's irl.json here with its command, machine and versions."""
    for variant, flags in VARIANTS.items():
        for seed in range(3):
            run = ROOT / "runs" / f"irl-{variant}{seed}"
            if not (run / "irl.json").exists():
                continue
            record = json.loads((run / "record.json").read_text())
            command = f"tether experiment irl-vs-sft --set world_seed={seed}{flags} --out runs/irl-{variant}{seed}"
            out = {"command": command,
                   "machine": record.get("host"), "versions": record.get("versions"),
                   "git": record.get("git_revision"), "finished_at": record.get("finished_at"),
                   "seconds": record.get("seconds"), "result": json.loads((run / "irl.json").read_text())}
            (HERE / f"irl_{variant}world{seed}.json").write_text(json.dumps(out, indent=2) + "\n")


def _load(variant: str) -> list[dict[str, Any]]:
    return [json.loads((HERE / f"irl_{variant}world{s}.json").read_text())["result"] for s in range(3)
            if (HERE / f"irl_{variant}world{s}.json").exists()]


def _pct(rate: dict[str, Any]) -> str:
    return f"{100 * rate['value']:.1f} [{100 * rate['ci_low']:.1f}–{100 * rate['ci_high']:.1f}]"


def render() -> str:
    """The reward table and the policy table of docs/irl.md."""
    lines = ["| scorer | split | pair accuracy, worlds 0 / 1 / 2 | Spearman ρ with gold, worlds 0 / 1 / 2 |",
             "|---|---|---|---|"]
    base = _load("")
    g05 = _load("g05-")
    a0 = _load("a0-")
    lr4 = _load("lr4-")
    rows: list[tuple[str, list[dict[str, Any]], str]] = [
        ("IQ-Learn, γ = 0.9: recovered reward", base, "iq-learn recovered reward"),
        ("IQ-Learn, γ = 0.5: recovered reward", g05, "iq-learn recovered reward"),
        ("IQ-Learn, γ = 0.9, no regulariser: recovered reward", a0, "iq-learn recovered reward"),
        ("IRFT, 2 rounds, β = 0.1, lr 1e-3: recovered reward", base, "irft recovered reward"),
        ("IRFT, 2 rounds, β = 0.1, lr 1e-4: recovered reward", lr4, "irft recovered reward"),
        ("SFT: the same quantity, γ = 0.9", base, "sft recovered reward"),
        ("SFT: log-likelihood of the reply", base, "sft log-likelihood"),
        ("reward model on annotator pairs", base, "reward model (annotator pairs)")]
    for split in ("train", "heldout"):
        for label, worlds, key in rows:
            if not worlds or any(key not in w["reward"][split] for w in worlds):
                continue
            acc = " / ".join(_pct(w["reward"][split][key]["pair_accuracy"]) for w in worlds)
            rho = " / ".join(f"{w['reward'][split][key]['spearman']['value']:+.2f}" for w in worlds)
            lines.append(f"| {label} | {split} | {acc} | {rho} |")
    lines += ["", "| gold metric, % (worlds 0 / 1 / 2) | SFT | IQ-Learn, γ = 0.9 | IQ-Learn, γ = 0.5 | "
              "IQ-Learn, γ = 0.9, no regulariser | IRFT, lr 1e-3 | IRFT, lr 1e-4 |", "|---|---|---|---|---|---|---|"]
    for metric in POLICY_METRICS:
        cells = [" / ".join(f"{100 * w['policies'][arm][metric]['value']:.1f}" for w in worlds)
                 for arm, worlds in (("sft", base), ("iq-learn", base), ("iq-learn", g05), ("iq-learn", a0),
                                     ("irft", base), ("irft", lr4))
                 if worlds and all(arm in w["policies"] for w in worlds)]
        lines.append(f"| {metric} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if (sys.argv[1] if len(sys.argv) > 1 else "render") == "collect":
        collect()
    else:
        print(render())
