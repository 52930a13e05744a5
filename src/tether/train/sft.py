"""Supervised fine-tuning recipe: NLL on completion tokens only.

Prompt tokens, and in multi-turn conversations every non-assistant turn, are masked out of
the loss (see :mod:`tether.models.chat`). ``run(cfg)`` reads top to bottom:
load -> data -> loop (batch -> loss -> step -> log -> eval -> checkpoint) -> save.
"""

from __future__ import annotations

from typing import Any

from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.train.supervised import SFTConfig, SFTData, evaluate_loss, tokenize_sft, train_supervised

__all__ = ["SFTConfig", "SFTData", "evaluate_loss", "run", "tokenize_sft"]


@recipe("sft", group="train", config=SFTConfig,
        summary="Supervised fine-tuning on completion / assistant tokens only.",
        example="tether train sft --config sft/demo --set loop.max_steps=20 --out runs/sft-demo",
        consumes={"model": "model.path", "demonstrations": "data.train"}, produces={"model": output("model")})
def run(cfg: SFTConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, write the run directory and the fine-tuned model (``OUT/model``); return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train sft", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: train_supervised(cfg, rd, resume))
