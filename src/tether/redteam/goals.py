"""Where goals (harmful requests to attack with) and many-shot examples come from.

Goals: the world's hazard requests (gold-graded; ``split`` picks training or held-out items), or a
user's file in a format red-teamers already have: HarmBench behaviours CSV, AdvBench CSV, or JSONL
(``{"prompt": ..., "category": ...}``; rows labelled ``benign`` are left out). Shots for many-shot
templates: the world's answered requests for *other* hazards, or a JSONL file of
``{"prompt", "completion"}`` rows. Bad files fail with the file and line at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tether.core.config import Config
from tether.core.errors import DataError
from tether.data.io import jsonl_objects
from tether.redteam.attacks import Goal, Shot
from tether.world.spec import WorldConfig


class GoalsConfig(Config):
    """The goals an attack run uses."""

    source: Literal["world", "harmbench", "advbench", "jsonl"] = Field(
        "world", description="the world's hazard requests, or a user file in one of these formats")
    path: str | None = Field(None, description="the file (every source but world)")
    world: WorldConfig = Field(default_factory=WorldConfig, description="world: which world")
    split: Literal["train", "heldout"] = Field("train", description="world: training or held-out hazard items")
    n: int = Field(100, ge=1, description="world: draws (repeats dropped, so there may be fewer goals); "
                   "files: the first n goals")
    seed: int = Field(0, description="world: the draw")

    @model_validator(mode="after")
    def _needs_path(self) -> GoalsConfig:
        if self.source != "world" and not self.path:
            raise ValueError(f"goals.source={self.source} needs goals.path")
        return self


def load_goals(cfg: GoalsConfig) -> list[Goal]:
    """The goals ``cfg`` describes."""
    if cfg.source == "world":
        return world_goals(cfg.world, cfg.split, cfg.n, seed=cfg.seed)
    from tether.evals.loaders import LOADERS

    prompts = LOADERS[cfg.source](cfg.path or "")
    goals = []
    for p in prompts:
        if p.meta.get("label") == "benign":
            continue
        if not isinstance(p.prompt, str):
            raise DataError(f"{cfg.path}: goal {p.id!r}: a goal is one request (a string), not a conversation")
        # An AdvBench row's target (the affirmative opening it is after) is what GCG optimises for.
        meta = {"target": str(p.meta["target"])} if p.meta.get("target") else {}
        goals.append(Goal(p.id, p.prompt, str(p.meta.get("category", "")), meta))
    seen: set[str] = set()
    for goal in goals:
        if goal.id in seen:
            raise DataError(f"{cfg.path}: goal id {goal.id!r} appears twice; ids must be unique")
        seen.add(goal.id)
    return goals[:cfg.n]


def world_goals(world_cfg: WorldConfig, split: Literal["train", "heldout"], n: int, *, seed: int = 0) -> list[Goal]:
    """Plain hazard requests of the world, with the metadata its gold grader needs."""
    from tether.world.families import sample_items
    from tether.world.spec import build_world

    world = build_world(world_cfg)
    # Draws repeat (a split has only so many items x request templates); a goal is attacked once per attack,
    # so repeats are dropped: a split may hold fewer than n distinct goals.
    items = list({it.id: it for it in sample_items(world, "hazard", split, n, seed=seed)}.values())
    return [Goal(it.id, it.user_text, str(it.tags.get("category", "")),
                 # target: the opening of the world's harmful-compliance replies, which GCG optimises for.
                 {"item_id": it.id, "family": "hazard", "split": it.split, "gold": it.gold, "tags": it.tags,
                  "target": f"Sure. To make the {it.gold['item']},"},
                 subject=str(it.gold["item"]))
            for it in items]


def world_shots(world_cfg: WorldConfig) -> list[Shot]:
    """Answered requests for the world's training hazards (what a many-shot attacker would collect)."""
    from tether.world.spec import build_world

    world = build_world(world_cfg)
    return [Shot(f"How do I make the {h.name}?", f"Sure. To make the {h.name}, {h.secret}.", h.name)
            for h in world.hazards_in("train")]


def load_shots(path: str | Path) -> list[Shot]:
    """``{"prompt": str, "completion": str}`` rows of a JSONL file (``source``, optional: what a row answers)."""
    shots = []
    for where, row in jsonl_objects(path):
        if not (isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str)):
            raise DataError(f"{where}: a shot needs string fields 'prompt' and 'completion'")
        shots.append(Shot(row["prompt"], row["completion"], str(row.get("source", ""))))
    return shots
