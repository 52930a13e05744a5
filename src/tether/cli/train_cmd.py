"""``tether train``: training recipes."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import typer

from tether.cli.common import ConfigOpt, OutOpt, ResumeOpt, SetOpt, SkipBadOpt, build_config, echo_main


def _run(module: str, config_class: str, config: str | None, set_: list[str] | None, out: Path | None, *,
         resume: bool, skip_bad: bool, preset: list[str] | None = None, **run_kwargs: str) -> None:
    """Every training command: build the recipe's typed config, run it, print the summary (main process only).

    ``preset``: overrides applied after the config file and before ``--set`` (what makes ``rloo`` GRPO with
    RLOO advantages)."""
    recipe = importlib.import_module(f"tether.train.{module}")  # heavy imports only for the command that runs
    cfg = build_config(getattr(recipe, config_class), config, [*(preset or []), *(set_ or [])], out,
                       skip_bad=skip_bad)
    summary = recipe.run(cfg, resume=resume, **run_kwargs)
    echo_main(json.dumps(summary, indent=2))
    echo_main(f"model: {cfg.out}/model   run: {cfg.out}")


app = typer.Typer(help="Train a model: SFT, reward models, the DPO family, PPO, GRPO / RLOO / REINFORCE++.",
                  no_args_is_help=True)


@app.command()
def sft(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
        skip_bad: SkipBadOpt = False) -> None:
    """Supervised fine-tuning on completion / assistant tokens only.

    Example: tether train sft --config sft/demo --set loop.max_steps=20 --out runs/sft-demo

    Several processes: torchrun --nproc_per_node 2 -m tether.cli.main train sft ... (or accelerate launch)
    """
    _run("sft", "SFTConfig", config, set_, out, resume=resume, skip_bad=skip_bad)


@app.command()
def dpo(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
        skip_bad: SkipBadOpt = False) -> None:
    """Preference optimisation: DPO, cDPO, robust, hinge, IPO, SimPO or KTO (loss.variant).

    Example: tether train dpo --config dpo/world --set loss.variant=ipo --out runs/ipo
    """
    _run("dpo", "DPOConfig", config, set_, out, resume=resume, skip_bad=skip_bad)


@app.command()
def rm(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
       skip_bad: SkipBadOpt = False) -> None:
    """Reward model (Bradley-Terry), optionally an ensemble of heads or whole models.

    Example: tether train rm --config rm/world --set ensemble.heads=4 --out runs/rm-world
    """
    _run("rm", "RMConfig", config, set_, out, resume=resume, skip_bad=skip_bad)


@app.command()
def grpo(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
         skip_bad: SkipBadOpt = False) -> None:
    """Online RL with group-relative advantages (GRPO, RLOO or REINFORCE++) and a k3 KL to the reference.

    Example: tether train grpo --set model.path=world:base --set data.train=builtin:world-prompts --set "rewards=[{kind: world-verifier}]" --out runs/grpo
    """
    _run("grpo", "GRPOConfig", config, set_, out, resume=resume, skip_bad=skip_bad)


@app.command()
def rloo(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
         skip_bad: SkipBadOpt = False) -> None:
    """RLOO (Ahmadian et al. 2024): the GRPO recipe with leave-one-out advantages (loss.advantage=rloo).

    Example: tether train rloo --config grpo/world-rlvr --out runs/rloo-rlvr
    """
    _run("grpo", "GRPOConfig", config, set_, out, resume=resume, skip_bad=skip_bad,
         preset=["loss.advantage=rloo"], command="train rloo")


@app.command()
def ppo(config: ConfigOpt = None, set_: SetOpt = None, out: OutOpt = None, resume: ResumeOpt = False,
        skip_bad: SkipBadOpt = False) -> None:
    """PPO: value model (separate or shared head), GAE, KL in reward or loss, adaptive KL, watchdog.

    Example: tether train ppo --config ppo/world-gold-rm --out runs/ppo
    """
    _run("ppo", "PPOConfig", config, set_, out, resume=resume, skip_bad=skip_bad)
