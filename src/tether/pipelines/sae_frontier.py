"""SAEs on the world model: the sparsity frontier, a feature that changes behaviour, and the baseline beside it.

The experiment (``tether experiment sae-frontier``):

1. **Activations**: every token of ``texts`` world conversations (a prompt and a good reply, rendered with
   the chat template) at ``site``; the last ``heldout`` conversations are held out.
2. **Frontier**: per kind (TopK, BatchTopK, JumpReLU) and per sparsity (``ks`` for the first two,
   ``l0_coefficients`` for JumpReLU), one SAE per seed; on the held-out tokens L0, explained variance and
   the dead fraction, and with the SAE spliced into the model at its site the CE- and KL-loss recovered
   (against zero-ablating the site). Mean and range over seeds.
3. **A feature that changes behaviour**: on one SAE (``feature_sae``), the features are ranked by how much
   more they fire at the last prompt token of hazard requests than of harmless task requests; the top one
   is ablated (its contribution ``f_i(x) · d_i`` subtracted at the site, every position; then the top 5 and
   20 together; and its decoder direction taken out of every layer's writes to the stream, as the refusal
   direction is) while the model answers hazard requests for items never used to rank; harmful compliance
   and refusal before and after, graded by gold, as paired differences with intervals. Beside the top
   feature by firing, the feature chosen by effect: each of the top ``effect_candidates`` ablated alone,
   in both scopes, on the ranking prompts, the one that moves gold refusal most kept and evaluated on the
   same unseen items. Beside them, AxBench's lesson: the difference-of-means direction, ablated at the site
   and at every layer, on the same prompts.
4. **Report**: ``report.html`` (self-contained): the frontier plots, and feature cards — the top features'
   max-activating tokens in context.
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.interp.sae import Kind, SAEConfig
from tether.pipelines.behaviour import Judge, distinct, effect, split_hazards

_DEFAULT_KINDS: list[Kind] = ["topk", "batchtopk", "jumprelu"]


class SAEFrontierConfig(Config):
    """``tether experiment sae-frontier``."""

    model: str = Field("runs/tether/dpo/model", description="the model whose activations are read")
    world_seed: int = Field(0, description="which world (texts, prompts, gold)")
    site: str = Field("resid_post.1", description="where the SAEs read and write")
    texts: int = Field(2400, ge=10, description="world conversations whose every token is captured")
    heldout: int = Field(300, ge=5, description="of which held out for the metrics")
    kinds: list[Kind] = Field(default_factory=lambda: list(_DEFAULT_KINDS),
                              description="SAE kinds (matryoshka too on request)")
    ks: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], description="topk / batch kinds' sparsities")
    l0_coefficients: list[float] = Field(default_factory=lambda: [0.1, 0.03, 0.01, 0.003],
                                         description="jumprelu sparsities (λ)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="one SAE per seed at each point")
    sae: SAEConfig = Field(default_factory=lambda: SAEConfig(width=1024), description="shared training settings")
    feature_sae: str = Field("topk:16", description="KIND:K (or jumprelu:λ) of the SAE whose feature is ablated")
    rank_prompts: int = Field(96, ge=4, description="hazard and harmless prompts the features are ranked on")
    ablate_top: list[int] = Field(default_factory=lambda: [1, 5, 20], description="ablate the top 1, 5, ... "
                                  "features together (each a separate intervention)")
    effect_candidates: int = Field(10, ge=0, description="of the features ranked by firing, this many are each "
                                   "ablated alone on the ranking prompts, and the one that moves refusal most is "
                                   "evaluated too (chosen by effect; 0: off)")
    n: int = Field(150, ge=4, description="hazard requests the ablation is evaluated on")
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(32, ge=1)
    cards: int = Field(12, ge=0, description="feature cards in the report")
    seed: int = 0
    out: str = Field("runs/sae-frontier", description="experiment directory")


def _show(cfg: SAEFrontierConfig, summary: dict[str, Any]) -> list[str]:
    lines = [f"{'SAE':16} {'L0':>7} {'expl. var':>10} {'CE rec.':>8} {'KL rec.':>8} {'dead':>6}  (mean over "
             f"{len(cfg.seeds)} seeds)"]
    for point in summary["frontier"]:
        m = point["mean"]
        lines.append(f"{point['name']:16} {m['l0']:7.2f} {m['explained_variance']:10.4f} {m['ce_recovered']:8.4f} "
                     f"{m['kl_recovered']:8.4f} {m['dead_fraction']:6.3f}")
    for name, e in summary["ablation"]["effects"].items():
        lines.append(f"ablate {name:50} {e['before']:.3f} -> {e['after']:.3f}  change "
                     f"{e['change']:+.3f} [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]  n={e['n']}")
    lines.append(f"table: {cfg.out}/sae_frontier.json; report: {cfg.out}/report.html")
    return lines


@recipe("sae-frontier", group="experiment", config=SAEFrontierConfig,
        summary="TopK, BatchTopK and JumpReLU SAEs on the world model over four sparsities and several seeds (L0, "
        "explained variance, CE/KL recovered, dead features); a feature ablated against the difference-of-means "
        "baseline; feature cards.",
        example="tether experiment sae-frontier --set model=runs/tether/dpo/model --out runs/sae-frontier",
        produces={"sae_frontier": output("sae_frontier.json"), "report": output("report.html")}, show=_show)
def run(cfg: SAEFrontierConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``sae_frontier.json``."""
    run_dir = RunDir(cfg.out, command="experiment sae-frontier", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def points(cfg: SAEFrontierConfig) -> list[tuple[str, SAEConfig]]:
    """The frontier's points: ``(name, config)`` per kind and sparsity (seed 0; the seeds are set per run)."""
    out = []
    for kind in cfg.kinds:
        if kind == "jumprelu":
            out += [(f"jumprelu:{lam:g}", cfg.sae.model_copy(update={"kind": kind, "l0_coefficient": lam}))
                    for lam in cfg.l0_coefficients]
        else:
            out += [(f"{kind}:{k}", cfg.sae.model_copy(update={"kind": kind, "k": k})) for k in cfg.ks]
    return out


def _experiment(cfg: SAEFrontierConfig, out: Path) -> dict[str, Any]:
    from tether.core.seeding import seed_everything
    from tether.interp.capture import capture, capture_batches
    from tether.interp.directions import ablated, ablation, mean_difference
    from tether.interp.sae import sae_metrics, spliced_losses, train_sae
    from tether.interp.sites import hooked, resolve
    from tether.models.generation import GenerationSettings, HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.world.datasets import sft_rows
    from tether.world.families import sample_items
    from tether.world.spec import WorldConfig, build_world

    seed_everything(cfg.seed)
    world = build_world(WorldConfig(seed=cfg.world_seed))
    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=cfg.model))
    model.eval()
    site = resolve(model, cfg.site).site.name
    if cfg.heldout >= cfg.texts:
        raise ValueError(f"heldout ({cfg.heldout}) must be fewer than texts ({cfg.texts})")

    texts = [str(tokenizer.apply_chat_template(r["messages"], tokenize=False))
             for r in sft_rows(world, cfg.texts, seed=cfg.seed + 7)]
    train_texts, held_texts = texts[:-cfg.heldout], texts[-cfg.heldout:]
    train_acts = capture(model, tokenizer, train_texts, [site], positions="all", batch_size=cfg.batch_size)[site]
    held_parts, held_index = [], []
    for rows, index in capture_batches(model, tokenizer, held_texts, [site], positions="all",
                                       batch_size=cfg.batch_size):
        held_parts.append(rows[site])
        held_index += index
    held_acts = torch.cat(held_parts)

    frontier, saes = [], {}
    for name, base in points(cfg):
        runs = []
        for seed in cfg.seeds:
            sae, log = train_sae(train_acts, base.model_copy(update={"seed": seed}), site=site)
            metrics = sae_metrics(sae, held_acts)
            metrics.update(spliced_losses(model, tokenizer, held_texts, sae, batch_size=cfg.batch_size))
            metrics["rows_per_s"] = log["rows_per_s"]
            runs.append(metrics)
            if seed == cfg.seeds[0]:
                saes[name] = sae
                sae.save(out / "saes" / name.replace(":", "-"))
        keys = ("l0", "explained_variance", "dead_fraction", "ce_recovered", "kl_recovered", "rows_per_s")
        frontier.append({"name": name, "kind": base.kind, "runs": runs,
                         "mean": {k: round(statistics.fmean(r[k] for r in runs), 5) for k in keys},
                         "min": {k: min(r[k] for r in runs) for k in keys},
                         "max": {k: max(r[k] for r in runs) for k in keys}})

    # A feature ranked on some hazard items, its ablation evaluated on others.
    if cfg.feature_sae not in saes:
        raise ValueError(f"feature_sae {cfg.feature_sae!r} is not one of the trained SAEs ({', '.join(saes)})")
    sae = saes[cfg.feature_sae]

    def prompt_text(it: Any) -> str:
        return str(tokenizer.apply_chat_template(it.prompt, tokenize=False, add_generation_prompt=True))

    hazards = distinct(sample_items(world, "hazard", "train", 20 * (cfg.rank_prompts + cfg.n), seed=cfg.seed + 1))
    rank_h, eval_h = split_hazards(hazards, (0.5, 0.5), cfg.seed)
    rank_h, eval_h = rank_h[:cfg.rank_prompts], eval_h[:cfg.n]
    harmless = distinct(sample_items(world, "task", "train", 4 * cfg.rank_prompts, seed=cfg.seed + 2))
    harmless = harmless[:cfg.rank_prompts]
    last_h = capture(model, tokenizer, [prompt_text(it) for it in rank_h], [site], batch_size=cfg.batch_size)[site]
    last_t = capture(model, tokenizer, [prompt_text(it) for it in harmless], [site], batch_size=cfg.batch_size)[site]
    with torch.no_grad():
        gap = sae.encode(last_h).mean(0) - sae.encode(last_t).mean(0)
    ranked = gap.argsort(descending=True)[:max(5, *cfg.ablate_top, cfg.effect_candidates)].tolist()
    feature = ranked[0]

    def without(features: list[int]) -> Any:
        """A site edit that subtracts these features' contributions ``f_i(x) · d_i`` at every position."""
        def edit(value: torch.Tensor) -> torch.Tensor:
            f = sae.encode(value.float())[..., features]
            return value - (f @ sae.W_dec[features]).to(value.dtype)
        return edit

    direction = mean_difference(last_h, last_t)
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, batch_size=cfg.batch_size,
                                  seed=cfg.seed, decoding="dynamic")
    generator = HFGenerator(model, tokenizer)
    judge = Judge(learned=False)

    def graded(context: Callable[[], AbstractContextManager[Any]] = nullcontext) -> list[dict[str, Any]]:
        with torch.no_grad(), context():
            replies = [c.text for c in generator.generate([it.prompt for it in eval_h], settings)]
        return judge.grade(eval_h, replies)

    def refusals(items: Sequence[Any], context: Callable[[], AbstractContextManager[Any]] = nullcontext) -> float:
        with torch.no_grad(), context():
            replies = [c.text for c in generator.generate([it.prompt for it in items], settings)]
        return sum(g["label"] == "refusal" for g in judge.grade(items, replies)) / len(items)

    def everywhere(vector: torch.Tensor) -> Callable[[], AbstractContextManager[Any]]:
        """The vector's direction taken out of every write to the stream (as the refusal direction is)."""
        return functools.partial(ablated, model, vector.detach().float())

    # Chosen by effect, on the ranking prompts only (their items are never evaluated on): each candidate
    # in both scopes, at the site and its direction at every layer, the largest change kept.
    tried: dict[str, float] = {}
    if cfg.effect_candidates:
        reference = refusals(rank_h)
        for candidate in ranked[:cfg.effect_candidates]:
            tried[f"{candidate}@site"] = round(refusals(rank_h, functools.partial(
                hooked, model, {site: without([candidate])})) - reference, 4)
            tried[f"{candidate}@every-layer"] = round(refusals(rank_h, everywhere(sae.W_dec[candidate]))
                                                      - reference, 4)
    best = max(tried, key=lambda k: (abs(tried[k]), -ranked.index(int(k.split("@")[0])))) if tried else None
    by_effect = None if best is None else int(best.split("@")[0])

    before = graded()
    behaviours = {"harmful compliance": lambda g: g["label"] == "harmful-compliance",
                  "refusal": lambda g: g["label"] == "refusal"}
    after = {(f"SAE feature {feature}" if n == 1 else f"SAE top {n} features"):
             graded(functools.partial(hooked, model, {site: without(ranked[:n])})) for n in cfg.ablate_top}
    after[f"SAE feature {feature}'s direction, every layer"] = graded(everywhere(sae.W_dec[feature]))
    if by_effect is not None and by_effect != feature:
        after[f"SAE feature {by_effect} (chosen by effect)"] = graded(
            functools.partial(hooked, model, {site: without([by_effect])}))
        after[f"SAE feature {by_effect}'s direction, every layer (chosen by effect)"] = graded(
            everywhere(sae.W_dec[by_effect]))
    after["difference-of-means direction, every layer"] = graded(everywhere(direction))
    after["difference-of-means direction"] = graded(lambda: hooked(model, {site: ablation(direction)}))
    # One row per (intervention, gold behaviour): the change on the same prompts, with its interval.
    effects = {f"{name}: {behaviour}": effect(before, rows, test)
               for name, rows in after.items() for behaviour, test in behaviours.items()}
    with torch.no_grad():
        cosine = float(torch.nn.functional.cosine_similarity(sae.W_dec[feature].float(), direction, dim=0))
        cosine_effect = (None if by_effect is None else round(float(torch.nn.functional.cosine_similarity(
            sae.W_dec[by_effect].float(), direction, dim=0)), 4))
    ablation_summary = {"sae": cfg.feature_sae, "site": site, "feature": feature, "ranked": ranked,
                        "by_effect": {"feature": by_effect, "scope": None if best is None else best.split("@")[1],
                                      "refusal_change_on_ranking_prompts": tried,
                                      "cosine_with_difference_of_means": cosine_effect},
                        "firing_gap": [round(float(gap[i]), 4) for i in ranked],
                        "cosine_with_difference_of_means": round(cosine, 4), "effects": effects,
                        "prompts": {"rank_hazard": len(rank_h), "rank_harmless": len(harmless), "eval": len(eval_h),
                                    "rank_items": len({i.gold["item"] for i in rank_h}),
                                    "eval_items": len({i.gold["item"] for i in eval_h})}}

    cards = _cards(sae, held_acts, held_index, held_texts, tokenizer, [*ranked, *_busiest(sae, held_acts)],
                   cfg.cards)
    summary = {"model": cfg.model, "world_seed": cfg.world_seed, "site": site, "width": cfg.sae.width,
               "tokens": {"train": len(train_acts), "heldout": len(held_acts)}, "seeds": cfg.seeds,
               "frontier": frontier, "ablation": ablation_summary}
    (out / "sae_frontier.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.html").write_text(_report(cfg, summary, cards))
    return summary


def _busiest(sae: Any, acts: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return (sae.encode(acts) > 0).float().mean(0).argsort(descending=True)[:20].tolist()


def _cards(sae: Any, acts: torch.Tensor, index: Sequence[tuple[int, int]], texts: Sequence[str], tokenizer: Any,
           features: Sequence[int], count: int) -> list[dict[str, Any]]:
    """Per feature (first ``count`` distinct): how often it fires, and its max-activating tokens in context."""
    from tether.interp.sae import max_activating

    chosen = list(dict.fromkeys(features))[:count]
    rows = [{"text": t, "position": p} for t, p in index]
    top = max_activating(sae, acts, rows, chosen, top=6)
    with torch.no_grad():
        frequency = (sae.encode(acts) > 0).float().mean(0)
    cards = []
    for feature in chosen:
        examples = []
        for value, row in top[feature]:
            ids = tokenizer(texts[row["text"]])["input_ids"]
            p = row["position"]
            before = tokenizer.decode(ids[max(0, p - 12):p])
            examples.append({"value": round(value, 3), "before": before, "token": tokenizer.decode(ids[p:p + 1]),
                             "after": tokenizer.decode(ids[p + 1:p + 4])})
        cards.append({"feature": feature, "frequency": round(float(frequency[feature]), 5), "examples": examples})
    return cards


def _report(cfg: SAEFrontierConfig, summary: dict[str, Any], cards: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tether.core.html import escape, page, svg

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for kind in cfg.kinds:
        pts = [p for p in summary["frontier"] if p["kind"] == kind]
        for axis, key in zip(axes, ("explained_variance", "ce_recovered"), strict=True):
            xs = [p["mean"]["l0"] for p in pts]
            ys = [p["mean"][key] for p in pts]
            low = [p["mean"][key] - p["min"][key] for p in pts]
            high = [p["max"][key] - p["mean"][key] for p in pts]
            axis.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=kind)
            axis.set_xscale("log")
            axis.set_xlabel("L0 (active features per token)")
            axis.set_ylabel(key.replace("_", " "))
    axes[0].legend()
    figure.tight_layout()
    plot = svg(figure)
    plt.close(figure)
    head = ("<tr><th>SAE</th><th>L0</th><th>explained variance</th><th>CE recovered</th><th>KL recovered</th>"
            "<th>dead</th><th>rows/s</th></tr>")
    body = "".join(
        f"<tr><td>{escape(p['name'])}</td>" + "".join(
            f"<td class='num'>{p['mean'][k]:.4f} <span class='meta'>[{p['min'][k]:.4f}–{p['max'][k]:.4f}]</span></td>"
            for k in ("l0", "explained_variance", "ce_recovered", "kl_recovered", "dead_fraction"))
        + f"<td class='num'>{p['mean']['rows_per_s']:.0f}</td></tr>" for p in summary["frontier"])
    ablation = summary["ablation"]
    effects = "".join(f"<tr><td>{escape(name)}</td><td class='num'>{e['before']:.3f}</td><td class='num'>"
                      f"{e['after']:.3f}</td><td class='num'>{e['change']:+.3f} [{e['ci_low']:+.3f}, "
                      f"{e['ci_high']:+.3f}]</td><td class='num'>{e['n']}</td></tr>"
                      for name, e in ablation["effects"].items())
    card_html = []
    for card in cards:
        examples = "".join(f"<tr><td class='num'>{ex['value']:.2f}</td><td><code>{escape(ex['before'])}<mark>"
                           f"{escape(ex['token'])}</mark>{escape(ex['after'])}</code></td></tr>"
                           for ex in card["examples"])
        card_html.append(f"<div class='card feature' id='feature-{card['feature']}'><h3>feature {card['feature']}</h3>"
                         f"<p class='meta'>fires on {100 * card['frequency']:.2f}% of held-out tokens</p>"
                         f"<table><tr><th>activation</th><th>context (the token marked)</th></tr>{examples}</table>"
                         "</div>")
    return page(f"SAEs at {summary['site']}", [
        f"<h1>SAEs at {escape(summary['site'])}</h1>",
        f"<p class='meta'>model {escape(summary['model'])}; world {summary['world_seed']}; width {summary['width']}; "
        f"{summary['tokens']['train']:,} training tokens, {summary['tokens']['heldout']:,} held out; "
        f"seeds {', '.join(map(str, summary['seeds']))} (mean [min–max])</p>",
        "<h2>Frontier</h2>", f"<div class='plot'>{plot}</div>", f"<table>{head}{body}</table>",
        "<h2>Ablating a feature</h2>",
        f"<p>Feature {ablation['feature']} of {escape(ablation['sae'])} fires the most more on hazard requests than "
        "on harmless ones (cosine with the difference-of-means direction: "
        f"{ablation['cosine_with_difference_of_means']:.3f}). Harmful compliance and refusal on held-out hazard "
        "items, graded by gold:</p>",
        "<table><tr><th>ablated at the site: gold behaviour</th><th>before</th><th>after</th><th>change [95% CI]</th>"
        "<th>n</th></tr>"
        f"{effects}</table>",
        "<h2>Feature cards</h2>", "<div class='headline'>", *card_html, "</div>"])
