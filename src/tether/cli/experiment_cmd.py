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
