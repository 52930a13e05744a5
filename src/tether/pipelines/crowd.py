"""How a crowd's labels add up, measured against gold: the world's annotator pool labels the same pairs.

The experiment (``tether experiment crowd``): the world's simulated annotators (an expert, and three
with the biases real raters show: agreeing, long and flattering replies preferred, each with their own
noise) each label every pair of responses (or ``per_pair`` of them at random); then

- agreement: Krippendorff's alpha (nominal) of the crowd with a bootstrap interval, and each annotator's
  Cohen's kappa against the others' majority (what a studio shows without gold);
- aggregation: majority vote and Dawid–Skene, each label per pair compared with the gold preference
  (pairs with a gold tie left out), beside every single annotator;
- what Dawid–Skene believes of each annotator (its accuracy estimate) beside the annotator's real
  agreement with gold.

Bradley–Terry is not among the methods here: each pair's two responses are compared only with each other,
so a strength per response just restates the pair's vote, and an annotator's reliability cannot be told
apart from a narrower strength gap (it is identifiable only where options recur across comparisons, as
in rankings of k responses; :func:`tether.data.aggregate.bradley_terry` is for those).

Nothing is trained: this is the labels' side of the question. Whether an aggregated label makes a better
reward model is a training run on the exported rows (TRL preference rows): ``OUT/aggregated.jsonl``
(Dawid–Skene), ``OUT/majority.jsonl`` and ``OUT/raw.jsonl`` (every label a row), each given to
``tether train rm --set data.train=FILE``.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.core.agreement import bootstrap, krippendorff_alpha, per_annotator
from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.stats import wilson_interval
from tether.data.aggregate import by_group, dawid_skene, majority
from tether.data.io import write_jsonl


class CrowdConfig(Config):
    """``tether experiment crowd``."""

    world_seed: int = Field(0, description="which world")
    pairs: int = Field(600, ge=10, description="pairs of responses labelled")
    per_pair: int | None = Field(None, ge=1, description="annotators per pair, drawn at random (default: all)")
    resamples: int = Field(500, ge=10, description="bootstrap resamples for alpha's interval")
    seed: int = 0
    out: str = Field("runs/crowd", description="experiment directory")


def _show(cfg: CrowdConfig, summary: dict[str, Any]) -> list[str]:
    alpha = summary["alpha"]
    lines = [f"Krippendorff's alpha (nominal): {alpha['value']:.3f} [{alpha['ci_low']:.3f}-{alpha['ci_high']:.3f}]"
             f" over {alpha['n']} pairs"]
    for name, rate in summary["agreement_with_gold"].items():
        lines.append(f"  {name:24} {100 * rate['value']:.1f}% [{100 * rate['ci_low']:.1f}-{100 * rate['ci_high']:.1f}]"
                     f" of {rate['n']} pairs agree with gold")
    groups = summary["groups"]
    sides = groups["on_disputed_pairs_gold_sides_with"]
    lines.append(f"  whose preferences: on the {groups['disputed_pairs']} pairs where the groups decide differently, "
                 "gold sides with " + ", ".join(f"{g} {100 * r['value']:.1f}%" for g, r in sides.items()))
    lines.append(f"table: {cfg.out}/crowd.json")
    return lines


@recipe("crowd", group="experiment", config=CrowdConfig,
        summary="The world's annotator pool labels the same pairs: agreement (Krippendorff's alpha, per-annotator "
        "kappa) and aggregation (majority, Dawid-Skene) against gold.",
        example="tether experiment crowd --set world_seed=1 --out runs/crowd-1",
        produces={"crowd": output("crowd.json"), "aggregated": output("aggregated.jsonl"),
                  "majority": output("majority.jsonl"), "raw": output("raw.jsonl")}, show=_show)
def run(cfg: CrowdConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``crowd.json``."""
    run_dir = RunDir(cfg.out, command="experiment crowd", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def _experiment(cfg: CrowdConfig, out: Path) -> dict[str, Any]:
    from tether.world.annotators import DEFAULT_POOL
    from tether.world.datasets import crowd_rows
    from tether.world.spec import WorldConfig, build_world

    rows = crowd_rows(build_world(WorldConfig(seed=cfg.world_seed)), cfg.pairs, seed=cfg.seed, per_pair=cfg.per_pair)
    annotations = [(r["pair"], r["annotator"], r["first_wins"]) for r in rows]
    gold = {r["pair"]: r["gold"] for r in rows if r["gold"] != 0.5}
    pairs = {r["pair"]: r for r in rows}

    decided: dict[str, dict[Any, Any]] = {"majority": majority(annotations, seed=cfg.seed)}
    model = dawid_skene(annotations)
    decided["dawid-skene"] = model.labels
    for annotator in DEFAULT_POOL:
        decided[f"annotator:{annotator.name}"] = {p: w for p, a, w in annotations if a == annotator.name}

    def with_gold(labels: dict[Any, Any]) -> dict[str, Any]:
        scored = [p for p in labels if p in gold]
        return wilson_interval(sum(labels[p] == (gold[p] == 1.0) for p in scored), len(scored)).as_dict()

    agreement = {name: with_gold(labels) for name, labels in decided.items()}
    alpha = bootstrap(krippendorff_alpha, annotations, resamples=cfg.resamples, seed=cfg.seed)
    kappas = per_annotator(annotations, seed=cfg.seed)
    summary: dict[str, Any] = {
        "world_seed": cfg.world_seed, "pairs": len(pairs), "labels": len(annotations),
        "gold_ties": len(pairs) - len(gold), "alpha": alpha.__dict__, "agreement_with_gold": agreement,
        "annotators": {a.name: {"kappa_vs_others": kappas[a.name],
                                "dawid_skene_accuracy": round(model.accuracy(a.name), 4),
                                "gold_agreement": agreement[f"annotator:{a.name}"]["value"]} for a in DEFAULT_POOL},
        "dawid_skene_iterations": model.iterations}
    best_single = max((k for k in agreement if k.startswith("annotator:")), key=lambda k: agreement[k]["value"])
    summary["best_single_annotator"] = best_single
    summary["groups"] = _whose(annotations, gold, cfg.seed)
    def preference(pair: Any, first_wins: Any, by: str) -> dict[str, Any]:
        row = pairs[pair]
        chosen, rejected = (row["first"], row["second"]) if first_wins else (row["second"], row["first"])
        return {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "family": row["family"],
                "aggregated_by": by}

    # The same pairs three ways, for reward models trained on each: Dawid-Skene's label (with its posterior),
    # the majority's, and every raw label as a row of its own (what training on unaggregated labels sees).
    write_jsonl(out / "aggregated.jsonl", [preference(p, w, "dawid-skene") | {
        "posterior": round(model.posteriors[p][w], 4)} for p, w in model.labels.items()])
    write_jsonl(out / "majority.jsonl", [preference(p, w, "majority") for p, w in decided["majority"].items()])
    write_jsonl(out / "raw.jsonl", [preference(p, w, f"annotator:{a}") for p, a, w in annotations])
    (out / "crowd.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _whose(annotations: list[tuple[Any, Any, Any]], gold: dict[Any, float], seed: int) -> dict[str, Any]:
    """Whose preferences a label is: the pool split into annotators with no bias and those with a bias (each
    group's majority), how often each group's decision agrees with gold, and on the pairs where the groups
    decide differently, which of them gold sides with."""
    from tether.world.annotators import DEFAULT_POOL

    groups: dict[Hashable, Hashable] = {
        a.name: "biased" if a.agreeableness_bias or a.length_bias or a.flattery_bias else "unbiased"
        for a in DEFAULT_POOL}
    decided, disputed = by_group(annotations, groups, lambda rows: majority(rows, seed=seed))

    def rate(labels: dict[Any, Any], pairs: list[Any]) -> dict[str, Any]:
        scored = [p for p in pairs if p in gold]
        return wilson_interval(sum(labels[p] == (gold[p] == 1.0) for p in scored), len(scored)).as_dict()

    return {"members": {str(g): sorted(str(a) for a, h in groups.items() if h == g)
                        for g in sorted(set(groups.values()), key=str)},
            "agreement_with_gold": {str(g): rate(labels, list(labels)) for g, labels in decided.items()},
            "disputed_pairs": len(disputed),
            "on_disputed_pairs_gold_sides_with": {str(g): rate(labels, list(disputed))
                                                  for g, labels in sorted(decided.items(), key=lambda kv: str(kv[0]))}}
