"""Greedy coordinate gradient (GCG; Zou et al. 2023, "Universal and transferable adversarial attacks on
aligned language models"): search for an adversarial suffix on open weights.

The prompt is the chat-rendered request with ``length`` suffix tokens after it; the loss is the
cross-entropy of a *target* opening (``Sure. To make the ...``) as the assistant's reply. Each step:

1. the gradient of the loss with respect to the suffix's one-hot token matrix (through the embedding
   matrix) ranks, at every suffix position, the ``top_k`` tokens whose substitution most lowers the
   linearised loss (:func:`token_gradients`);
2. ``candidates`` suffixes are drawn, each changing one uniformly chosen position to a uniformly chosen
   token of that position's top-k (:func:`sample_candidates`);
3. every candidate's exact loss is computed in one batched forward pass (:func:`target_losses`) and the
   best replaces the current suffix.

Only tokens that survive a decode -> encode round trip are used (the attack is sent as text, so the
suffix the target reads is the suffix that was optimised), and special tokens never are. The search
keeps the best suffix seen; it stops early once the target is the model's greedy continuation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from tether.models.chat import prompt_text
from tether.redteam.attacks import (
    ATTACKS,
    Attack,
    AttackConfig,
    AttackKit,
    AttackPrompt,
    Goal,
    TemplateAttack,
)

SUFFIX_MARKER = "\x00SUFFIX\x00"


@ATTACKS.register("gcg")
class GCGConfig(AttackConfig):
    """A GCG attack: one suffix optimised per goal on the target's own weights."""

    kind: Literal["gcg"] = "gcg"
    template: str = Field("direct", description="a template from the library the suffix goes after")
    steps: int = Field(100, ge=1, description="optimisation steps per goal")
    length: int = Field(12, ge=1, description="suffix tokens")
    top_k: int = Field(64, ge=1, description="candidate tokens per position from the gradient")
    candidates: int = Field(128, ge=1, description="suffixes evaluated per step")
    target: str = Field("Sure, here is", description="the reply opening optimised for, when the goal has none of its "
                        "own (world goals and AdvBench rows do); may use {request} and {subject}")
    init: str = Field("!", description="the suffix starts as this token repeated")

    @property
    def label(self) -> str:
        """The attack's name in results."""
        return self.name or ("gcg" if self.template == "direct" else f"{self.template}+gcg")

    def build(self) -> Attack:
        """A :class:`GCGAttack`."""
        return GCGAttack(self)


@dataclass
class GCGResult:
    """The best suffix found for one goal and how the search went."""

    suffix_ids: list[int]
    suffix: str
    loss: float
    initial_loss: float
    steps: int
    reached_target: bool


def token_gradients(model: Any, ids: Tensor, suffix: slice, target: slice) -> Tensor:
    """d loss / d one-hot(suffix tokens): ``(len(suffix), vocab)``, for the target loss of one sequence."""
    embeddings = model.get_input_embeddings().weight
    one_hot = torch.zeros(suffix.stop - suffix.start, embeddings.shape[0], dtype=embeddings.dtype,
                          device=embeddings.device)
    one_hot.scatter_(1, ids[suffix].unsqueeze(1), 1.0)
    one_hot.requires_grad_(True)
    embeds = model.get_input_embeddings()(ids.unsqueeze(0)).detach()
    embeds = torch.cat([embeds[:, :suffix.start], (one_hot @ embeddings).unsqueeze(0), embeds[:, suffix.stop:]], 1)
    logits = model(inputs_embeds=embeds).logits[0]
    loss = torch.nn.functional.cross_entropy(logits[target.start - 1:target.stop - 1], ids[target])
    (grad,) = torch.autograd.grad(loss, one_hot)
    return grad


def sample_candidates(grad: Tensor, current: Tensor, *, top_k: int, n: int, allowed: Tensor,
                      generator: torch.Generator) -> Tensor:
    """``n`` suffixes, each ``current`` with one position swapped for one of its top-k tokens by -gradient.

    ``allowed`` (bool, vocab) masks tokens that may appear; positions are drawn uniformly, tokens uniformly
    from the position's top-k.
    """
    scores = (-grad).masked_fill(~allowed, float("-inf"))
    top = scores.topk(top_k, dim=1).indices                                     # (length, top_k)
    positions = torch.randint(0, current.numel(), (n,), generator=generator, device=current.device)
    picks = torch.randint(0, top_k, (n,), generator=generator, device=current.device)
    out = current.unsqueeze(0).repeat(n, 1)
    out[torch.arange(n), positions] = top[positions, picks]
    return out


@torch.no_grad()
def target_losses(model: Any, ids: Tensor, suffix: slice, target: slice, candidates: Tensor,
                  batch_size: int = 64) -> Tensor:
    """The target loss of ``ids`` with each candidate suffix in place: ``(n,)``."""
    out = []
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start:start + batch_size]
        batch = ids.unsqueeze(0).repeat(len(chunk), 1)
        batch[:, suffix] = chunk
        logits = model(input_ids=batch).logits[:, target.start - 1:target.stop - 1]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, target], reduction="none")
        out.append(losses.mean(dim=1))
    return torch.cat(out)


def allowed_tokens(tokenizer: Any, vocab: int) -> Tensor:
    """Tokens a suffix may use: not special, and decoded then re-encoded to themselves."""
    allowed = torch.zeros(vocab, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for token in range(min(vocab, len(tokenizer))):
        if token in special:
            continue
        text = tokenizer.decode([token])
        allowed[token] = bool(text.strip()) and text.isprintable() and \
            tokenizer.encode(text, add_special_tokens=False) == [token]
    return allowed


def layout(tokenizer: Any, prompt: Sequence[dict[str, str]], suffix_ids: list[int], target: str) -> tuple[Tensor,
                                                                                                          slice, slice]:
    """Token ids of the prompt with the suffix after its last user turn, then the target; and the slices of
    the suffix and the target in them."""
    messages = [dict(m) for m in prompt]
    messages[-1] = {**messages[-1], "content": messages[-1]["content"] + SUFFIX_MARKER}
    before, after = prompt_text(tokenizer, messages).split(SUFFIX_MARKER)
    encode = lambda text: list(tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    head, tail, goal = encode(before), encode(after), encode(target)
    ids = torch.tensor(head + suffix_ids + tail + goal)
    suffix = slice(len(head), len(head) + len(suffix_ids))
    target_slice = slice(suffix.stop + len(tail), len(ids))
    return ids, suffix, target_slice


def gcg(model: Any, tokenizer: Any, prompt: Sequence[dict[str, str]], target: str, cfg: GCGConfig, *,
        allowed: Tensor, seed: int = 0) -> GCGResult:
    """Optimise a suffix for one prompt (see the module docstring)."""
    device = next(model.parameters()).device
    init = tokenizer.encode(" " + cfg.init, add_special_tokens=False)[-1:] or [int(allowed.nonzero()[0])]
    ids, suffix, target_slice = layout(tokenizer, prompt, init * cfg.length, target)
    ids = ids.to(device)
    allowed = allowed.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    current = ids[suffix].clone()
    best_loss = initial = float(target_losses(model, ids, suffix, target_slice, current.unsqueeze(0))[0])
    best = current.clone()
    steps = 0
    reached = _greedy_hits(model, ids, suffix, target_slice, current)
    was_training = model.training
    model.eval()
    try:
        while steps < cfg.steps and not reached:
            steps += 1
            ids[suffix] = current
            grad = token_gradients(model, ids, suffix, target_slice)
            candidates = sample_candidates(grad, current, top_k=min(cfg.top_k, int(allowed.sum())), n=cfg.candidates,
                                           allowed=allowed, generator=generator)
            losses = target_losses(model, ids, suffix, target_slice, candidates)
            pick = int(losses.argmin())
            current = candidates[pick]
            if float(losses[pick]) < best_loss:
                best_loss, best = float(losses[pick]), current.clone()
                reached = _greedy_hits(model, ids, suffix, target_slice, best)
    finally:
        model.train(was_training)
    suffix_ids = best.tolist()
    return GCGResult(suffix_ids, tokenizer.decode(suffix_ids), best_loss, initial, steps, reached)


@torch.no_grad()
def _greedy_hits(model: Any, ids: Tensor, suffix: slice, target: slice, candidate: Tensor) -> bool:
    # Teacher-forced argmax equals the target at every position <=> greedy decoding writes the target.
    seq = ids.clone()
    seq[suffix] = candidate
    logits = model(input_ids=seq.unsqueeze(0)).logits[0, target.start - 1:target.stop - 1]
    return bool((logits.argmax(-1) == seq[target]).all())


class GCGAttack:
    """The template's prompts, each with a suffix searched on the target's weights (cached in ``gcg.jsonl``
    as it goes, so a resumed run searches only the goals it had not reached)."""

    needs_weights = True

    def __init__(self, cfg: GCGConfig) -> None:
        self.cfg, self.name = cfg, cfg.label
        self._raw = TemplateAttack(self.name, cfg.template, (), attempts=1, sigma=None)

    def prompts(self, goals: Sequence[Goal], kit: AttackKit) -> list[AttackPrompt]:
        """The template around each raw request; the suffixes come in :meth:`adapt`."""
        return self._raw.prompts(goals, kit)

    def adapt(self, prompts: list[AttackPrompt], target: Any, cache: Path, *, seed: int
              ) -> tuple[list[AttackPrompt], dict[str, Any]]:
        """Each prompt with its optimised suffix; ``target``: an in-process generator (its model and tokenizer)."""
        found: dict[str, dict[str, Any]] = {}
        if cache.is_file():
            for line in cache.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row["kind"] == self.name:
                        found[row["goal"]] = row
        model, tokenizer = target.model, target.tokenizer
        allowed: Tensor | None = None
        out = []
        with cache.open("a", encoding="utf-8") as fh:
            for p in prompts:
                messages = [{"role": "user", "content": p.prompt}] if isinstance(p.prompt, str) else list(p.prompt)
                if p.goal.id not in found:
                    if allowed is None:
                        allowed = allowed_tokens(tokenizer, int(model.get_input_embeddings().weight.shape[0]))
                    goal_target = str(p.goal.meta.get("target") or self.cfg.target.format(
                        subject=p.goal.subject, request=p.goal.request))
                    start = time.perf_counter()
                    result = gcg(model, tokenizer, messages, goal_target, self.cfg, allowed=allowed,
                                 seed=seed * 1_000_003 + len(found))
                    row = {"kind": self.name, "goal": p.goal.id, "target": goal_target, "suffix": result.suffix,
                           "suffix_ids": result.suffix_ids, "initial_loss": round(result.initial_loss, 4),
                           "loss": round(result.loss, 4), "steps": result.steps,
                           "reached_target": result.reached_target,
                           "seconds": round(time.perf_counter() - start, 2)}
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
                    found[p.goal.id] = row
                messages[-1] = {**messages[-1], "content": messages[-1]["content"] + found[p.goal.id]["suffix"]}
                out.append(replace(p, prompt=messages))
        rows = list(found.values())
        if not rows:
            return out, {}

        def mean(key: str, digits: int = 4) -> float:
            return round(sum(float(r[key]) for r in rows) / len(rows), digits)

        return out, {"goals": len(rows), "reached_target": mean("reached_target"), "initial_loss": mean("initial_loss"),
                     "loss": mean("loss"), "steps": mean("steps", 2), "seconds_per_goal": mean("seconds", 2)}
