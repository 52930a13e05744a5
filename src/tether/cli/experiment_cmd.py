"""``tether experiment``: the measured experiments behind the README's claims, each resumable."""

from __future__ import annotations

import json

import typer

from tether.cli.common import ConfigOpt, OutOpt, SetOpt, build_config, echo_main

app = typer.Typer(help="Run a measured experiment end to end (skips stages that already finished).",
                  no_args_is_help=True)


@app.command()
def overoptimisation(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None) -> None:
    """Reward-model over-optimisation on the world: best-of-n and PPO against a proxy RM trained on biased
    annotators; gold and proxy against KL; the watchdog, ensembles and a larger KL penalty as mitigations.

    Example: tether experiment overoptimisation --out runs/overoptimisation
    Writes OUT/overoptimisation.json and OUT/overoptimisation.png.
    """
    from tether.pipelines import overoptimisation as experiment

    cfg = build_config(experiment.OveroptimisationConfig, config, set_, out)
    results = experiment.run(cfg)
    rows = {"base": results["base"]} | {name: v["final"] for name, v in results["ppo"].items()}
    echo_main(json.dumps(rows, indent=2))
    echo_main(f"results: {cfg.out}/overoptimisation.json   plot: {cfg.out}/overoptimisation.png")


@app.command()
def recipes(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None) -> None:
    """Standard (SFT -> DPO), character-first, constitutional AI and context distillation at one training
    budget, each followed by the same RLVR: gold HHH after alignment and after RLVR, over several seeds.

    Example: tether experiment recipes --out runs/recipes
    Writes OUT/recipes.json and OUT/recipes.png.
    """
    from tether.pipelines import recipe_comparison as experiment

    cfg = build_config(experiment.RecipeComparisonConfig, config, set_, out)
    results = experiment.run(cfg)
    for row in results["table"]:
        cells = "  ".join(f"{k.split('.', 1)[1]}={v['mean']:.3f}" for k, v in row.items() if isinstance(v, dict))
        echo_main(f"{row['arm']:>16} {row['condition']:>6} {row['stage']:>9}  {cells}")
    echo_main(f"results: {cfg.out}/recipes.json   plot: {cfg.out}/recipes.png")
