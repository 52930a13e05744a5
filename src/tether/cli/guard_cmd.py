"""``tether guard``: guards trained (``tether guard train``, a recipe) and measured on labelled text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tether.cli.recipes import RecipeGroup


class GuardGroup(RecipeGroup):
    """``tether guard``: its commands, and ``train`` (the ``guard`` recipe, also ``tether train guard``)."""

    aliases = {"train": "guard"}


app = typer.Typer(cls=GuardGroup, help="Content guards (tether.guard): train them on labelled text, measure them.",
                  no_args_is_help=True)


@app.command("eval")
def evaluate(
    data: Annotated[list[str], typer.Option("--data", help="labelled JSONL: text (or prompt / response), label "
                                            "(true/false, unsafe/safe, ...), optional category, split, on "
                                            "(input|output); repeatable")],
    guards: Annotated[str | None, typer.Option("--guards", help="YAML file: the guards to measure")] = None,
    block: Annotated[list[str] | None, typer.Option("--block", help="a regex to measure as a guard (repeatable)")
                     ] = None,
    out: Annotated[str | None, typer.Option("--out", help="write metrics.json and report.html here (a directory)")
                   ] = None,
) -> None:
    """Each guard's true- and false-positive rates with 95% intervals, precision, F1, AUROC where it gives scores,
    per category and per split, and its p50/p99 time per check.

    Example: tether guard eval --guards guards.yaml --data labelled.jsonl --out runs/guard-eval
    """
    from tether.core.errors import UserError
    from tether.guard.base import load_guards
    from tether.guard.evaluate import evaluate_guards, read_guard_rows

    built = load_guards(guards, block_input=block or [], block_output=block or [])
    if not built:
        raise UserError("nothing to measure: give --guards FILE or --block REGEX")
    rows = [row for path in data for row in read_guard_rows(path)]
    report = evaluate_guards(built, rows)
    for name, entry in report["guards"].items():
        shown = [f"{name}: n={entry['n']}"]
        for rate in ("tpr", "fpr"):
            r = entry[rate]
            if r:
                low, high = 100 * r["ci_low"], 100 * r["ci_high"]
                shown.append(f"{rate.upper()} {100 * r['value']:.1f}% [{low:.1f}-{high:.1f}]")
        shown += [f"F1 {entry['f1']}"] if entry["f1"] is not None else []
        shown += [f"AUROC {entry['auroc']}  TPR@1%FPR {entry['tpr_at_fpr']['1%']}"] if "auroc" in entry else []
        shown += [f"tiers {entry['tiers']}"] if "tiers" in entry else []
        shown += [f"p50 {entry['latency_ms']['p50']} ms  p99 {entry['latency_ms']['p99']} ms"]
        typer.echo("  ".join(shown))
    if out:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        from tether.guard.report import write_report

        write_report(report, path / "report.html", data=data)
        typer.echo(f"metrics: {path / 'metrics.json'}   report: {path / 'report.html'}")
