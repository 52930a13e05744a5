"""Inverse RL from demonstrations (``tether train irl``): recover a reward and a policy from demonstrations
alone, by one of two methods (``method``):

- ``iq-learn``: inverse soft-Q learning (IQ-Learn as Wulfmeier et al. 2024 apply it to language models;
  :mod:`tether.losses.irl`). The loop, data and outputs are SFT's (:mod:`tether.train.supervised`); the
  loss is IQ-Learn's, whose ``alpha = null`` case is SFT itself (for any ``gamma``: the value terms
  cancel). The trained model is both the policy and, through its logits read as soft Q-values, the reward.
- ``irft``: reward and policy learned jointly against the policy's own samples (IRFT, Li et al. 2024,
  "Getting More Juice Out of the SFT Data", its implicit-reward form). ``irft.rounds`` rounds, each: the
  current policy samples a reply to each demonstration's prompt; the demonstration is preferred to the
  sample; a preference loss (DPO's by default, :mod:`tether.losses.preference`) trains the policy with the
  round's starting model as the reference (``tether train dpo`` runs the round, in ``OUT/round-R``). Each
  round's implicit reward is ``β log π_new / π_start``; their sum over rounds telescopes to
  ``β log π_final / π_initial``, the recovered reward. Only a conversation's last assistant turn is
  contrasted; earlier turns are its prompt.

:class:`RecoveredReward` scores any reply with either method's reward, and the run reports how often that
reward prefers the chosen reply of ``pairs`` (preference records, if given).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.collate import Grouped, pad_batch
from tether.data.records import SFTRecord
from tether.losses.irl import iq_learn_loss, next_states
from tether.models.chat import tokenize_prompt_completion
from tether.models.generation import GenerationSettings
from tether.models.logprobs import completion_logits, completion_logps, run_inside, scored_positions
from tether.train.supervised import SFTConfig, train_supervised


def _irft_sampling() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=64, temperature=1.0, batch_size=64)


class IRFTSettings(Config):
    """IRFT's rounds: sample from the policy, prefer the demonstration, train (``method: irft``)."""

    rounds: int = Field(2, ge=1, description="sample -> train rounds; loop.max_steps is split evenly among them")
    loss: dict[str, Any] = Field(default_factory=lambda: {"variant": "sigmoid", "beta": 0.1},
                                 description="the preference loss of each round, as tether train dpo's 'loss' "
                                 "({variant: sigmoid, beta: 0.1} is DPO's); its beta scales the recovered reward")
    sampling: GenerationSettings = Field(default_factory=_irft_sampling,
                                         description="how the policy samples the reply each demonstration beats")


class IRLConfig(SFTConfig):
    """``tether train irl``."""

    method: Literal["iq-learn", "irft"] = Field("iq-learn", description="iq-learn (inverse soft-Q on SFT's loop) "
                                                "or irft (demonstrations against the policy's samples, in rounds)")
    irft: IRFTSettings = Field(default_factory=IRFTSettings, description="method irft: its rounds")
    gamma: float = Field(0.9, ge=0, le=1, description="iq-learn's discount: how much each token answers for the "
                         "soft value of the state it leads to, through the regulariser (with alpha null the loss is "
                         "plain SFT's for any gamma)")
    alpha: float | None = Field(1.0, gt=0, description="iq-learn: scale of the χ² regulariser on the recovered rewards "
                                "(null: none)")
    pairs: str | None = Field(None, description="preference records (JSONL or builtin:NAME) whose chosen reply the "
                              "recovered reward should prefer: the run reports how often it does")
    out: str = Field("runs/irl", description="run directory")


def objective(cfg: IRLConfig) -> Any:
    """The IQ-Learn loss of a collated micro-batch (summed over its demonstrated tokens)."""

    def loss_sum(model: Any, batch: Grouped) -> torch.Tensor:
        total = None
        for b in batch.batches:
            logits = run_inside(model, completion_logits, input_ids=b.input_ids, attention_mask=b.attention_mask,
                                loss_mask=b.loss_mask)
            scored = scored_positions(b.attention_mask, b.loss_mask)
            loss = iq_learn_loss(logits, b.input_ids[scored], next_states(scored[:, 1:]), gamma=cfg.gamma,
                                 alpha=cfg.alpha).loss_sum
            total = loss if total is None else total + loss
        assert total is not None
        return total

    return loss_sum


def _replies(model: Any, tokenizer: Any, prompts: Sequence[Any], replies: Sequence[Any], batch_size: int,
             score: Any) -> list[float]:
    """``score(batch, device)``: one number per reply, over padded batches tokenised as training tokenises them."""
    examples = [tokenize_prompt_completion(tokenizer, p, r) for p, r in zip(prompts, replies, strict=True)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                b = pad_batch(examples[start: start + batch_size], tokenizer.pad_token_id, device)
                out.extend(score(b, device))
    finally:
        model.train(was_training)
    return out


def soft_q_rewards(model: Any, tokenizer: Any, prompts: Sequence[Any], replies: Sequence[Any], *,
                   gamma: float, batch_size: int = 32) -> list[float]:
    """IQ-Learn's recovered reward of each reply: the sum over its tokens of ``Q(s, a) − γ V(s')`` under
    ``model``'s logits (prompts and replies as text or messages)."""

    def score(b: Any, device: torch.device) -> list[float]:
        logits = completion_logits(model, b.input_ids, b.attention_mask, b.loss_mask)
        scored = scored_positions(b.attention_mask, b.loss_mask)
        rewards = iq_learn_loss(logits, b.input_ids[scored], next_states(scored[:, 1:]), gamma=gamma,
                                alpha=None).rewards
        rows = torch.arange(scored.shape[0], device=device)[:, None].expand_as(scored)[scored]
        return torch.zeros(scored.shape[0], device=device).index_add_(0, rows, rewards).tolist()  # type: ignore

    return _replies(model, tokenizer, prompts, replies, batch_size, score)


def reply_logps(model: Any, tokenizer: Any, prompts: Sequence[Any], replies: Sequence[Any], *,
                batch_size: int = 32) -> list[float]:
    """log π(reply | prompt) of each reply, tokenised as training tokenises it."""

    def score(b: Any, device: torch.device) -> list[float]:
        return completion_logps(model, b.input_ids, b.attention_mask, b.loss_mask).sequence_logps.tolist()  # type: ignore

    return _replies(model, tokenizer, prompts, replies, batch_size, score)


def implicit_rewards(model: Any, reference: Any, tokenizer: Any, prompts: Sequence[Any], replies: Sequence[Any], *,
                     beta: float, batch_size: int = 32) -> list[float]:
    """IRFT's recovered reward of each reply: ``β (log π(reply) − log π_ref(reply))``, the sum of every
    round's implicit reward when ``reference`` is the model the first round started from."""
    policy = reply_logps(model, tokenizer, prompts, replies, batch_size=batch_size)
    ref = reply_logps(reference, tokenizer, prompts, replies, batch_size=batch_size)
    return [beta * (a - b) for a, b in zip(policy, ref, strict=True)]


class RecoveredReward:
    """The reward a ``tether train irl`` run recovered, read from its directory: scores (prompt, reply)."""

    def __init__(self, run: str | Path) -> None:
        from tether.core.config import load_config
        from tether.core.errors import UserError
        from tether.models.loading import ModelConfig, load_model_and_tokenizer

        if not (Path(run) / "config.yaml").is_file() or not (Path(run) / "model").is_dir():
            raise UserError(f"{run}: not a finished tether train irl run (no config.yaml or model/)")
        self.config = load_config(IRLConfig, str(Path(run) / "config.yaml"))
        self.model, self.tokenizer = load_model_and_tokenizer(ModelConfig(path=str(Path(run) / "model")))
        self.reference = None
        if self.config.method == "irft":
            self.reference, _ = load_model_and_tokenizer(self.config.model)

    def __call__(self, prompts: Sequence[Any], replies: Sequence[Any]) -> list[float]:
        """One recovered reward per reply."""
        if self.reference is not None:
            return implicit_rewards(self.model, self.reference, self.tokenizer, prompts, replies,
                                    beta=float(self.config.irft.loss.get("beta", 0.1)))
        return soft_q_rewards(self.model, self.tokenizer, prompts, replies, gamma=self.config.gamma)


def pair_accuracy(reward: Any, pairs: str, *, seed: int) -> dict[str, Any]:
    """How often ``reward`` (prompts, replies -> scores) strictly prefers each pair's chosen reply, with a
    Wilson interval."""
    from tether.core.stats import wilson_interval
    from tether.data.records import PreferenceRecord
    from tether.data.sources import load_records

    records = load_records(pairs, PreferenceRecord, seed=seed).records
    prompts = [r.prompt if isinstance(r.prompt, str) else [m.model_dump() for m in r.prompt] for r in records]

    def reply(value: Any) -> Any:
        return value if isinstance(value, str) else [m.model_dump() for m in value]

    chosen = reward(prompts, [reply(r.chosen) for r in records])
    rejected = reward(prompts, [reply(r.rejected) for r in records])
    return wilson_interval(sum(c > r for c, r in zip(chosen, rejected, strict=True)), len(records)).as_dict()


# --- IRFT ----------------------------------------------------------------------------------------

def round_steps(total: int, rounds: int) -> list[int]:
    """``total`` optimizer steps split over ``rounds`` as evenly as possible (earlier rounds take the
    remainder). Example: 10 over 3 -> [4, 3, 3]."""
    return [total // rounds + (r < total % rounds) for r in range(rounds)]


def round_indices(n: int, count: int, *, seed: int, round_: int) -> list[int]:
    """Which ``count`` demonstrations (of ``n``) a round contrasts: a seeded shuffle, cycled when it needs more
    than there are."""
    rng = random.Random(f"irft:{seed}:{round_}")
    order: list[int] = []
    while len(order) < count:
        block = list(range(n))
        rng.shuffle(block)
        order += block
    return order[:count]


def _irft(cfg: IRLConfig, rd: RunDir) -> dict[str, Any]:
    from tether.core.errors import DataError
    from tether.core.runs import run_stage
    from tether.data.io import write_jsonl
    from tether.data.sources import PreferenceData, load_records
    from tether.models.generation import HFGenerator
    from tether.models.loading import load_model_and_tokenizer
    from tether.train.dpo import DPOConfig, ReferenceConfig
    from tether.train.dpo import run as train_dpo

    loaded = load_records(cfg.data.train, SFTRecord, seed=cfg.seed, skip_bad=cfg.data.skip_bad)
    rd.record_skipped(loaded.skipped)
    if not loaded.records:
        raise DataError(f"{cfg.data.train}: no usable records")
    demos = [r.prompt_and_reply() for r in loaded.records]
    out, start, rounds = Path(cfg.out), cfg.model.path, []
    for r, steps in enumerate(round_steps(cfg.loop.max_steps, cfg.irft.rounds)):
        round_dir = out / f"round-{r}"
        pairs = round_dir / "pairs.jsonl"
        dpo = DPOConfig.model_validate({
            "model": cfg.model.model_copy(update={"path": start}).model_dump(),
            "data": PreferenceData(train=str(pairs), max_length=cfg.data.max_length,
                                   length_groups=cfg.data.length_groups).model_dump(),
            "loss": cfg.irft.loss, "reference": ReferenceConfig(mode="auto", precompute=True).model_dump(),
            "optim": cfg.optim.model_dump(), "loop": cfg.loop.model_copy(update={"max_steps": steps}).model_dump(),
            "out": str(round_dir), "seed": cfg.seed + r})
        if not (round_dir / "record.json").is_file():  # a resumed round keeps the pairs it was trained on
            model, tokenizer = load_model_and_tokenizer(cfg.model.model_copy(update={"path": start}))
            picked = [demos[i] for i in round_indices(len(demos), steps * cfg.loop.batch_size, seed=cfg.seed,
                                                      round_=r)]
            settings = cfg.irft.sampling.model_copy(update={"seed": cfg.irft.sampling.seed + 1000 * cfg.seed + r})
            samples = HFGenerator(model, tokenizer).generate([p for p, _ in picked], settings)
            write_jsonl(pairs, [{"prompt": p, "chosen": d, "rejected": s.text} for (p, d), s in
                                zip(picked, samples, strict=True)])
            del model
        summary = run_stage(dpo, train_dpo)
        rows = [json.loads(line) for line in pairs.read_text().splitlines() if line.strip()]
        rounds.append({"round": r, "start": str(start), "steps": steps, "pairs": len(rows),
                       "sample_equals_demonstration": sum(x["rejected"] == x["chosen"] for x in rows),
                       "empty_samples": sum(not str(x["rejected"]).strip() for x in rows),
                       **{k: v for k, v in summary.items() if not isinstance(v, dict)}})
        start = str(round_dir / "model")
    shutil.copytree(start, out / "model", dirs_exist_ok=True)
    rd.add_output("model", out / "model")
    return {"method": "irft", "rounds": rounds, "reference": cfg.model.path,
            "beta": float(cfg.irft.loss.get("beta", 0.1))}


@recipe("irl", group="train", config=IRLConfig,
        summary="Inverse RL from demonstrations (IQ-Learn, or IRFT against the policy's own samples): a policy and "
        "the reward it implies, from demonstrations alone.",
        example="tether train irl --config sft/world --set loop.max_steps=200 --out runs/irl",
        consumes={"model": "model.path", "demonstrations": "data.train"}, produces={"model": output("model")})
def run(cfg: IRLConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train; write the run directory and the model (``OUT/model``: the policy, and with it the reward,
    :class:`RecoveredReward`); return the summary."""
    from tether.core.errors import ConfigError

    if cfg.data.packing != "none":
        raise ConfigError("data.packing: IRL reads each reply on its own (IQ-Learn its next states), which packing "
                          "does not keep; set data.packing=none")
    if cfg.method == "irft" and cfg.data.context is not None:
        raise ConfigError("data.context: not supported by method irft (its rounds sample from the bare prompts)")
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train irl", config=cfg, seed=cfg.seed, resume=resume)

    def body(rd: RunDir) -> dict[str, Any]:
        if cfg.method == "irft":
            summary = _irft(cfg, rd)
        else:
            summary = train_supervised(cfg, rd, resume, objective(cfg))
        if cfg.pairs is not None:
            summary["pair_accuracy"] = pair_accuracy(RecoveredReward(cfg.out), cfg.pairs, seed=cfg.seed)
        return summary

    return run_dir.execute(body)
