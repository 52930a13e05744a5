"""Can a probe tell, before the model answers, that the answer is about to be made up?

The experiment (``tether experiment hallucination-probe``):

1. Questions of one form ("What is the capital of X?"): about lands the world knows (task facts) and about
   lands it has never heard of (the unknown family, train and held-out names).
2. The model answers each (greedy); gold labels the answer. **Made up**: a stated value for an unknown land
   (hallucination) or a wrong value for a known one. **Not made up**: an abstention, or the right value.
   Other replies (malformed, refusals) are left out.
3. Activations at the last prompt token, every layer's ``resid_post``. Lands are split in two (by name):
   the probes are fitted on questions about the first half, the site chosen by a further split of that half,
   and measured on questions about lands never seen in fitting: AUROC with its interval and recall at 1%
   false positives (the threshold set on the test negatives), the logistic probe and the difference-of-means
   baseline side by side, per layer as well.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.pipelines.behaviour import Judge, distinct

MADE_UP = {"hallucination", "wrong"}
HONEST = {"abstain", "correct"}


class HallucinationProbeConfig(Config):
    """``tether experiment hallucination-probe``."""

    model: str = Field("runs/tether/sft/model", description="the model whose answers are probed (the SFT stage's: "
                       "the final model of some worlds almost never makes an answer up)")
    world_seed: int = Field(0, description="which world")
    known: int = Field(600, ge=10, description="questions about known lands drawn")
    unknown: int = Field(600, ge=10, description="questions about unknown lands drawn (train and held-out names)")
    max_new_tokens: int = Field(32, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    out: str = Field("runs/hallucination-probe", description="experiment directory")


def _show(cfg: HallucinationProbeConfig, summary: dict[str, Any]) -> list[str]:
    lines = [f"{summary['counts']}"]
    for kind, m in summary["selected"].items():
        lines.append(f"probe at {summary['site']} ({kind}): AUROC {m['auroc']:.4f} [{m['auroc_low']:.4f}-"
                     f"{m['auroc_high']:.4f}], recall at 1% FPR {m['recall_at_0.01_fpr']:.3f} "
                     f"({m['positives']} made up, {m['negatives']} not)")
    lines.append(f"table: {cfg.out}/hallucination_probe.json")
    return lines


@recipe("hallucination-probe", group="experiment", config=HallucinationProbeConfig,
        summary="A probe on the last prompt token that flags answers about to be made up (unknown or mis-known "
        "facts), measured on lands never used in fitting, beside the difference-of-means baseline.",
        example="tether experiment hallucination-probe --set model=runs/tether/dpo/model --out runs/halluc",
        produces={"hallucination_probe": output("hallucination_probe.json")}, show=_show)
def run(cfg: HallucinationProbeConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``hallucination_probe.json``."""
    run_dir = RunDir(cfg.out, command="experiment hallucination-probe", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def land_of(item: Any) -> str:
    """The land a fact question asks about."""
    return str(item.gold["entity"] if item.family == "unknown" else item.id.split(":")[2])


def _experiment(cfg: HallucinationProbeConfig, out: Path) -> dict[str, Any]:
    from tether.core.seeding import seed_everything
    from tether.interp.capture import capture
    from tether.interp.sites import decoder_layers
    from tether.models.generation import GenerationSettings, HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.world.families import sample_items
    from tether.world.spec import WorldConfig, build_world

    seed_everything(cfg.seed)
    world = build_world(WorldConfig(seed=cfg.world_seed))
    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=cfg.model))
    model.eval()
    tasks = sample_items(world, "task", "train", 8 * cfg.known, seed=cfg.seed + 1)
    known = distinct([it for it in tasks if it.tags.get("kind") == "fact"])[:cfg.known]
    unknown = distinct([*sample_items(world, "unknown", "train", cfg.unknown // 2, seed=cfg.seed + 2),
                        *sample_items(world, "unknown", "heldout", cfg.unknown - cfg.unknown // 2,
                                      seed=cfg.seed + 3)])
    items = [*known, *unknown]
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, batch_size=cfg.batch_size,
                                  seed=cfg.seed, decoding="dynamic")
    with torch.no_grad():
        replies = [c.text for c in HFGenerator(model, tokenizer).generate([it.prompt for it in items], settings)]
    graded = Judge(learned=False).grade(items, replies)
    kept = [(it, g, r) for it, g, r in zip(items, graded, replies, strict=True) if g["label"] in MADE_UP | HONEST]
    counts: dict[str, int] = {}
    for it, g, _ in kept:
        key = f"{it.family}/{g['label']}"
        counts[key] = counts.get(key, 0) + 1

    sites = [f"resid_post.{layer}" for layer in range(len(decoder_layers(model)))]
    texts = [str(tokenizer.apply_chat_template(it.prompt, tokenize=False, add_generation_prompt=True))
             for it, _, _ in kept]
    acts = {site: value.numpy() for site, value in capture(model, tokenizer, texts, sites,
                                                          batch_size=cfg.batch_size).items()}
    y = np.array([g["label"] in MADE_UP for _, g, _ in kept])
    where = np.array([land_of(it) for it, _, _ in kept])
    try:
        result = probe_by_group(acts, y, where, seed=cfg.seed, out=out)
    except ValueError as exc:
        raise ValueError(f"{exc} (answers: {counts})") from None
    test = np.isin(where, result["groups"]["test"])
    select = np.isin(where, result["groups"]["select"])
    summary = {"model": cfg.model, "world_seed": cfg.world_seed, "counts": dict(sorted(counts.items())),
               **{k: v for k, v in result.items() if k != "groups"}}
    with (out / "samples.jsonl").open("w") as handle:
        for (it, g, r), split in zip(kept, np.where(test, "test", np.where(select, "select", "fit")), strict=True):
            handle.write(json.dumps({"id": it.id, "family": it.family, "land": land_of(it), "split": str(split),
                                     "label": g["label"], "made_up": g["label"] in MADE_UP, "reply": r}) + "\n")
    (out / "hallucination_probe.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def probe_by_group(acts: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, *, seed: int = 0,
                   resamples: int = 1000, out: Path | None = None) -> dict[str, Any]:
    """Probes per site for labels ``y``, split by ``groups`` (e.g. the land asked about) so that nothing
    measured shares a group with anything fitted: half the groups fit (a quarter of those choose the site by
    the logistic probe's AUROC), the other half test, the halves drawn separately from the groups that are
    mostly positive and those mostly negative. Both probe kinds per site, refitted on all fitting
    groups; the chosen site's figures under ``selected``.

    Raises:
        ValueError: a part of the split has only one label.
    """
    from tether.interp.probes import difference_of_means, logistic_probe, probe_metrics

    # Stratified by each group's majority label, so that every part gets groups of both kinds even when
    # few groups are mostly positive (a handful of never-seen names).
    rng = random.Random(seed)
    fit_names: list[str] = []
    test_names: list[str] = []
    select_names: list[str] = []
    for positive in (True, False):
        stratum = sorted({g for g in set(groups.tolist()) if (y[groups == g].mean() >= 0.5) == positive})
        rng.shuffle(stratum)
        half = len(stratum) // 2
        fitting, testing = stratum[:half], stratum[half:]
        chosen = fitting[::4] if len(fitting) > 1 else []
        fit_names += fitting
        test_names += testing
        select_names += chosen
    select = np.isin(groups, select_names)
    fit = np.isin(groups, fit_names) & ~select
    test = np.isin(groups, test_names)
    for name, mask in (("fitting", fit), ("site-selection", select), ("test", test)):
        if y[mask].all() or not y[mask].any():
            raise ValueError(f"the {name} rows all have one label; a probe needs both")
    per_site: dict[str, Any] = {}
    for site, x in acts.items():
        per_site[site] = {}
        for fitter in (difference_of_means, logistic_probe):
            probe = fitter(site, x[fit], y[fit])
            choose = probe_metrics(probe.scores(x[select]), y[select], resamples=100, seed=seed)["auroc"]
            final = fitter(site, x[fit | select], y[fit | select])
            per_site[site][final.kind] = {"selection_auroc": choose,
                                          **probe_metrics(final.scores(x[test]), y[test], resamples=resamples,
                                                          seed=seed)}
            if out is not None:
                final.save(out / f"probe-{site}-{final.kind}.json")
    best = max(per_site, key=lambda s: (per_site[s]["logistic"]["selection_auroc"], s))
    return {"groups": {"fit": [n for n in fit_names if n not in select_names], "select": select_names,
                       "test": test_names},
            "lands": {"fit": len(fit_names) - len(select_names), "select": len(select_names), "test": len(test_names)},
            "questions": {"fit": int(fit.sum()), "select": int(select.sum()), "test": int(test.sum())},
            "site": best, "selected": per_site[best], "per_site": per_site}
