"""``tether verify``: certified bounds on the small networks tether owns, and properties checked independently."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tether.cli.common import ConfigOpt, OutOpt, ResumeOpt, SetOpt, build_config

app = typer.Typer(help="Verification: certified accuracy of a guard's head against an attack's (feature-space "
                  "balls, word swaps), properties exported as ONNX + VNN-LIB and decided by an exact MILP.",
                  no_args_is_help=True)


@app.command("guard")
def verify_guard(
    guard: Annotated[str, typer.Argument(help="a guard directory (tether guard train's OUT/guard) or its run")],
    set_: SetOpt = None,
    config: ConfigOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Certified accuracy of a static or embedding guard's head by IBP and CROWN over feature-space balls and
    over word-swap budgets, each beside an attack's accuracy (an upper bound: a certified figure never exceeds
    it), and its properties exported as ONNX + VNN-LIB and decided again by the exact MILP check.

    Example: tether verify guard runs/guard-world --set 'epsilons=[0,0.005,0.01,0.02]' --out runs/verify
    """
    from tether.pipelines.verify_guard import VerifyGuardConfig, run

    cfg = build_config(VerifyGuardConfig, config, [f"guard={guard}", *(set_ or [])], out)
    doc = run(cfg, resume=resume)
    typer.echo(f"{doc['rows']} rows ({doc['positives']} unsafe), {doc['model']} head, hidden {doc['hidden']}")
    for point in doc["feature"]:
        typer.echo(f"  epsilon {point['epsilon']:<8} clean {point['clean']['value']:.3f}  certified IBP "
                   f"{point['certified_ibp']['value']:.3f}  CROWN {point['certified_crown']['value']:.3f}  "
                   f"PGD {point['empirical']['value']:.3f}")
    for point in doc["substitution"]:
        sure = point["certified"]
        typer.echo(f"  swaps {point['budget']:<3} certified {'-' if sure is None else format(sure['value'], '.3f')}"
                   f" ({point['method'] or 'not tractable'})  attack {point['empirical']['value']:.3f}")
    exported = doc["exported"]
    if exported["n"]:
        typer.echo(f"  exported {exported['n']} properties at epsilon {exported['epsilon']}: the exact check agrees "
                   f"with CROWN on {exported['agree']}/{exported['n']}")
    typer.echo(f"-> {cfg.out}/certify.json")


@app.command("check")
def check_property(
    onnx_path: Annotated[str, typer.Argument(help="the network: ONNX of Gemm / MatMul+Add / Relu nodes")],
    vnnlib: Annotated[str, typer.Argument(help="the property: VNN-LIB input box and one bound on Y_0")],
) -> None:
    """Decide a property exactly (MILP, HiGHS): print unsat (it holds) or sat with the counterexample's output as
    ONNX Runtime computes it; exit 0 for unsat, 1 for sat.

    Example: tether verify check runs/verify/properties/head.onnx runs/verify/properties/prop_0.vnnlib
    """
    from pathlib import Path

    from tether.core.errors import UserError
    from tether.verify.export import check

    for path in (onnx_path, vnnlib):
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    result = check(onnx_path, vnnlib)
    typer.echo(json.dumps(result.as_dict()))
    if result.status == "sat":
        raise typer.Exit(1)
