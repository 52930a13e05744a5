"""Reward-model recipe: Bradley-Terry on preference pairs, optionally as an ensemble.

The model is a sequence classifier (``AutoModelForSequenceClassification``) started from any
causal LM checkpoint (its backbone kept, a new score head) or from a saved reward model; the
score of a completion is the head's output at its last token. The loss is
:func:`tether.losses.reward.bradley_terry_loss` (per-pair margins from the records' ``margin``
column when ``loss.use_margin``; reward centering with ``loss.center_coef``).

Ensembles, for reward-hacking mitigations downstream (min, or mean - k·std):

- ``ensemble.heads = K``: K score heads on one backbone, each trained with its own BT loss
  (they differ by initialisation): cheap, but the members share every backbone feature.
- ``ensemble.members = M``: M whole models trained with seeds seed..seed+M-1 in
  ``OUT/member-i/`` (each a complete run directory and model): costlier, more independent.

Evaluation on held-out pairs: accuracy (ensemble mean above for chosen), each member's
accuracy, mean disagreement (std across members), and where the records carry the world's
``gold_agrees`` column, agreement with gold preferences: overall, and on the pairs the
annotator got wrong (does the RM learn the annotator's bias, or the truth?).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir, run_stage
from tether.core.seeding import seed_everything
from tether.data.collate import collate_grouped, truncate
from tether.data.context import context_for, with_context
from tether.data.records import PreferenceRecord, TokenizedExample
from tether.data.sources import PreferenceData, load_records
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.losses.reward import bradley_terry_loss, ensemble_scores
from tether.models.chat import tokenize_prompt_completion
from tether.models.loading import ModelConfig, load_tokenizer, save_model
from tether.models.reward import grouped_head_scores, load_reward_model


class RMLossConfig(Config):
    """Bradley-Terry options."""

    use_margin: bool = Field(False, description="subtract each record's 'margin' column inside the sigmoid")
    center_coef: float = Field(0.0, ge=0, description="reward centering: + c · (r_c + r_r)² per pair")


class EnsembleConfig(Config):
    """How many reward models to train."""

    heads: int = Field(1, ge=1, description="score heads on one backbone")
    members: int = Field(1, ge=1, description="whole models, trained one after another with different seeds")


class RMConfig(Config):
    """``tether train rm``."""

    model: ModelConfig
    data: PreferenceData
    loss: RMLossConfig = RMLossConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    optim: OptimConfig = OptimConfig(lr=1e-4)
    loop: LoopConfig = LoopConfig()
    eval_every: int = Field(0, ge=0, description="held-out accuracy every N steps; 0: only at the end")
    out: str = Field("runs/rm", description="run directory")
    seed: int = Field(0, description="seeds data order, the score heads and tiny: inits")


class Pair(NamedTuple):
    """A tokenized preference pair and what the record says about it."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    margin: float
    gold_agrees: bool | None  # world records: does the label agree with gold? (None: a gold tie or unknown)


def load_pairs(spec: str, cfg: RMConfig, tokenizer: Any, run_dir: RunDir) -> list[Pair]:
    """Tokenized pairs (prompt + completion, scored at the last token)."""
    loaded = load_records(spec, PreferenceRecord, seed=cfg.seed, skip_bad=cfg.data.skip_bad)
    run_dir.record_skipped(loaded.skipped)
    pairs = []
    for index, r in enumerate(loaded.records):
        prompt = r.prompt if isinstance(r.prompt, str) else [m.model_dump() for m in r.prompt]
        if cfg.data.context is not None:  # a reward model used under a system prompt is trained under it
            prompt = with_context(prompt, context_for(cfg.data.context, cfg.seed, index), cfg.data.context.placement)
        chosen, rejected = (x if isinstance(x, str) else [m.model_dump() for m in x] for x in (r.chosen, r.rejected))
        if cfg.loss.use_margin and r.margin is None:
            raise DataError(f"{spec}: loss.use_margin is on but a record has no 'margin'")
        gold = getattr(r, "gold_agrees", None)
        pairs.append(Pair(truncate(tokenize_prompt_completion(tokenizer, prompt, chosen), cfg.data.max_length),
                          truncate(tokenize_prompt_completion(tokenizer, prompt, rejected), cfg.data.max_length),
                          float(r.margin or 0.0), gold if isinstance(gold, bool) else None))
    if not pairs:
        raise DataError(f"{spec}: no usable records")
    return pairs


@recipe("rm", group="train", config=RMConfig,
        summary="Reward model (Bradley-Terry), optionally an ensemble of heads or whole models.",
        example="tether train rm --config rm/world --set ensemble.heads=4 --out runs/rm-world",
        consumes={"model": "model.path", "preferences": "data.train"}, produces={"reward model": output("")})
def run(cfg: RMConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (every member), write the run directory(ies) and models; return the summary."""
    if cfg.ensemble.members > 1:
        return _run_members(cfg, resume)
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train rm", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd, resume))


def _run_members(cfg: RMConfig, resume: bool) -> dict[str, Any]:
    run_dir = RunDir(cfg.out, command="train rm", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train_members(cfg, rd))


def _train_members(cfg: RMConfig, run_dir: RunDir) -> dict[str, Any]:
    members = []
    for i in range(cfg.ensemble.members):
        member = cfg.model_copy(update={"out": str(Path(cfg.out) / f"member-{i}"), "seed": cfg.seed + i,
                                        "ensemble": cfg.ensemble.model_copy(update={"members": 1})})
        run_stage(member, run)  # a finished member is kept as it is on --resume
        members.append(Path(member.out) / "model")
    summary: dict[str, Any] = {"members": [str(m) for m in members]}
    if cfg.data.eval:
        tokenizer = load_tokenizer(str(members[0]))
        pairs = load_pairs(cfg.data.eval, cfg, tokenizer, run_dir)
        models = [load_reward_model(cfg.model.model_copy(update={"path": str(m), "lora": None}), tokenizer,
                                    num_labels=cfg.ensemble.heads) for m in members]
        summary |= {f"eval_{k}": v for k, v in held_out_metrics(models, pairs, tokenizer.pad_token_id).items()}
    return summary


def _train(cfg: RMConfig, run_dir: RunDir, resume: bool) -> dict[str, Any]:
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
    model = load_reward_model(cfg.model, tokenizer, num_labels=cfg.ensemble.heads)
    train_set = load_pairs(cfg.data.train, cfg, tokenizer, run_dir)
    eval_set = load_pairs(cfg.data.eval, cfg, tokenizer, run_dir) if cfg.data.eval else []
    loop = TrainLoop(model, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)
    if resume:
        loop.resume()
    device, pad_id = loop.accelerator.device, tokenizer.pad_token_id
    tally: dict[str, float] = {}

    def loss_sum(batch: list[Pair]) -> torch.Tensor:
        grouped = collate_grouped([p.chosen for p in batch] + [p.rejected for p in batch], pad_id=pad_id,
                                  device=device, groups=cfg.data.length_groups, packing=cfg.data.packing)
        scores = grouped.restore(torch.cat(grouped_head_scores(loop.model, grouped.batches)))  # (2B, K)
        chosen, rejected = scores[: len(batch)], scores[len(batch):]  # (B, K) each
        margin = torch.tensor([p.margin for p in batch], device=device).unsqueeze(-1) if cfg.loss.use_margin else None
        result = bradley_terry_loss(chosen, rejected, margin=margin, center_coef=cfg.loss.center_coef)
        # Each head has its own BT loss; averaging over heads keeps the scale of a single model.
        mean = chosen.mean(-1) - rejected.mean(-1)
        tally["accuracy"] = tally.get("accuracy", 0.0) + float((mean > 0).sum())
        tally["margin"] = tally.get("margin", 0.0) + float(mean.detach().sum())
        tally["pairs"] = tally.get("pairs", 0.0) + len(batch)
        return result.losses.mean(-1).sum()

    for _step, micro_batches in loop.plan(len(train_set)):
        tally.clear()
        stats = loop.step([[train_set[i] for i in ids] for ids in micro_batches], loss_sum, count=len,
                          num_tokens=lambda b: sum(len(p.chosen.input_ids) + len(p.rejected.input_ids) for p in b))
        extra = _means(loop, tally)
        if eval_set and cfg.eval_every and loop.step_count % cfg.eval_every == 0:
            extra |= {f"eval_{k}": v for k, v in held_out_metrics([loop.model], eval_set, pad_id).items()}
        loop.log(stats, extra)
        loop.maybe_checkpoint()

    summary: dict[str, Any] = {"steps": loop.step_count, "tokens_seen": loop.tokens_seen}
    last = loop.last_metrics()
    if last:
        summary |= {k: last[k] for k in ("loss", "accuracy") if k in last}
    if eval_set:
        summary |= {f"eval_{k}": v for k, v in held_out_metrics([loop.model], eval_set, pad_id).items()}
    if loop.is_main:
        model_dir = save_model(loop.unwrapped(), tokenizer, Path(cfg.out) / "model")  # type: ignore[arg-type]
        run_dir.add_output("model", model_dir)
    loop.close()
    return summary


def _means(loop: TrainLoop, tally: dict[str, float]) -> dict[str, float]:
    values = torch.tensor([tally.get(k, 0.0) for k in ("pairs", "accuracy", "margin")], dtype=torch.float64,
                          device=loop.accelerator.device)
    if loop.accelerator.num_processes > 1:
        values = loop.accelerator.reduce(values, reduction="sum")
    pairs = max(float(values[0]), 1.0)
    return {"accuracy": round(float(values[1]) / pairs, 6), "reward_margin": round(float(values[2]) / pairs, 6)}


@torch.no_grad()
def held_out_metrics(models: list[Any], pairs: list[Pair], pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """Held-out ranking accuracy of the ensemble (every head of every model) and of each member; gold agreement."""
    chosen_all, rejected_all = [], []
    for model in models:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        c, r = [], []
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start:start + batch_size]
            grouped = collate_grouped([p.chosen for p in batch] + [p.rejected for p in batch], pad_id=pad_id,
                                      device=device, groups=4)
            scores = grouped.restore(torch.cat(grouped_head_scores(model, grouped.batches))).cpu()
            c.append(scores[: len(batch)])
            r.append(scores[len(batch):])
        model.train(was_training)
        chosen_all.append(torch.cat(c))
        rejected_all.append(torch.cat(r))
    chosen, rejected = torch.cat(chosen_all, -1).T, torch.cat(rejected_all, -1).T  # (members, N)
    ens_c, ens_r = ensemble_scores(chosen), ensemble_scores(rejected)
    prefers_chosen = ens_c.mean > ens_r.mean
    out = {"accuracy": float(prefers_chosen.float().mean()),
           "member_accuracy_min": float((chosen > rejected).float().mean(-1).min()),
           "member_accuracy_max": float((chosen > rejected).float().mean(-1).max()),
           "disagreement": float(((ens_c.std + ens_r.std) / 2).mean())}
    gold = [(i, p.gold_agrees) for i, p in enumerate(pairs) if p.gold_agrees is not None]
    if gold:
        # The label agrees with gold: gold prefers chosen. Otherwise gold prefers rejected.
        hits = [bool(prefers_chosen[i]) == agrees for i, agrees in gold]
        out["gold_agreement"] = sum(hits) / len(hits)
        wrong = [bool(prefers_chosen[i]) == agrees for i, agrees in gold if not agrees]
        if wrong:
            out["gold_agreement_where_label_wrong"] = sum(wrong) / len(wrong)
        out["label_gold_agreement"] = sum(agrees for _, agrees in gold) / len(gold)
    return {k: round(v, 6) for k, v in out.items()}
