"""``tether redteam``: attack a model (in-process or behind an endpoint) and report attack success."""

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
from tether.cli.recipes import RecipeGroup

# Its subcommands: export (below), and the recipes declared for the group (adversarial, attacker, ...).
app = typer.Typer(cls=RecipeGroup,
                  help="Red-team a model: jailbreak templates, converters and best-of-N against goals, scored "
                       "(attacks.jsonl, metrics.json, report.html under --out).\n\n"
                       "Example: tether redteam --target world:base --attacks direct,role-play,role-play+base64 "
                       "--out runs/redteam")


@app.callback(invoke_without_command=True)
def redteam(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option("--target", "-t", help="model directory, tiny:ARCH, world:base "
                                               "(default), or an OpenAI-compatible URL (http://host:port/v1)")] = None,
    attacks: Annotated[str | None, typer.Option("--attacks", "-a", help="comma-separated specs: TEMPLATE, "
                                                "CONVERTER, or +-joined (role-play+base64, best-of-16+direct); "
                                                "default: every template and every converter")] = None,
    goals: Annotated[str | None, typer.Option("--goals", help="a goals file (default: the world's hazards)")] = None,
    goals_format: Annotated[str, typer.Option("--goals-format", help="file (default: told by the file's name and "
                                              "header), harmbench, advbench, jsonl, text or xstest")] = "file",
    split: Annotated[str | None, typer.Option("--split", help="world goals: train or heldout items")] = None,
    n: Annotated[int | None, typer.Option("-n", help="world goals: how many to draw")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="a goals file: only its first N goals (default: "
                                              "every goal in the file)")] = None,
    config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
    fail_above: FailAboveOpt = None, fail_below: FailBelowOpt = None, junit: JunitOpt = None,
) -> None:
    """Attack, score and report: attacks.jsonl, metrics.json and report.html under --out.

    Example: tether redteam --target world:base --attacks direct,role-play,role-play+base64 --out runs/redteam
    """
    if ctx.invoked_subcommand is not None:
        return
    from tether.redteam import run as recipe
    from tether.redteam.attacks import parse_attack

    # ``asr`` names the attack success rate over every attack; asr.KIND, asr.category.NAME, ... as in metrics.json.
    gates = parse_gate_options(fail_above, fail_below, aliases={"asr": "asr.all"})
    overrides = list(set_ or [])
    if target is not None:
        overrides.append(f"target={target}")
    if attacks is not None:
        specs = [parse_attack(s) for s in attacks.split(",") if s.strip()]
        overrides.append(f"attacks={json.dumps(specs)}")
    if goals is not None:
        # A file source has its own keys (the world's split and seed would not validate): the whole mapping.
        overrides.append(f"goals={json.dumps({'source': goals_format, 'path': goals})}")
    for key, value in (("goals.split", split), ("goals.n", n), ("goals.limit", limit)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = build_config(recipe.RedteamConfig, config, overrides, out)
    doc = recipe.run(cfg, resume=resume)
    metrics = doc["metrics"]
    used = doc["goals"]
    if "in_file" in used:  # every goal of a file is attacked unless a limit says otherwise: say which
        typer.echo(f"goals: {used['n']} of the {used['in_file']} in {used['path']} ({used['format']}"
                   + (f"; --limit {used['limit']})" if used.get("limit") else ")"))
    width = max(len(k) for k in doc["attacks"]) + 2
    typer.echo(f"{'attack':{width}} {'ASR':>7}  {'95% interval':>17} {'goals':>6}")
    for kind in [*doc["attacks"], "all"]:
        m = metrics.get(f"asr.{kind}")
        if m is not None:
            typer.echo(f"{kind:{width}} {100 * m['value']:6.1f}%  [{100 * m['ci_low']:5.1f}, "
                       f"{100 * m['ci_high']:5.1f}]% {m['n']:>6}")
    rate = doc["throughput"]["attacks_per_s"]
    if rate is not None:
        typer.echo(f"throughput: {rate:.1f} attacks/s ({doc['throughput']['prompts_generated']} prompts)")
    typer.echo(f"report: {Path(cfg.out) / 'report.html'}   metrics: {Path(cfg.out) / 'metrics.json'}")
    apply_gates(doc, gates, junit, suite="tether redteam")


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="a red-team run directory")],
    out: Annotated[Path, typer.Option("--out", "-o", help="write sft.jsonl, pairs.jsonl and export.json here")],
    refusal: Annotated[str | None, typer.Option("--refusal", help="safe reply to non-world goals ({request})")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude",
                                                      help="attack kind to leave out (repeatable)")] = None,
    resume: ResumeOpt = False,
) -> None:
    """Successful attacks as adversarial training data: SFT conversations and DPO pairs with a safe reply.

    Example: tether redteam export runs/redteam --out data/adversarial --exclude many-shot
    """
    from tether.redteam.export import ExportConfig
    from tether.redteam.export import run as export

    cfg = ExportConfig(run=str(run), out=str(out), exclude_kinds=list(exclude or []),
                       **({"refusal": refusal} if refusal is not None else {}))
    summary = export(cfg, resume=resume)
    typer.echo(f"{summary['examples']} examples ({', '.join(f'{k}: {v}' for k, v in summary['by_kind'].items())})"
               f" -> {out / 'sft.jsonl'}, {out / 'pairs.jsonl'}")
