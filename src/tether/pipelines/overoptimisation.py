"""Reward-model over-optimisation on the world (Gao et al. 2022), and what keeps gold from falling.

Stages (each in its own run directory; ``--resume`` skips the finished ones):

1. reward models on the world's *annotator* labels (biased towards agreement, length and
   flattery, and noisy): the proxy, and any other named ones (e.g. an ensemble of separately
   trained members) the variants use;
2. best-of-n against the proxy from the base policy: ``samples`` completions per prompt, each
   scored by the proxy and by the gold grader; for every n, the unbiased best-of-n estimate of
   both (:func:`tether.losses.rl.best_of_n_expectation`) at KL = log n − (n − 1)/n;
3. PPO against the proxy, once per variant (plain, with the watchdog, with an ensemble's
   conservative reward, with a larger KL penalty ...): per rollout the proxy, gold and KL the
   run logged; at the end the final policy's gold and proxy on held-out prompts, with 95%
   intervals over prompts;
4. ``overoptimisation.json`` and a plot (gold and proxy against √KL, the axis Gao et al. use).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from tether.core.config import Config, load_config
from tether.core.recipes import RECIPES, output, recipe
from tether.core.runs import RunDir, read_log, run_stage
from tether.core.stats import bootstrap_mean


class Variant(Config):
    """One PPO run against a learned reward."""

    name: str
    rm: str = Field("proxy", description="which of the experiment's reward models (a key of rms)")
    aggregate: Literal["mean", "min", "mean-minus-std"] = Field("mean", description="ensemble aggregation")
    k: float = Field(1.0, ge=0, description="mean-minus-std: stds subtracted")
    length_penalty: float = Field(0.0, ge=0, description="adds a length term: -coef x tokens / max_new_tokens")
    set: list[str] = Field(default_factory=list, description="overrides of the PPO config (watch.*, loss.*, ...)")


def _default_variants() -> list[Variant]:
    return [
        Variant(name="ppo"),
        Variant(name="ppo + watchdog (gold drop, rollback)",
                set=["watch.gold_drop=0.1", "watch.window=5", "watch.patience=3", "watch.action=rollback"]),
        Variant(name="ppo + KL budget 1.5 (stop)", set=["watch.kl_budget=1.5", "watch.window=5", "watch.patience=3",
                                                        "watch.action=stop"]),
        Variant(name="ppo + KL penalty 0.1", set=["loss.kl_coef=0.1"]),
        Variant(name="ppo + ensemble (mean - 2 std)", rm="ensemble", aggregate="mean-minus-std", k=2.0),
        Variant(name="ppo + length penalty", length_penalty=2.0),
    ]


class OveroptimisationConfig(Config):
    """``tether experiment overoptimisation``."""

    rm: str = Field("rm/world", description="reward-model config every reward model starts from")
    rms: dict[str, list[str]] = Field(
        default_factory=lambda: {"proxy": [], "ensemble": ["ensemble.heads=1", "ensemble.members=4"]},
        description="named reward models: overrides of the rm config")
    ppo: str = Field("ppo/world-proxy-rm", description="PPO config each variant starts from")
    variants: list[Variant] = Field(default_factory=_default_variants)
    bon_prompts: int = Field(200, ge=1, description="prompts for best-of-n")
    bon_samples: int = Field(64, ge=1, description="samples per prompt for best-of-n (the largest n)")
    eval_prompts: int = Field(400, ge=1, description="held-out prompts measuring each final policy")
    out: str = Field("runs/overoptimisation", description="experiment directory")
    seed: int = 0


def summary_lines(cfg: OveroptimisationConfig, results: dict[str, Any]) -> list[str]:
    """The base policy's and each variant's final gold and proxy, and where the results are."""
    rows = {"base": results["base"]} | {name: v["final"] for name, v in results["ppo"].items()}
    return [json.dumps(rows, indent=2),
            f"results: {cfg.out}/overoptimisation.json   plot: {cfg.out}/overoptimisation.png"]


@recipe("overoptimisation", group="experiment", config=OveroptimisationConfig,
        summary="Reward-model over-optimisation on the world: best-of-n and PPO against a proxy RM trained on biased "
        "annotators; gold and proxy against KL; the watchdog, ensembles and a larger KL penalty as mitigations.",
        example="tether experiment overoptimisation --out runs/overoptimisation",
        produces={"results": output("overoptimisation.json")}, show=summary_lines)
def run(cfg: OveroptimisationConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) every stage; write and return ``overoptimisation.json``."""
    run_dir = RunDir(cfg.out, command="experiment overoptimisation", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _run(cfg, rd.path))


def _run(cfg: OveroptimisationConfig, out: Path) -> dict[str, Any]:
    ppo = RECIPES.get("ppo")
    rm_dirs = {name: _reward_model(cfg, name, overrides) for name, overrides in cfg.rms.items()}
    base_cfg = load_config(ppo.config, cfg.ppo, [f"seed={cfg.seed}"])
    results: dict[str, Any] = {"config": cfg.model_dump(mode="json"),
                               "best_of_n": _best_of_n(cfg, base_cfg, rm_dirs["proxy"]), "ppo": {}}
    for variant in cfg.variants:
        run_dir = out / slug(variant.name)
        rewards = [{"kind": "reward-model", "path": [str(rm_dirs[variant.rm])], "aggregate": variant.aggregate,
                    "k": variant.k}]
        if variant.length_penalty:
            rewards.append({"kind": "length", "coef": variant.length_penalty})
        ppo_cfg = load_config(ppo.config, cfg.ppo, [f"rewards={json.dumps(rewards)}", f"seed={cfg.seed}",
                                                    *variant.set, f"out={run_dir}"])
        summary = run_stage(ppo_cfg, ppo.run)
        results["ppo"][variant.name] = {
            "run": str(run_dir), "curve": _curve(run_dir), "watch": summary.get("watch"),
            "final": _measure(cfg, ppo_cfg, run_dir / "model", rm_dirs["proxy"]),
        }
    results["base"] = _measure(cfg, base_cfg, None, rm_dirs["proxy"])
    (out / "overoptimisation.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out / "overoptimisation.png")
    return results


def slug(name: str) -> str:
    """A variant's run directory name: ``ppo + KL penalty 0.1`` -> ``ppo-kl-penalty-0-1``."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def _reward_model(cfg: OveroptimisationConfig, name: str, overrides: list[str]) -> Path:
    rm = RECIPES.get("rm")
    run_dir = Path(cfg.out) / f"rm-{name}"
    run_stage(load_config(rm.config, cfg.rm, [*overrides, f"seed={cfg.seed}", f"out={run_dir}"]), rm.run)
    return run_dir


def _prompts(seed: int, n: int) -> list[dict[str, Any]]:
    from tether.data.records import PromptRecord
    from tether.data.sources import load_records

    records = load_records("builtin:world-prompts", PromptRecord, seed=seed).records[:n]
    return [r.model_dump(mode="json") for r in records]


class _Sampled:
    """Completions of prompts (prompt-major) with their token ids, and the model that sampled them."""

    def __init__(self, model_dir: str, prompts: list[dict[str, Any]], per_prompt: int, settings: Any, seed: int):
        from tether.models.generation import HFGenerator
        from tether.models.loading import ModelConfig, load_model_and_tokenizer
        from tether.train.online import completion_seed

        self.model, self.tokenizer = load_model_and_tokenizer(ModelConfig(path=model_dir))
        generator = HFGenerator(self.model, self.tokenizer)
        texts = [p["prompt"] for p in prompts for _ in range(per_prompt)]
        seeds = [completion_seed(seed, 0, i, j) for i in range(len(prompts)) for j in range(per_prompt)]
        self.completions = generator.generate(texts, settings, seeds=seeds)
        self.prompt_ids = generator.encode(texts)
        self.outputs = [c.text for c in self.completions]
        self.counts = [len(c.token_ids) for c in self.completions]


def _scores(prompts: list[dict[str, Any]], per_prompt: int, outputs: list[str], counts: list[int],
            rm_dir: Path, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Proxy (reward-model mean) and gold reward of each completion.  -> (P, per_prompt) x 2"""
    from tether.models.reward import RewardEnsemble
    from tether.scoring.rewards import Rewards, reward_config

    texts = [p["prompt"] for p in prompts for _ in range(per_prompt)]
    metas = [p for p in prompts for _ in range(per_prompt)]
    proxy = RewardEnsemble.from_run(rm_dir).score(texts, outputs).mean
    gold = Rewards([reward_config({"kind": "world-gold"})], max_tokens=max_tokens)(texts, outputs, counts, metas)[0]
    return proxy.view(len(prompts), per_prompt), gold.view(len(prompts), per_prompt)


def _best_of_n(cfg: OveroptimisationConfig, base_cfg: Any, rm_dir: Path) -> list[dict[str, float]]:
    from tether.losses.rl import best_of_n_expectation, best_of_n_kl
    from tether.models.loading import resolve_model_path

    cache = Path(cfg.out) / "best_of_n.json"
    if cache.is_file():
        return json.loads(cache.read_text())  # type: ignore[no-any-return]
    prompts = _prompts(cfg.seed + 1_000, cfg.bon_prompts)
    sampled = _Sampled(resolve_model_path(base_cfg.model.path), prompts, cfg.bon_samples, base_cfg.generation,
                       cfg.seed + 1_000)
    proxy, gold = _scores(prompts, cfg.bon_samples, sampled.outputs, sampled.counts, rm_dir,
                          base_cfg.generation.max_new_tokens)
    rows = []
    for n in [2**i for i in range(int(math.log2(cfg.bon_samples)) + 1)]:
        per_prompt_gold = best_of_n_expectation(proxy, gold, n).tolist()
        interval = bootstrap_mean([[g] for g in per_prompt_gold])
        rows.append({"n": n, "kl": round(best_of_n_kl(n), 6),
                     "proxy": round(float(best_of_n_expectation(proxy, proxy, n).mean()), 6),
                     "gold": round(interval.value, 6), "gold_ci": [round(interval.ci_low, 6), round(interval.ci_high,
                                                                                                    6)]})
    cache.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _curve(run_dir: Path) -> list[dict[str, Any]]:
    """Per rollout: proxy (the reward-model mean), gold and KL the run logged (last optimizer step of each rollout)."""
    by_rollout = {m["rollout"]: m for m in read_log(run_dir)}
    return [{"rollout": r, "kl": m.get("kl", 0.0), "gold": m.get("gold_reward"),
             "proxy": m.get("reward/reward-model/mean", m["reward"])} for r, m in sorted(by_rollout.items())]


def _measure(cfg: OveroptimisationConfig, ppo_cfg: Any, model_dir: Path | None, rm_dir: Path) -> dict[str, Any]:
    """Gold and proxy of a policy (the base when ``model_dir`` is None) on held-out prompts, and its KL to the base."""
    from tether.models.loading import resolve_model_path
    from tether.models.logprobs import completion_logps

    base = resolve_model_path(ppo_cfg.model.path)
    prompts = _prompts(cfg.seed + 2_000, cfg.eval_prompts)
    settings = ppo_cfg.generation
    sampled = _Sampled(str(model_dir or base), prompts, 1, settings, cfg.seed + 2_000)
    proxy, gold = _scores(prompts, 1, sampled.outputs, sampled.counts, rm_dir, settings.max_new_tokens)
    kl = 0.0
    if model_dir is not None:  # summed k1 over each completion: an unbiased estimate of the sequence KL
        from tether.data.collate import pad_batch
        from tether.data.records import TokenizedExample
        from tether.models.loading import ModelConfig, load_model

        reference = load_model(ModelConfig(path=base), sampled.tokenizer)
        examples = [TokenizedExample(p + c.token_ids, [False] * len(p) + [True] * len(c.token_ids))
                    for p, c in zip(sampled.prompt_ids, sampled.completions, strict=True)]
        with torch.no_grad():
            for start in range(0, len(examples), 64):
                rows = pad_batch(examples[start:start + 64], sampled.tokenizer.pad_token_id)
                args = (rows.input_ids, rows.attention_mask, rows.loss_mask)
                kl += float((completion_logps(sampled.model, *args).sequence_logps
                             - completion_logps(reference, *args).sequence_logps).sum())
        kl /= len(examples)
    gold_rate = bootstrap_mean([[g] for g in gold[:, 0].tolist()])
    return {"gold": round(gold_rate.value, 6), "gold_ci": [round(gold_rate.ci_low, 6), round(gold_rate.ci_high, 6)],
            "proxy": round(float(proxy.mean()), 6), "kl": round(kl, 6), "n": len(prompts)}


def plot(results: dict[str, Any], path: Path) -> None:
    """Gold and proxy reward against √KL: best-of-n, and each PPO variant (moving mean over 5 rollouts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    bon = results["best_of_n"]
    for ax, key in ((left, "gold"), (right, "proxy")):
        ax.plot([math.sqrt(r["kl"]) for r in bon], [r[key] for r in bon], "k--o", ms=3, label="best-of-n")
        for name, variant in results["ppo"].items():
            curve = [r for r in variant["curve"] if r[key] is not None]
            x = [math.sqrt(max(k, 0.0)) for k in _moving_mean([r["kl"] for r in curve], 5)]
            y = _moving_mean([r[key] for r in curve], 5)
            (line,) = ax.plot(x, y, lw=1.2, label=name)
            final = variant["final"]
            ax.plot([math.sqrt(max(final["kl"], 0.0))], [final[key]], "o", color=line.get_color(), ms=6)
        ax.set_xlabel("√KL to the base policy (nats^½)")
        ax.set_ylabel(f"{key} reward")
        ax.grid(alpha=0.3)
    left.set_title("gold (world grader): rises, then falls")
    right.set_title("proxy (the reward model each run optimised)")
    right.legend(fontsize=8, loc="lower right")
    fig.text(0.5, -0.02, "lines: per-rollout training samples (KL and reward, moving means of 5 rollouts); "
             "dots: final policy on held-out prompts (proxy: the single proxy RM)", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _moving_mean(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]
