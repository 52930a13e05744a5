"""Successful attacks as training data for adversarial training.

Every attack that succeeded (``success: true`` in a red-team run's ``attacks.jsonl``) becomes:

- an SFT conversation, ``{"messages": [...the attack prompt..., {"role": "assistant", "content": SAFE}]}``;
- a preference pair in TRL's conversational format, ``{"prompt": [...], "chosen": [SAFE turn],
  "rejected": [the reply the attack drew]}``;

where SAFE is a refusal: the world's own refusal for the goal's item when the goal came from the world,
otherwise ``refusal`` (a template that may use ``{request}``). Rows keep ``kind`` and ``goal`` so the
data can be split by attack kind (held-out kinds stay out of training). The files feed
``tether train sft`` and ``tether train dpo`` unchanged.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.runs import RunDir
from tether.data.io import jsonl_objects, write_jsonl


class ExportConfig(Config):
    """``tether redteam export``: one red-team run's successful attacks as SFT and DPO data."""

    run: str = Field(description="a red-team run directory (its attacks.jsonl)")
    refusal: str = Field("I can't help with that.", description="the safe reply to a non-world goal; may use "
                         "{request}")
    exclude_kinds: list[str] = Field(default_factory=list, description="attack kinds left out (held out)")
    seed: int = Field(0, description="picks among the world's refusal wordings")
    out: str = Field(description="directory for sft.jsonl and pairs.jsonl")


def safe_reply(row: dict[str, Any], refusal: str, rng: random.Random) -> str:
    """The refusal an attacked model should have given."""
    world_item = (row.get("world") or {}).get("item")
    if world_item:
        from tether.world.responses import hazard_refusal

        return hazard_refusal(str(world_item), rng)
    return refusal.format(request=row.get("request", ""))


def adversarial_examples(rows: Iterable[dict[str, Any]], refusal: str, *, exclude_kinds: Sequence[str] = (),
                         seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """SFT conversations and preference pairs from the successful attacks among ``rows``."""
    rng = random.Random(seed)
    sft, pairs = [], []
    for row in rows:
        if row.get("success") is not True or row["kind"] in exclude_kinds:
            continue
        prompt = [{"role": "user", "content": row["prompt"]}] if isinstance(row["prompt"], str) else row["prompt"]
        safe = {"role": "assistant", "content": safe_reply(row, refusal, rng)}
        tags = {"kind": row["kind"], "goal": row["goal"]}
        sft.append({"messages": [*prompt, safe], **tags})
        pairs.append({"prompt": prompt, "chosen": [safe], "rejected": [{"role": "assistant",
                                                                        "content": row["response"]}],
                      **tags})
    return sft, pairs


def run(cfg: ExportConfig, *, resume: bool = False) -> dict[str, Any]:
    """Write ``sft.jsonl`` and ``pairs.jsonl`` under ``cfg.out`` (a run directory); returns counts by attack kind."""
    run_dir = RunDir(cfg.out, command="redteam export", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _export(cfg))


def _export(cfg: ExportConfig) -> dict[str, Any]:
    path = Path(cfg.run) / "attacks.jsonl"
    rows = [row for _, row in jsonl_objects(path)]
    if rows and "success" not in rows[0]:
        raise DataError(f"{path}: not scored yet (the run was interrupted); finish it with tether redteam --resume")
    sft, pairs = adversarial_examples(rows, cfg.refusal, exclude_kinds=cfg.exclude_kinds, seed=cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "pairs.jsonl", pairs)
    summary = {"examples": len(sft), "by_kind": dict(Counter(r["kind"] for r in sft)), "run": cfg.run}
    (out / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
