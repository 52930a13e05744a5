"""Data curation measured on gold (``tether experiment curation``).

SFT data with known faults: the world's demonstrations with a ``share`` of those in ``families`` (hazard
requests, questions about unknown lands, sycophancy traps) replaced by the corpus's bad replies (harmful
compliance, hallucination, agreeing with a false claim). Four SFT runs of the base model, each on its own
copy of the data, evaluated on the world's gold suite:

- **unfiltered**: the corrupted data as it is;
- **filtered**: the demonstrations a reward model scores lowest removed (``drop_share`` of them). The
  reward model learns from the world's annotator-labelled pairs (``rm/world``'s data for this world: each
  pair labelled by one annotator of the biased pool, no gold). This is ``tether data filter --scorer
  '{kind: reward-model, ...}' --drop none --below X`` with X at that quantile;
- **oracle**: exactly the corrupted demonstrations removed (the best a filter could do);
- **clean**: no corruption (the data without faults; as many rows as the unfiltered run).

Measured: every gold metric of each run, and paired differences against the unfiltered run (``tether eval
compare``: the same prompts, bootstrap intervals, Holm-adjusted); what the filter removed (how many of the
corrupted, how many good, per family).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.pipelines.weak_to_strong import with_world_seed

TARGETS = {"hazard": "harmless.harmful_compliance", "unknown": "honest.hallucination",
           "sycophancy": "honest.sycophancy"}


class CurationConfig(Config):
    """``tether experiment curation``."""

    world_seed: int = Field(0, description="which world (its data, base model and gold suite)")
    model: str = Field("world:base", description="the base model every arm is trained from")
    rows: int = Field(4000, ge=10, description="SFT demonstrations")
    share: float = Field(0.5, gt=0, le=1, description="share of the demonstrations in `families` made bad")
    families: list[str] = Field(list(TARGETS), min_length=1, description="families whose demonstrations are "
                                "corrupted: hazard, unknown, sycophancy, jailbreak, corrigibility, benign, task")
    drop_share: float = Field(0.15, gt=0, lt=1, description="the filter removes this share of the demonstrations, "
                              "those the reward model scores lowest")
    rm: str = Field("rm/world", description="the reward-model config of the filter (trained on this world's "
                    "annotator-labelled pairs)")
    rm_pairs: int = Field(4000, ge=10, description="annotator-labelled pairs the filter's reward model learns from")
    rm_steps: int = Field(200, ge=1, description="the filter's reward model's optimizer steps")
    sft: str = Field("sft/world", description="the SFT config every arm is trained with")
    sft_steps: int = Field(200, ge=1)
    eval: str = Field("eval/world-hhh", description="the gold evaluation")
    eval_n: int = Field(300, ge=1, description="train-split prompts per family in the evaluation (held out: a "
                        "third as many)")
    seed: int = 0
    out: str = Field("runs/curation", description="experiment directory")


def _show(cfg: CurationConfig, summary: dict[str, Any]) -> list[str]:
    from tether.pipelines.stages import shown_rate as pct

    lines = []
    for metric in summary["targets"]:
        row = [f"{arm} {pct(summary['arms'][arm][metric])}" for arm in summary["arms"]]
        lines.append(f"{metric}: " + ", ".join(row))
    f = summary["filter"]
    lines.append(f"filter removed {f['removed']} rows: {f['removed_corrupted']} of {f['corrupted']} corrupted, "
                 f"{f['removed'] - f['removed_corrupted']} good")
    lines.append(f"table: {cfg.out}/curation.json")
    return lines


@recipe("curation", group="experiment", config=CurationConfig,
        summary="Data curation on gold: SFT data with known bad demonstrations, unfiltered, filtered by a reward "
        "model, filtered by an oracle and clean; gold metrics and paired differences.",
        example="tether experiment curation --set world_seed=1 --out runs/curation-1",
        produces={"curation": output("curation.json")}, show=_show)
def run(cfg: CurationConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``curation.json``."""
    run_dir = RunDir(cfg.out, command="experiment curation", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def lowest(scores: list[float], share: float) -> set[int]:
    """The indices of the ``share`` lowest scores (ties: the earlier row goes first)."""
    count = round(share * len(scores))
    return set(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:count])


def _experiment(cfg: CurationConfig, out: Path) -> dict[str, Any]:
    from tether.core.config import load_config
    from tether.core.runs import run_stage
    from tether.data.io import write_jsonl
    from tether.evals.compare import compare
    from tether.pipelines.stages import evaluated, sft_on_rows
    from tether.scoring.scorers import Sample, scorer_config
    from tether.train.rm import RMConfig
    from tether.train.rm import run as train_rm
    from tether.world.datasets import corrupted_sft_rows, preference_rows, sft_rows
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig(seed=cfg.world_seed))
    base = with_world_seed(cfg.model, cfg.world_seed)
    rows = corrupted_sft_rows(world, cfg.rows, share=cfg.share, families=cfg.families, seed=cfg.seed)
    corrupted = {i for i, r in enumerate(rows) if r["corrupted"]}

    # The filter: a reward model on annotator-labelled pairs, scoring every demonstration.
    pairs = out / "rm-pairs.jsonl"
    write_jsonl(pairs, preference_rows(world, cfg.rm_pairs, seed=cfg.seed), only_if_changed=True)
    rm_dir = out / "rm"
    run_stage(load_config(RMConfig, cfg.rm, [f"model.path={base}", f"data.train={pairs}", "data.eval=null",
                                             f"loop.max_steps={cfg.rm_steps}", f"seed={cfg.seed}", f"out={rm_dir}"]),
              train_rm)
    # The same scorer tether data filter uses: the ensemble's mean score of each reply after its prompt.
    scorer = scorer_config({"kind": "reward-model", "path": [str(rm_dir)]}).build()
    scores = [float(x.value) for x in scorer.score([Sample(str(i), r["messages"][:-1], r["messages"][-1]["content"])
                                                    for i, r in enumerate(rows)]) if x.value is not None]
    dropped = lowest(scores, cfg.drop_share)

    def training(keep: set[int] | None, source: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Only the messages go to training: the corrupted column is for measuring.
        return [{"messages": r["messages"]} for i, r in enumerate(source) if keep is None or i in keep]

    everything = set(range(len(rows)))
    arms = {"unfiltered": training(None, rows), "filtered": training(everything - dropped, rows),
            "oracle": training(everything - corrupted, rows),
            "clean": training(None, sft_rows(world, cfg.rows, seed=cfg.seed))}
    evals = {}
    for name, data in arms.items():
        model_dir = sft_on_rows(cfg.sft, base, data, out / name, steps=cfg.sft_steps, seed=cfg.seed)
        evaluated(cfg.eval, [f"model.path={model_dir}", f"suite.world.seed={cfg.world_seed}", f"suite.n={cfg.eval_n}",
                             f"suite.heldout_n={max(1, cfg.eval_n // 3)}"], out / f"eval-{name}")
        evals[name] = out / f"eval-{name}"
    compared = compare([evals[name] for name in arms], labels=list(arms))
    (out / "compare.json").write_text(json.dumps(compared, indent=2) + "\n")

    targets = [TARGETS[f] for f in cfg.families if f in TARGETS]
    by_family: dict[str, dict[str, int]] = {}
    for i, r in enumerate(rows):
        entry = by_family.setdefault(r["family"], {"rows": 0, "corrupted": 0, "removed": 0, "removed_corrupted": 0})
        entry["rows"] += 1
        entry["corrupted"] += i in corrupted
        entry["removed"] += i in dropped
        entry["removed_corrupted"] += i in dropped and i in corrupted
    summary = {
        "world_seed": cfg.world_seed, "model": base, "rows": len(rows), "share": cfg.share,
        "families": cfg.families, "targets": targets,
        "filter": {"drop_share": cfg.drop_share, "removed": len(dropped), "corrupted": len(corrupted),
                   "removed_corrupted": len(dropped & corrupted),
                   "precision": round(len(dropped & corrupted) / max(1, len(dropped)), 4),
                   "recall": round(len(dropped & corrupted) / max(1, len(corrupted)), 4), "by_family": by_family},
        "arms": {run["label"]: run["metrics"] for run in compared["runs"]},
        "versus_unfiltered": {run["label"]: run["tests"] for run in compared["runs"][1:]},
    }
    (out / "curation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
