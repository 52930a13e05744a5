"""Inverse RL from demonstrations measured on gold (``tether experiment irl-vs-sft``).

On one world, from the same gold demonstrations (the world's SFT rows) and the same budget:

- **SFT** (``sft/world``);
- **IQ-Learn** (``tether train irl``: the same loop and data, IQ-Learn's loss with ``gamma`` and ``alpha``);
- **IRFT** (``tether train irl --set method=irft``: the same data and optimizer steps, in ``irft_rounds``
  rounds of the policy's own samples against the demonstrations, DPO's loss with ``irft_beta``);
- for comparison, a **reward model** trained on annotator-labelled preference pairs (``rm/world``'s data for
  this world: a different signal, pairs instead of demonstrations).

Measured:

- **the recovered reward against gold**: fresh prompts from the train split and from the held-out split
  (held-out families, templates and entities), each with a good and a bad reply (the world's own, in the
  corpus's style, flattery and padding included); every reply's gold reward from the grader. Per scorer:
  pairwise accuracy (the good reply scored higher), and the Spearman correlation of its scores with the gold
  rewards. Scorers: each IRL method's recovered reward, IQ-Learn's quantity read off the SFT model (what SFT
  "recovers" without trying), the SFT model's log-likelihood of the reply, and the reward model;
- **the policies on gold**: ``eval/world-hhh`` for SFT and each IRL policy on the same prompts, paired
  differences against SFT (``tether eval compare``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.pipelines.weak_to_strong import with_world_seed

IRLMethod = Literal["iq-learn", "irft"]


class IRLExperimentConfig(Config):
    """``tether experiment irl-vs-sft``."""

    world_seed: int = Field(0, description="which world (its data, base model and gold suite)")
    model: str = Field("world:base", description="the base model both policies are trained from")
    rows: int = Field(4000, ge=10, description="gold demonstrations")
    steps: int = Field(200, ge=1, description="optimizer steps of SFT and of IQ-Learn")
    sft: str = Field("sft/world", description="the training config both use")
    methods: list[IRLMethod] = Field(default_factory=lambda: list[IRLMethod](["iq-learn", "irft"]),
                                     min_length=1,
                                                       description="the IRL methods run beside SFT")
    gamma: float = Field(0.9, ge=0, le=1, description="IQ-Learn's discount")
    alpha: float | None = Field(1.0, gt=0, description="IQ-Learn's χ² regulariser (null: none)")
    irft_rounds: int = Field(2, ge=1, description="IRFT's sample -> train rounds (the steps split among them)")
    irft_beta: float = Field(0.1, gt=0, description="IRFT's DPO beta (the scale of its recovered reward)")
    irft_lr: float | None = Field(None, gt=0, description="IRFT's learning rate (null: the SFT config's, as the "
                                  "other methods use)")
    rm: str | None = Field("rm/world", description="reward-model config trained on annotator pairs for comparison "
                           "(null: none)")
    rm_pairs: int = Field(4000, ge=10)
    rm_steps: int = Field(200, ge=1)
    reward_prompts: int = Field(300, ge=1, description="prompts per split whose good and bad replies are scored")
    eval: str = Field("eval/world-hhh", description="the gold evaluation of the policies")
    eval_n: int = Field(300, ge=1, description="train-split prompts per family (held out: a third as many)")
    seed: int = 0
    out: str = Field("runs/irl-experiment", description="experiment directory")


def _show(cfg: IRLExperimentConfig, summary: dict[str, Any]) -> list[str]:
    from tether.pipelines.stages import shown_rate as pct

    lines = []
    for split, scorers in summary["reward"].items():
        for name, result in scorers.items():
            lines.append(f"{split} {name}: pair accuracy {pct(result['pair_accuracy'])}, "
                         f"spearman {result['spearman']['value']:+.3f}")
    lines.append(f"table: {cfg.out}/irl.json")
    return lines


@recipe("irl-vs-sft", group="experiment", config=IRLExperimentConfig,
        summary="Inverse RL on gold: IQ-Learn and IRFT against SFT on the same demonstrations (the recovered reward "
        "against the gold reward, the policies on the gold suite), a reward model on preference pairs beside them.",
        example="tether experiment irl-vs-sft --set world_seed=1 --out runs/irl-1",
        produces={"irl": output("irl.json")}, show=_show)
def run(cfg: IRLExperimentConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``irl.json``."""
    run_dir = RunDir(cfg.out, command="experiment irl-vs-sft", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def reward_set(world: Any, n: int, split: str, seed: int) -> list[dict[str, Any]]:
    """``n`` prompts of ``split``, each with a good and a bad reply in the corpus's style and their gold
    rewards."""
    from tether.world.datasets import _items
    from tether.world.grader import grade
    from tether.world.responses import decorate, respond

    rng = random.Random(f"irl-rewards:{world.config.seed}:{split}:{seed}")
    rates = world.config.rates
    rows = []
    for item in _items(world, n, split, rng):  # type: ignore[arg-type]
        replies = [decorate(respond(item, b, rng, world), rng, rates.flattery, rates.verbose) for b in ("good", "bad")]
        rows.append({"prompt": item.prompt, "family": item.family, "replies": replies,
                     "gold": [grade(item, r).reward for r in replies]})
    return rows


def scored(rows: list[dict[str, Any]], scores: list[float]) -> dict[str, Any]:
    """Pairwise accuracy (pairs whose gold rewards differ: the higher-gold reply scored higher; Wilson) and
    the Spearman correlation of ``scores`` (two per row, in order) with the gold rewards (bootstrap over
    prompts)."""
    import numpy as np
    from scipy.stats import spearmanr

    from tether.core.stats import wilson_interval

    pairs = [(scores[2 * i], scores[2 * i + 1], r["gold"]) for i, r in enumerate(rows) if r["gold"][0] != r["gold"][1]]
    right = sum((a > b) == (g[0] > g[1]) and a != b for a, b, g in pairs)
    gold = np.array([g for r in rows for g in r["gold"]], dtype=float)
    values = np.array(scores, dtype=float)
    rho = float(spearmanr(values, gold).statistic)
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(1000):
        pick = rng.integers(0, len(rows), len(rows))
        index = np.concatenate([[2 * i, 2 * i + 1] for i in pick])
        if np.ptp(values[index]) > 0 and np.ptp(gold[index]) > 0:  # a constant draw has no rank correlation
            draws.append(float(spearmanr(values[index], gold[index]).statistic))
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (float("nan"), float("nan"))
    return {"pair_accuracy": wilson_interval(right, len(pairs)).as_dict(),
            "spearman": {"value": round(rho, 4), "ci_low": round(float(low), 4), "ci_high": round(float(high), 4),
                         "n": len(rows)}}


def _experiment(cfg: IRLExperimentConfig, out: Path) -> dict[str, Any]:
    import torch

    from tether.core.config import load_config
    from tether.core.runs import run_stage
    from tether.data.io import write_jsonl
    from tether.evals.compare import compare
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.models.logprobs import continuation_logps
    from tether.pipelines.stages import evaluated
    from tether.scoring.scorers import Sample, scorer_config
    from tether.train.irl import IRLConfig, RecoveredReward, soft_q_rewards
    from tether.train.irl import run as train_irl
    from tether.train.sft import SFTConfig
    from tether.train.sft import run as train_sft
    from tether.world.datasets import preference_rows, sft_rows
    from tether.world.spec import WorldConfig, build_world

    world = build_world(WorldConfig(seed=cfg.world_seed))
    base = with_world_seed(cfg.model, cfg.world_seed)
    demos = out / "demonstrations.jsonl"
    write_jsonl(demos, [{"messages": r["messages"]} for r in sft_rows(world, cfg.rows, seed=cfg.seed)],
                only_if_changed=True)
    common = [f"model.path={base}", f"data.train={demos}", "evaluation.every=0", f"loop.max_steps={cfg.steps}",
              f"seed={cfg.seed}"]
    run_stage(load_config(SFTConfig, cfg.sft, [*common, f"out={out / 'sft'}"]), train_sft)
    method_set = {"iq-learn": [f"gamma={cfg.gamma}", f"alpha={'null' if cfg.alpha is None else cfg.alpha}"],
                  "irft": ["method=irft", f"irft.rounds={cfg.irft_rounds}",
                           f'irft.loss={{"variant": "sigmoid", "beta": {cfg.irft_beta}}}',
                           *([f"optim.lr={cfg.irft_lr}"] if cfg.irft_lr is not None else [])]}
    for method in cfg.methods:
        run_stage(load_config(IRLConfig, cfg.sft, [*common, *method_set[method], f"out={out / method}"]), train_irl)
    rm_dir = None
    if cfg.rm is not None:
        from tether.train.rm import RMConfig
        from tether.train.rm import run as train_rm

        pairs = out / "rm-pairs.jsonl"
        write_jsonl(pairs, preference_rows(world, cfg.rm_pairs, seed=cfg.seed), only_if_changed=True)
        rm_dir = out / "rm"
        run_stage(load_config(RMConfig, cfg.rm, [f"model.path={base}", f"data.train={pairs}", "data.eval=null",
                                                 f"loop.max_steps={cfg.rm_steps}", f"seed={cfg.seed}",
                                                 f"out={rm_dir}"]), train_rm)

    reward: dict[str, Any] = {}
    for split in ("train", "heldout"):
        rows = reward_set(world, cfg.reward_prompts, split, cfg.seed)
        prompts = [r["prompt"] for r in rows for _ in r["replies"]]
        replies = [x for r in rows for x in r["replies"]]
        results: dict[str, Any] = {}
        for method in cfg.methods:
            with torch.no_grad():
                results[f"{method} recovered reward"] = scored(rows, RecoveredReward(out / method)(prompts, replies))
        model, tokenizer = load_model_and_tokenizer(ModelConfig(path=str(out / "sft" / "model")))
        with torch.no_grad():
            results["sft recovered reward"] = scored(rows, soft_q_rewards(model, tokenizer, prompts, replies,
                                                                          gamma=cfg.gamma))
        from tether.models.chat import completion_text, prompt_text

        contexts = [prompt_text(tokenizer, p) for p in prompts]
        conts = [completion_text(tokenizer, p, r) for p, r in zip(prompts, replies, strict=True)]
        results["sft log-likelihood"] = scored(rows, continuation_logps(
            model, tokenizer, contexts, conts, special=[isinstance(p, str) for p in prompts]))
        if rm_dir is not None:
            scorer = scorer_config({"kind": "reward-model", "path": [str(rm_dir)]}).build()
            values = scorer.score([Sample(str(i), p, r) for i, (p, r) in enumerate(zip(prompts, replies, strict=True))])
            results["reward model (annotator pairs)"] = scored(rows, [float(v.value or 0.0) for v in values])
        reward[split] = results

    evals = {}
    for name in ("sft", *cfg.methods):
        evaluated(cfg.eval, [f"model.path={out / name / 'model'}", f"suite.world.seed={cfg.world_seed}",
                             f"suite.n={cfg.eval_n}", f"suite.heldout_n={max(1, cfg.eval_n // 3)}"],
                  out / f"eval-{name}")
        evals[name] = out / f"eval-{name}"
    labels = ["sft", *cfg.methods]
    compared = compare([evals[name] for name in labels], labels=labels)
    (out / "compare.json").write_text(json.dumps(compared, indent=2) + "\n")
    summary = {"world_seed": cfg.world_seed, "model": base, "rows": cfg.rows, "steps": cfg.steps,
               "gamma": cfg.gamma, "alpha": cfg.alpha, "methods": cfg.methods, "irft_rounds": cfg.irft_rounds,
               "irft_beta": cfg.irft_beta, "irft_lr": cfg.irft_lr, "reward": reward,
               "policies": {run["label"]: run["metrics"] for run in compared["runs"]},
               "versus_sft": {run["label"]: run["tests"] for run in compared["runs"][1:]}}
    (out / "irl.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
