"""``tether world``: build the base model, describe it, sample and export the world's data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tether.cli.common import ConfigOpt, SetOpt

app = typer.Typer(help="The built-in gold-labelled world and its base model.", no_args_is_help=True)

SeedOpt = typer.Option(None, "--seed", help="world seed (default: the config's, 0)")
SizeOpt = typer.Option(None, "--size", help="tiny | mini | small (default) | medium | large")


def _build_config(config: str | None, set_: list[str] | None, seed: int | None, size: str | None):
    from tether.core.config import load_config
    from tether.world.build import WorldBuildConfig

    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"world.seed={seed}")
    if size is not None:
        overrides.append(f"size={size}")
    return load_config(WorldBuildConfig, config, overrides)


@app.command()
def build(
    seed: int | None = SeedOpt, size: str | None = SizeOpt,
    out: Path | None = typer.Option(None, "--out", "-o", help="also copy the finished model directory here"),
    force: bool = typer.Option(False, "--force", help="rebuild even if the cache holds this build"),
    check: bool = typer.Option(False, "--check", help="compare the build's fingerprint (corpus, tokenizer, "
                               "weights) with the one the docs state; exit 1 when they differ"),
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Generate the world's corpus and pretrain its base model (cached; reused by later commands).

    Example: tether world build --seed 0 --size small --out runs/world-base
    """
    import shutil

    from tether.world.build import build_base_model, check_fingerprint

    cfg = _build_config(config, set_, seed, size)
    if check:
        check_fingerprint(cfg, {})  # a configuration with no stated fingerprint fails before the build
    summary = build_base_model(cfg, force=force)
    if check:
        problems = check_fingerprint(cfg, summary)
        for problem in problems:
            typer.echo(f"fingerprint differs: {problem}", err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"fingerprint matches the stated one: {summary['fingerprint']}", err=True)
    if out is not None:
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(summary["model"], out)
        summary["copied_to"] = str(out)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def describe(
    seed: int | None = SeedOpt, size: str | None = SizeOpt,
    model: str | None = typer.Option(None, "--model", "-m", help="describe this model instead of the base model"),
    n: int = typer.Option(200, "-n", help="prompts per family, split and condition"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    config: ConfigOpt = None, set_: SetOpt = None,
) -> None:
    """Measure gold failure rates per family, with and without a character preamble, against the corpus rates.

    Example: tether world describe --seed 0 -n 300
    """
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.world.build import build_base_model
    from tether.world.describe import measure, rates_table
    from tether.world.spec import build_world

    cfg = _build_config(config, set_, seed, size)
    path = model or build_base_model(cfg)["model"]
    lm, tokenizer = load_model_and_tokenizer(ModelConfig(path=path))
    world = build_world(cfg.world)
    rows = rates_table(measure(lm, tokenizer, world, n=n))
    if as_json:
        typer.echo(json.dumps({"model": path, "world_seed": cfg.world.seed, "rows": rows}, indent=2))
        return
    _print_table(rows, path)


def _print_table(rows: list[dict], path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def cell(rate: dict | None) -> str:
        if rate is None:
            return "-"
        return f"{100 * rate['value']:.1f} [{100 * rate['ci_low']:.0f}-{100 * rate['ci_high']:.0f}]"

    table = Table(title=f"failure rates (%), 95% Wilson intervals: {path}")
    for name in ("family", "split", "corpus", "base model", "corpus (preamble)", "with preamble", "malformed"):
        table.add_column(name)
    for row in rows:
        corpus = row.get("corpus_plain")
        corpus_pre = row.get("corpus_with_preamble")
        table.add_row(row["family"], row["split"], "-" if corpus is None else f"{100 * corpus:.1f}",
                      cell(row.get("plain")), "-" if corpus_pre is None else f"{100 * corpus_pre:.1f}",
                      cell(row.get("with_preamble")), cell(row.get("plain_malformed")))
    Console().print(table)


@app.command()
def sample(
    family: str = typer.Option("hazard", "--family", "-f",
                               help="task, hazard, jailbreak, benign, sycophancy, unknown, corrigibility"),
    n: int = typer.Option(5, "-n", help="how many"),
    split: str = typer.Option("train", help="train | heldout"),
    seed: int = typer.Option(0, "--seed", help="world seed"),
) -> None:
    """Print prompts of a family with their gold information.

    Example: tether world sample --family hazard -n 5
    """
    from tether.core.errors import UserError
    from tether.world.families import FAMILIES, sample_items
    from tether.world.spec import WorldConfig, build_world

    if family not in FAMILIES:
        raise UserError(f"--family {family!r} is not one of {', '.join(FAMILIES)}")
    if split not in ("train", "heldout"):
        raise UserError(f"--split {split!r} is not 'train' or 'heldout'")
    world = build_world(WorldConfig(seed=seed))
    for item in sample_items(world, family, split, n, seed=7):  # type: ignore[arg-type]
        typer.echo(json.dumps(item.model_dump(), ensure_ascii=False))


@app.command()
def export(
    out: Path = typer.Option(..., "--out", "-o", help="directory for the JSONL files"),
    seed: int = typer.Option(0, "--seed", help="world seed"),
    n: int = typer.Option(2000, "-n", help="records per training file"),
) -> None:
    """Write SFT, preference (annotator-labelled) and prompt datasets in TRL's formats.

    Example: tether world export --out runs/world-data
    """
    from tether.world.datasets import export_all
    from tether.world.spec import WorldConfig, build_world

    counts = export_all(build_world(WorldConfig(seed=seed)), out, n=n)
    typer.echo(json.dumps(counts, indent=2))
