"""What every online-RL recipe shares: prompts, rollouts, the reference policy, the watched signals, snapshots.

A rollout step, the same for PPO and the group methods:

1. ``step_prompts``: the step's global list of prompts, drawn from (seed, step) alone; each
   process takes a contiguous share.
2. ``roll_out``: sample ``samples_per_prompt`` completions of each with per-completion seeds
   (so a completion never depends on batching or on the process count), score them with the
   configured rewards and the watched gold reward, and compute the policy's and the
   reference's log-probs of every completion token (no gradients).
3. ``gather``: every process gets the whole step's samples, so advantages, whitening and
   minibatch composition are those of one process holding the global batch; the update is then
   the same whatever the number of processes.
4. ``signals``: what is logged and watched (proxy reward and its terms, gold reward, KL to the
   reference, entropy, reward-model disagreement, completion length).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tether.data.collate import PrefixBatch, TokenBatch, pad_batch, prefix_batch, prompt_groups
from tether.data.records import TokenizedExample
from tether.models.generation import GenerationSettings, RolloutGenerator
from tether.models.logprobs import completion_logps, inner_model, prefix_logps, prefix_sharing_supported
from tether.scoring.rewards import Rewards, reward_config
from tether.train.watchdog import WatchConfig


def watched_gold(watch: WatchConfig, prompts: Sequence[dict[str, Any]], max_tokens: int) -> Rewards | None:
    """The trusted reward to measure: ``watch.gold``, else the world's gold grader where every prompt has world
    metadata."""
    if watch.gold is not None:
        return Rewards([watch.gold], max_tokens=max_tokens)
    if all("family" in p and "gold" in p for p in prompts):
        return Rewards([reward_config({"kind": "world-gold"})], max_tokens=max_tokens)
    return None


@dataclass
class RolloutSample:
    """One completion with what the update needs (per-token tensors over its completion tokens, on the CPU)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    reward: float
    terms: dict[str, float]
    gold: float | None
    old_logps: Tensor                     # (C,) policy log-probs at sampling time
    ref_logps: Tensor | None              # (C,) reference log-probs; None without a reference
    entropy: Tensor                       # (C,) entropy of the sampling distribution at each token
    truncated: bool                       # stopped by max_new_tokens, not by EOS or a stop string
    extra: dict[str, Tensor] = field(default_factory=dict)  # recipe-specific: values, advantages, returns


def step_prompts(prompts: Sequence[dict[str, Any]], count: int, *, seed: int, step: int) -> list[dict[str, Any]]:
    """The step's ``count`` prompts (global, all processes): drawn with replacement from (seed, step) alone."""
    rng = random.Random(f"rollout:{seed}:{step}")
    return [prompts[rng.randrange(len(prompts))] for _ in range(count)]


def process_share(items: Sequence[Any], rank: int, world_size: int) -> tuple[int, list[Any]]:
    """This process's contiguous share of a global list, and the index its share starts at."""
    share = len(items) // world_size
    return rank * share, list(items[rank * share:(rank + 1) * share])


class RolloutReference:
    """Reference log-probs for the KL term: a frozen copy of the starting policy, or the policy with its
    LoRA adapters disabled (no second copy of the weights)."""

    def __init__(self, policy: Any, *, adapters_off: bool) -> None:
        self.adapters_off = adapters_off
        self.model = None if adapters_off else copy.deepcopy(policy).eval().requires_grad_(False)

    def to(self, device: torch.device) -> RolloutReference:
        """Move the frozen copy (if any) to ``device``."""
        if self.model is not None:
            self.model.to(device)
        return self

    @contextmanager
    def _model(self, policy: Any) -> Any:
        if self.model is not None:
            yield self.model
        else:
            with inner_model(policy).disable_adapter():
                yield policy

    @torch.no_grad()
    def token_logps(self, policy: Any, rows: TokenBatch) -> Tensor:
        """Per-token reference log-probs of ``rows``' completion tokens.  -> (B, T)"""
        with self._model(policy) as model:
            return completion_logps(model, rows.input_ids, rows.attention_mask, rows.loss_mask).token_logps

    @torch.no_grad()
    def prefix_logps(self, policy: Any, batch: PrefixBatch) -> Tensor:
        """Reference log-probs of ``batch``'s completion tokens, each prompt run once.  -> (B, C)"""
        with self._model(policy) as model:
            return prefix_logps(model, batch)


def completion_seed(seed: int, step: int, slot: int, sample: int) -> int:
    """The sampling seed of completion ``sample`` of the step's prompt ``slot``."""
    return (seed * 1_000_003 + step * 10_007 + slot * 101 + sample) % (2**63 - 1)


def by_length(lengths: Sequence[int], groups: int, max_size: int) -> list[list[int]]:
    """Indices sorted by length and cut into at least ``groups`` runs of at most ``max_size``: batches whose
    members have similar lengths, so padding each on its own wastes little."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    count = max(groups, -(-len(order) // max(max_size, 1)))
    size = -(-len(order) // max(count, 1))
    return [order[i:i + size] for i in range(0, len(order), size)] if order else []


def roll_out(policy: Any, generator: RolloutGenerator, settings: GenerationSettings, prompts: Sequence[dict[str,
                                                                                                            Any]], *,
             first_slot: int, samples_per_prompt: int, seed: int, step: int, rewards: Rewards, gold: Rewards | None,
             reference: RolloutReference | None, device: torch.device, pad_id: int, length_groups: int = 4,
             recompute_old: bool = True, share_prompts: bool = False) -> tuple[list[RolloutSample], dict[str, float]]:
    """Sample, score and log-prob this process's prompts (``first_slot``: index of its first in the step's list).

    ``recompute_old``: take the policy's log-probs with a training-layout forward (what several
    updates per rollout need: the ratio is exactly 1 at the first one); otherwise keep the
    sampler's own log-probs of the sampled tokens (a recipe with one update per rollout uses the
    current log-probs, detached, as "old" and these only for the logged KL).
    ``share_prompts``: run each prompt once per log-prob forward (:func:`prefix_logps`) where the
    model allows it.

    Returns ``len(prompts) * samples_per_prompt`` samples, prompt by prompt (a prompt's samples
    adjacent), and this process's timings: ``generation_s``, ``rollout_s`` (generation, rewards
    and log-probs) and ``rollout_tokens_per_s`` (completion tokens sampled per second of generation).
    """
    started = time.perf_counter()
    texts = [p["prompt"] for p in prompts for _ in range(samples_per_prompt)]
    metas = [p for p in prompts for _ in range(samples_per_prompt)]
    seeds = [completion_seed(seed, step, first_slot + i, j) for i in range(len(prompts))
             for j in range(samples_per_prompt)]
    completions = generator.generate(texts, settings, seeds=seeds)
    generation_s = time.perf_counter() - started
    outputs, counts = [c.text for c in completions], [len(c.token_ids) for c in completions]
    reward, terms = rewards(texts, outputs, counts, metas)
    gold_values = gold(texts, outputs, counts, metas)[0].tolist() if gold is not None else [None] * len(texts)
    prompt_ids = generator.encode(texts)
    examples = [TokenizedExample(p + c.token_ids, [False] * len(p) + [True] * len(c.token_ids))
                for p, c in zip(prompt_ids, completions, strict=True)]
    olds: list[Tensor] = [torch.tensor(c.logprobs) for c in completions]
    refs: list[Tensor | None] = [None] * len(examples)
    lengths = [len(e.input_ids) for e in examples]
    if share_prompts and all(prompt_ids) and prefix_sharing_supported(policy):
        for group in prompt_groups(prompt_ids, lengths, length_groups, settings.batch_size):
            batch = prefix_batch([prompt_ids[i] for i in group], [completions[i].token_ids for i in group], pad_id,
                                 device)
            if recompute_old:
                with torch.no_grad():
                    old = prefix_logps(policy, batch).cpu()
            ref = reference.prefix_logps(policy, batch).cpu() if reference is not None else None
            for row, i in enumerate(group):
                c = len(completions[i].token_ids)
                if recompute_old:
                    olds[i] = old[row, :c]
                if ref is not None:
                    refs[i] = ref[row, :c]
    else:
        for group in by_length(lengths, length_groups, settings.batch_size):
            rows = pad_batch([examples[i] for i in group], pad_id, device)
            old = None
            if recompute_old:
                with torch.no_grad():
                    old = completion_logps(policy, rows.input_ids, rows.attention_mask,
                                           rows.loss_mask).token_logps.cpu()
            ref = reference.token_logps(policy, rows).cpu() if reference is not None else None
            for row, i in enumerate(group):
                p, c = len(prompt_ids[i]), len(completions[i].token_ids)
                if old is not None:
                    olds[i] = old[row, p:p + c]
                if ref is not None:
                    refs[i] = ref[row, p:p + c]
    samples = [RolloutSample(prompt_ids=prompt_ids[i], completion_ids=completions[i].token_ids, text=outputs[i],
                      reward=float(reward[i]), terms={k: float(v[i]) for k, v in terms.items()}, gold=gold_values[i],
                      old_logps=olds[i], ref_logps=refs[i], entropy=torch.tensor(completions[i].entropies),
                      truncated=completions[i].finish_reason == "length") for i in range(len(examples))]
    timing = {"generation_s": round(generation_s, 4), "rollout_s": round(time.perf_counter() - started, 4),
              "rollout_tokens_per_s": round(sum(counts) / max(generation_s, 1e-9), 1)}
    return samples, timing


def gather(accelerator: Any, samples: list[RolloutSample]) -> list[RolloutSample]:
    """Every process's samples, in process order, on every process (a no-op for one process)."""
    if accelerator.num_processes == 1:
        return samples
    import torch.distributed as dist

    gathered: list[list[RolloutSample] | None] = [None] * accelerator.num_processes
    dist.all_gather_object(gathered, samples)
    return [s for part in gathered for s in (part or [])]


def collate(samples: Sequence[RolloutSample], pad_id: int, device: torch.device,
            fields: Sequence[str] = ()) -> tuple[TokenBatch, Tensor, dict[str, Tensor]]:
    """Right-padded prompt + completion rows, the completion-token mask, and per-token fields placed at
    the completion's positions: ``old_logps``, ``ref_logps`` (if any), and each ``RolloutSample.extra`` name in
    ``fields``.

    -> rows, mask (B, T) bool, {name: (B, T)}
    """
    rows = pad_batch([TokenizedExample(s.prompt_ids + s.completion_ids,
                                       [False] * len(s.prompt_ids) + [True] * len(s.completion_ids)) for s in samples],
                     pad_id, device)
    shape = rows.input_ids.shape
    names = ["old_logps", *(["ref_logps"] if samples[0].ref_logps is not None else []), *fields]
    out = {name: torch.zeros(shape, dtype=torch.float32) for name in names}
    mask = torch.zeros(shape, dtype=torch.bool)
    for row, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        mask[row, p:p + c] = True
        for name in names:
            value = getattr(s, name) if name in ("old_logps", "ref_logps") else s.extra[name]
            out[name][row, p:p + c] = value
    mask[:, 0] = False  # a first token has no context: never scored (matches completion_logps)
    return rows, mask.to(device), {k: v.to(device) for k, v in out.items()}


def collate_prefix(samples: Sequence[RolloutSample], pad_id: int, device: torch.device,
                   fields: Sequence[str] = ()) -> tuple[PrefixBatch, Tensor, dict[str, Tensor]]:
    """:func:`collate` in the shared-prompt layout (:class:`PrefixBatch`): per-token fields over the
    completion tokens only.  -> batch, mask (B, C) bool, {name: (B, C)}"""
    batch = prefix_batch([s.prompt_ids for s in samples], [s.completion_ids for s in samples], pad_id, device)
    shape = batch.completion_ids.shape
    names = ["old_logps", *(["ref_logps"] if samples[0].ref_logps is not None else []), *fields]
    out = {name: torch.zeros(shape, dtype=torch.float32) for name in names}
    for row, s in enumerate(samples):
        c = len(s.completion_ids)
        for name in names:
            out[name][row, :c] = getattr(s, name) if name in ("old_logps", "ref_logps") else s.extra[name]
    return batch, batch.completion_mask, {k: v.to(device) for k, v in out.items()}


def signals(samples: Sequence[RolloutSample]) -> dict[str, float]:
    """What a rollout step logs and the watchdog reads (means over the step's samples).

    ``kl`` is the summed k1 estimate per completion (nats; its expectation is KL(π || π_ref) of
    the completion distribution, the x-axis of Gao et al.'s plots); ``entropy`` the mean per token.
    """
    n = len(samples)
    out = {"reward": sum(s.reward for s in samples) / n}
    for name in samples[0].terms:
        out[name] = sum(s.terms[name] for s in samples) / n
    if samples[0].gold is not None:
        out["gold_reward"] = sum(float(s.gold or 0.0) for s in samples) / n
    if samples[0].ref_logps is not None:
        out["kl"] = sum(float((s.old_logps - s.ref_logps).sum()) for s in samples if s.ref_logps is not None) / n
    tokens = sum(len(s.completion_ids) for s in samples)
    if all(len(s.entropy) == len(s.completion_ids) for s in samples):  # a backend may not report entropies (vLLM)
        out["entropy"] = sum(float(s.entropy.sum()) for s in samples) / max(tokens, 1)
    out["completion_tokens"] = tokens / n
    out["truncated"] = sum(s.truncated for s in samples) / n
    return {k: round(v, 6) for k, v in out.items()}


def snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the trainable parameters (the LoRA adapters only, under LoRA)."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def restore(model: torch.nn.Module, saved: dict[str, Tensor]) -> None:
    """Put a :func:`snapshot` back."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


class Watch:
    """The watchdog wired to a policy: snapshots the best weights and acts on alarms."""

    def __init__(self, cfg: WatchConfig, model: torch.nn.Module, rewards: Rewards) -> None:
        from tether.train.watchdog import Watchdog

        # The first term that logs a disagreement (a reward-model ensemble) is the one watched.
        disagreement = rewards.signal("disagreement")
        self.cfg, self.model = cfg, model
        self.dog = Watchdog(cfg, disagreement=disagreement)
        self.best: dict[str, Tensor] | None = None
        self.rolled_back_to: int | None = None
        self.stopped = False  # an alarm has stopped the run

    def observe(self, step: int, values: dict[str, float]) -> bool:
        """Read one rollout's signals; True when the run must stop (weights already restored for 'rollback')."""
        verdict = self.dog.observe(step, values)
        if verdict.best and self.cfg.action == "rollback":
            self.best = snapshot(self.model)
        if verdict.alarm is None or self.cfg.action == "log":
            return False
        if self.cfg.action == "rollback" and self.best is not None:
            restore(self.model, self.best)
            self.rolled_back_to = self.dog.best_step
        self.stopped = True
        return True

    def state_dict(self) -> dict[str, Any]:
        """The watchdog's state and the best snapshot (checkpointed with the run; see TrainLoop.track)."""
        return {"dog": self.dog.state_dict(), "best": self.best, "rolled_back_to": self.rolled_back_to,
                "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back a :meth:`state_dict`."""
        self.dog.load_state_dict(state["dog"])
        self.best, self.rolled_back_to, self.stopped = state["best"], state["rolled_back_to"], state["stopped"]

    def summary(self) -> dict[str, Any]:
        """Alarms, the best step and any rollback, for record.json."""
        return {"alarms": [a._asdict() for a in self.dog.alarms], "best_step": self.dog.best_step,
                "rolled_back_to": self.rolled_back_to}
