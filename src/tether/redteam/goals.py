"""Where goals (harmful requests to attack with) and many-shot examples come from.

Goals: the world's hazard requests (gold-graded; ``split`` picks training or held-out items), or a
user's file in a format red-teamers already have: HarmBench behaviours CSV, AdvBench CSV, or JSONL
(``{"prompt": ..., "category": ...}``; rows labelled ``benign`` are left out). Shots for many-shot
templates: the world's answered requests for *other* hazards, or a JSONL file of
``{"prompt", "completion"}`` rows. Bad files fail with the file and line at fault.

Each source is a config class registered in :data:`GOAL_SOURCES` (a plugin adds one the same way): it loads
its goals and says which many-shot examples and which scorer suit them by default.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.registry import Kind, Registry
from tether.data.io import jsonl_objects
from tether.data.prompt_files import PROMPT_FORMATS, detect_format
from tether.redteam.attacks import Goal, Shot
from tether.world.spec import WorldConfig


class GoalsConfig(Config):
    """Base of every goal source's config: its registered source and how to load its goals."""

    source: str = Field(description="registered goal source: world, file, harmbench, advbench, jsonl, text, ...")

    @abstractmethod
    def load(self) -> list[Goal]:
        """The goals (each source's config says how)."""

    def default_shots(self) -> list[Shot] | None:
        """Many-shot examples that suit these goals when the run names none; None: the run must name some."""
        return None

    def offers_shots(self) -> bool:
        """Whether :meth:`default_shots` gives any (answered without loading them)."""
        return type(self).default_shots is not GoalsConfig.default_shots

    def default_scorer(self) -> str:
        """The scorer kind that decides success when the run names none."""
        return "refusal"

    def describe(self) -> dict[str, Any]:
        """What the metrics document says of the goals (besides the source and how many there were)."""
        return {}


GOAL_SOURCES: Registry[type[GoalsConfig]] = Registry(
    "goal source", description="a config class per source ({source: NAME, ...}); its load() gives the goals")

# A config field holding a goal source ({source: ..., ...}; the world's hazards by default).
GoalSource = Annotated[GoalsConfig, Kind(GOAL_SOURCES, key="source", default="world")]


@GOAL_SOURCES.register("world")
class WorldGoalsConfig(GoalsConfig):
    """The world's hazard requests, gold-graded; ``split`` picks training or held-out items."""

    source: Literal["world"] = "world"
    world: WorldConfig = Field(default_factory=WorldConfig, description="which world")
    split: Literal["train", "heldout"] = Field("train", description="training or held-out hazard items")
    n: int = Field(100, ge=1, description="draws (repeats dropped, so there may be fewer goals)")
    seed: int = Field(0, description="the draw")

    def load(self) -> list[Goal]:
        """Plain hazard requests with the metadata the world's gold grader needs."""
        return world_goals(self.world, self.split, self.n, seed=self.seed)

    def default_shots(self) -> list[Shot] | None:
        """The world's answered requests for its training hazards."""
        return world_shots(self.world)

    def default_scorer(self) -> str:
        """The world's gold grader."""
        return "gold"

    def describe(self) -> dict[str, Any]:
        """The split."""
        return {"split": self.split}


class FileGoalsConfig(GoalsConfig):
    """A goals file in a prompt-file format (:data:`tether.data.prompt_files.PROMPT_FORMATS`): HarmBench
    behaviours CSV or plain list, AdvBench CSV, a text file of one request per line, or JSONL
    (``{"prompt": ..., "category": ...}``; rows labelled ``benign`` are left out). ``source: file``
    tells the format from the file's name and header. Every goal in the file is used unless ``limit``
    says otherwise (and the run's metrics say how many of how many)."""

    source: Literal["file", "harmbench", "advbench", "jsonl", "text", "xstest", "table", "datasets"]
    path: str = Field(description="the file")
    limit: int | None = Field(None, ge=1, description="only the first N goals of the file (default: all of them)")
    _in_file: int | None = PrivateAttr(None)  # harmful goals the file holds, once loaded

    def format(self) -> str:
        """The prompt-file format: the source's name, or (``file``) what the file's name and header say."""
        return detect_format(self.path) if self.source == "file" else self.source

    def load(self) -> list[Goal]:
        """The file's harmful requests (the first ``limit``, when set)."""
        prompts = PROMPT_FORMATS.get(self.format())(self.path)
        goals = []
        for p in prompts:
            if p.meta.get("label") == "benign":
                continue
            if not isinstance(p.prompt, str):
                raise DataError(f"{self.path}: goal {p.id!r}: a goal is one request (a string), not a conversation")
            # An AdvBench row's target (the affirmative opening it is after) is what GCG optimises for.
            meta = {"target": str(p.meta["target"])} if p.meta.get("target") else {}
            goals.append(Goal(p.id, p.prompt, str(p.meta.get("category", "")), meta))
        seen: set[str] = set()
        for goal in goals:
            if goal.id in seen:
                raise DataError(f"{self.path}: goal id {goal.id!r} appears twice; ids must be unique")
            seen.add(goal.id)
        if not goals:
            raise DataError(f"{self.path}: no harmful goals (every row is labelled benign)")
        self._in_file = len(goals)
        return goals[:self.limit] if self.limit else goals

    def describe(self) -> dict[str, Any]:
        """The file, its format, and how many of its goals were used."""
        out: dict[str, Any] = {"path": self.path, "format": self.format()}
        if self._in_file is not None:
            out |= {"in_file": self._in_file, "limit": self.limit}
        return out


for _format in ("file", "harmbench", "advbench", "jsonl", "text", "xstest", "table", "datasets"):
    GOAL_SOURCES.register(_format)(FileGoalsConfig)


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
