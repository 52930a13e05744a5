"""Entry point of the ``tether`` command.

User mistakes (a missing path, a bad config key, a malformed row) print one line and exit
with code 2; unexpected errors print one line and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tether import __version__
from tether.cli import (
    config_cmd,
    data_cmd,
    eval_cmd,
    guard_cmd,
    interp_cmd,
    models_cmd,
    monitor_cmd,
    plugins_cmd,
    redteam_cmd,
    serve_cmd,
    studio_cmd,
    verify_cmd,
    world_cmd,
)
from tether.cli.common import ConfigOpt, OutOpt, ResumeOpt, SetOpt
from tether.cli.recipes import RecipeGroup

app = typer.Typer(
    name="tether",
    help="Align language models and prove it: train, attack, measure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# The recipe groups' commands come from the recipe table (tether.core.recipes), built when asked for.
RECIPE_GROUPS = {
    "train": "Train a model: SFT, reward models, the DPO family, PPO, GRPO / RLOO / REINFORCE++.",
    "align": "Shape a model with its own outputs: constitutional AI (critique -> revise, AI feedback), context "
             "distillation, the character-first recipe.",
    "experiment": "Run a measured experiment end to end (--resume skips the stages that finished).",
    "edit": "Edit a model's weights directly: rewrite facts or remove a behaviour with ROME, MEMIT or AlphaEdit.",
    "oversee": "Scalable oversight: a weak judge overseeing stronger models through debate, consultancy or alone.",
}
app.add_typer(world_cmd.app, name="world")
for _group, _help in RECIPE_GROUPS.items():
    app.add_typer(typer.Typer(cls=RecipeGroup, help=_help, no_args_is_help=True), name=_group)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(redteam_cmd.app, name="redteam")
app.add_typer(models_cmd.app, name="models")
app.add_typer(data_cmd.app, name="data")
app.add_typer(config_cmd.app, name="config")
app.add_typer(plugins_cmd.app, name="plugins")
app.add_typer(serve_cmd.serve_app, name="serve")
app.add_typer(serve_cmd.keys_app, name="keys")
app.add_typer(studio_cmd.app, name="studio")
app.add_typer(guard_cmd.app, name="guard")
app.add_typer(monitor_cmd.app, name="monitor")
app.add_typer(interp_cmd.app, name="interp")
app.add_typer(serve_cmd.audit_app, name="audit")
app.add_typer(serve_cmd.rollout_app, name="rollout")
app.add_typer(verify_cmd.app, name="verify")


@app.command("run")
def run_cmd(
    config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
    world_seed: Annotated[int | None, typer.Option("--world-seed", help="which world (base model, data, "
                                                   "evaluation, goals); default: the config's")] = None,
) -> None:
    """The whole alignment loop in one command: base model -> the config's stages -> red-team -> every model
    evaluated -> OUT/summary.json and OUT/report.html. Default config: run/world (the embedded world).

    Example: tether run --out runs/tether   (then open runs/tether/report.html)
    """
    from tether.cli.common import build_config, echo_main
    from tether.pipelines import main as pipeline

    overrides = [*(set_ or []), *([f"world_seed={world_seed}"] if world_seed is not None else [])]
    cfg = build_config(pipeline.PipelineConfig, config or "run/world", overrides, out)
    summary = pipeline.run(cfg, resume=resume, echo=echo_main)
    for line in pipeline.compact_table(summary):
        echo_main(line)
    echo_main(f"{summary['total_seconds'] / 60:.1f} min   summary: {cfg.out}/summary.json   "
              f"report: {cfg.out}/report.html")


@app.command("card")
def card_cmd(
    run: Annotated[Path, typer.Argument(help="a finished tether run directory (it holds summary.json)")],
    out: Annotated[Path | None, typer.Option("--out", help="where the cards go; default RUN/card")] = None,
    guard: Annotated[list[Path] | None, typer.Option(
        "--guard", metavar="DIR",
        help="a tether guard train run (or its OUT/guard) deployed with the model; repeatable")] = None,
    verify: Annotated[list[Path] | None, typer.Option(
        "--verify", metavar="DIR", help="a tether verify guard output (its certify.json); repeatable")] = None,
) -> None:
    """Model and system cards from a tether run directory: a Hugging Face model card (README.md, its
    model-index every metric of the final model, checked against summary.json) and SYSTEM_CARD.md (data
    hashes, stages and configs, every evaluation with intervals, red-team by attack kind, the guards named
    with their thresholds, measured and certified figures, known failures, what was not tested).

    Example: tether card runs/tether --guard runs/guard-world --verify runs/verify
    """
    from tether.cli.common import echo_main
    from tether.pipelines.card import write_cards

    written = write_cards(run, out, guard or [], verify or [])
    echo_main(f"model card: {written['model_card']}  ({written['metrics_checked']} metrics, checked against "
              f"{run / 'summary.json'})")
    echo_main(f"system card: {written['system_card']}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tether {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="show full tracebacks and debug logs")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        # transformers and accelerate log advice meant for library authors; keep the terminal for results.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _end_distributed() -> None:
    """Tear down a torch.distributed process group a command left open (torchrun / accelerate launch)."""
    torch_distributed = sys.modules.get("torch.distributed")
    if torch_distributed is not None and torch_distributed.is_available() and torch_distributed.is_initialized():
        torch_distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map errors to exit codes (2: user error, 1: internal error)."""
    from tether.core.errors import UserError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("TETHER_DEBUG"))
    try:
        try:
            app(args=args, prog_name="tether", standalone_mode=True)
        except SystemExit as done:
            if not done.code:
                _end_distributed()
            raise
    except UserError as exc:
        if debug:
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted; rerun with --resume to continue from the last checkpoint", err=True)
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.secho(f"internal error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)",
                    err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
