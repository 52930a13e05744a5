"""``tether eval``: evaluate a model on a suite; ``tether eval compare``: several runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tether.cli.common import (
    ConfigOpt,
    FailAboveOpt,
    FailBelowOpt,
    JunitOpt,
    OutOpt,
    ResumeOpt,
    SetOpt,
    apply_gates,
    build_config,
    parse_gate_options,
)

app = typer.Typer(help="Evaluate a model: generate, score and report (metrics.json, samples.jsonl, report.html "
                       "under --out); compare runs with 'tether eval compare'.\n\n"
                       "Example: tether eval --model world:base --suite world-hhh --out runs/eval-base")


@app.callback(invoke_without_command=True)
def eval_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model directory, hub id, tiny:ARCH, or "
                                              "world:base (default)")] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="world-hhh (default), file (with --data: the "
                                              "format told by the file), xstest, harmbench, advbench, jsonl, "
                                              "text")] = None,
    data: Annotated[str | None, typer.Option("--data", help="prompts file for file suites (alone: --suite "
                                             "file)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="file suites: only the first N prompts (default: "
                                              "every prompt in the file)")] = None,
    n: Annotated[int | None, typer.Option("-n", help="world-hhh: train prompts per family")] = None,
    samples: Annotated[int | None, typer.Option("--samples", help="responses sampled per prompt")] = None,
    preamble: Annotated[bool, typer.Option("--preamble", help="world-hhh: ask with a character preamble")] = False,
    config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
    fail_above: FailAboveOpt = None, fail_below: FailBelowOpt = None, junit: JunitOpt = None,
) -> None:
    """Generate, score and report: writes metrics.json, samples.jsonl and report.html under --out.

    Example: tether eval --model world:base --suite world-hhh --out runs/eval-base
    """
    if ctx.invoked_subcommand is not None:
        return
    from tether.evals import run as recipe

    gates = parse_gate_options(fail_above, fail_below)
    overrides = list(set_ or [])
    if data is not None and suite is None:
        suite = "file"
    for key, value in (("model.path", model), ("suite.kind", suite), ("suite.path", data), ("suite.n", n),
                       ("suite.limit", limit), ("samples_per_prompt", samples)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if preamble:
        overrides.append("suite.preamble=true")
    cfg = build_config(recipe.EvalConfig, config, overrides, out)
    doc = recipe.run(cfg, resume=resume)
    source = doc.get("source")
    if source:  # every prompt of a file is used unless a limit says otherwise: say which
        typer.echo(f"prompts: {doc['n_prompts']} of the {source['in_file']} in {source['path']} ({source['format']}"
                   + (f"; --limit {source['limit']})" if source.get("limit") else ")"))
    _print_metrics(doc)
    typer.echo(f"report: {Path(cfg.out) / 'report.html'}   metrics: {Path(cfg.out) / 'metrics.json'}")
    apply_gates(doc, gates, junit, suite="tether eval")


def _print_metrics(doc: dict) -> None:
    reference = doc.get("reference", {})
    width = max((len(name) for name in doc["metrics"]), default=6) + 2
    typer.echo(f"{'metric':{width}} {'value':>7}  {'95% interval':>17} {'n':>6}" + ("  base rate" if reference else ""))
    for name, m in doc["metrics"].items():
        ref = reference.get(name)
        line = (f"{name:{width}} {100 * m['value']:6.1f}%  [{100 * m['ci_low']:5.1f}, {100 * m['ci_high']:5.1f}]%"
                f" {m['n']:>6}")
        if ref is not None:
            line += f"  {100 * ref:6.1f}%" + ("" if m["ci_low"] <= ref <= m["ci_high"] else "  (outside)")
        typer.echo(line)
    for row in doc.get("agreement", []):
        typer.echo(f"scorer {row['scorer']} vs gold ({row['question']}): accuracy {row['accuracy']}, "
                   f"kappa {row['kappa']}, n {row['n']}, unparsed {row['parse_failures'] + row['judge_refusals']}")


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="eval run directories; the first is the baseline")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write compare.json and report.html here")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="significance level (Holm-adjusted)")] = 0.05,
) -> None:
    """Put eval runs side by side; paired tests of each against the first on the same prompts.

    Example: tether eval compare runs/eval-base runs/eval-sft --out runs/compare
    """
    from tether.evals.compare import compare
    from tether.evals.report import write_compare_report

    result = compare([str(r) for r in runs], alpha=alpha)
    labels = [r["label"] for r in result["runs"]]
    width = max(len(name) for name in result["metrics"]) + 2
    typer.echo(f"{'metric':{width}}" + "".join(f" {label[:16]:>16}" for label in labels))
    for name in result["metrics"]:
        line = f"{name:{width}}"
        for index, run in enumerate(result["runs"]):
            m = run["metrics"].get(name)
            cell = "–" if m is None else f"{100 * m['value']:.1f}%"
            test = run["tests"].get(name) if index else None
            if test is not None and test["significant"]:
                cell += "*"
            line += f" {cell:>16}"
        typer.echo(line)
    typer.echo("* significant against the first run (paired test, Holm-adjusted p < alpha)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=2))
        write_compare_report(result, out / "report.html")
        typer.echo(f"report: {out / 'report.html'}")


@app.command("inspect")
def inspect_cmd(
    run: Annotated[Path, typer.Argument(help="a finished eval run directory")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the log file, .json or .eval (default: "
                                             "RUN/inspect.json)")] = None,
) -> None:
    """Write an eval run as an Inspect AI log (open it with `inspect view`; needs tether[inspect]).

    Example: tether eval inspect runs/eval-base --out logs/eval-base.json
    """
    from tether.evals.inspect_log import write_inspect_log

    path = write_inspect_log(run, out or run / "inspect.json")
    typer.echo(f"inspect log: {path}   (inspect view --log-dir {path.parent})")
