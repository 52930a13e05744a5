"""Which input tokens and which internal places a model's answer depends on.

- :func:`token_attributions`: per prompt token, how much it contributes to the log-probability of a target
  continuation: ``gradient × input`` (one backward pass) or ``integrated gradients`` (Sundararajan et al.
  2017: the gradient averaged along a straight path from a baseline embedding to the input, times the
  difference; the attributions sum to the score's change from baseline to input, which the tests check).
- :func:`patching_sweep`: activation patching between a clean and a corrupted prompt of the same length: for
  each layer and position, the corrupted run with that one site value taken from the clean run, and how
  much of the clean score it restores (0: none, 1: all).
- :func:`attribution_patching`: the same sweep's first-order estimate from one forward and one backward
  pass (Nanda 2023): ``(clean − corrupted) · ∂score/∂activation`` at the corrupted run.

The score is a log-probability of a ``target`` continuation, or its difference from a ``foil``'s (a logit
difference, the usual patching metric when the two answers are single tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from tether.interp.sites import decoder_layers, hooked


def _ids(tokenizer: Any, text: str, device: torch.device) -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=device)


def _continuation_logprob(logits: torch.Tensor, prompt_len: int, continuation: torch.Tensor) -> torch.Tensor:
    """Sum of log p(continuation tokens) from ``logits`` over prompt + continuation (batch 1)."""
    logp = torch.log_softmax(logits[0, prompt_len - 1:-1].float(), -1)
    return logp.gather(-1, continuation[0].unsqueeze(-1)).sum()


@dataclass
class Scorer:
    """What is measured: log p(``target``) after the prompt, minus log p(``foil``) when one is given."""

    target: str
    foil: str | None = None

    def __call__(self, model: Any, tokenizer: Any, prompt_ids: torch.Tensor, *,
                 inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The score for ``prompt_ids`` (or their embeddings, for gradients with respect to the input)."""
        total = self._one(model, tokenizer, prompt_ids, self.target, inputs_embeds)
        if self.foil is not None:
            total = total - self._one(model, tokenizer, prompt_ids, self.foil, inputs_embeds)
        return total

    @staticmethod
    def _one(model: Any, tokenizer: Any, prompt_ids: torch.Tensor, text: str,
             inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        continuation = _ids(tokenizer, text, prompt_ids.device)
        embed = model.get_input_embeddings()
        prompt = embed(prompt_ids) if inputs_embeds is None else inputs_embeds
        full = torch.cat([prompt, embed(continuation)], 1)
        logits = model(inputs_embeds=full).logits
        return _continuation_logprob(logits, prompt_ids.shape[1], continuation)


def token_attributions(model: Any, tokenizer: Any, prompt: str, scorer: Scorer, *,
                       method: Literal["grad_x_input", "integrated_gradients"] = "integrated_gradients",
                       steps: int = 32, baseline: str = " ") -> dict[str, Any]:
    """Per prompt token, its attribution to ``scorer``'s score (summed over the embedding), with the tokens
    and, for integrated gradients, the completeness check: the attributions' sum beside the score's change
    from the baseline to the prompt. The baseline is every token replaced by ``baseline``'s first token (a
    space by default). Not zeros, nor the padding token (whose embedding is often zero): the first norm of
    most models is blind to scale, so along a path from zero the score jumps in a sliver near the start
    that no reasonable number of steps samples, and the attributions would not add up."""
    device = next(model.parameters()).device
    ids = _ids(tokenizer, prompt, device)
    x = model.get_input_embeddings()(ids).detach()
    if method == "grad_x_input":
        point = x.clone().requires_grad_(True)
        score = scorer(model, tokenizer, ids, inputs_embeds=point)
        (grad,) = torch.autograd.grad(score, point)
        values = (grad * x).sum(-1)[0]
        extra: dict[str, Any] = {"score": float(score.detach())}
    elif method == "integrated_gradients":
        neutral = tokenizer(baseline, add_special_tokens=False)["input_ids"]
        if not neutral:
            raise ValueError(f"baseline {baseline!r} is no token")
        start = model.get_input_embeddings()(torch.full_like(ids, neutral[0])).detach()
        total = torch.zeros_like(x)
        for step in range(steps):  # the midpoint rule along the path
            alpha = (step + 0.5) / steps
            point = (start + alpha * (x - start)).requires_grad_(True)
            (grad,) = torch.autograd.grad(scorer(model, tokenizer, ids, inputs_embeds=point), point)
            total += grad
        values = ((x - start) * total / steps).sum(-1)[0]
        with torch.no_grad():
            at_input = float(scorer(model, tokenizer, ids, inputs_embeds=x))
            at_baseline = float(scorer(model, tokenizer, ids, inputs_embeds=start))
        extra = {"baseline": baseline, "score": at_input, "baseline_score": at_baseline, "sum": float(values.sum()),
                 "completeness_gap": abs(float(values.sum()) - (at_input - at_baseline))}
    else:
        raise ValueError(f"method {method!r}: expected grad_x_input or integrated_gradients")
    tokens = [tokenizer.decode([int(t)]) for t in ids[0]]
    return {"method": method, "tokens": tokens, "attributions": [round(float(v), 6) for v in values], **extra}


def _same_length(tokenizer: Any, clean: str, corrupted: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _ids(tokenizer, clean, device), _ids(tokenizer, corrupted, device)
    if a.shape != b.shape:
        raise ValueError(f"clean and corrupted prompts must have the same number of tokens ({a.shape[1]} and "
                         f"{b.shape[1]}): patching swaps values position by position")
    return a, b


def _clean_run(model: Any, tokenizer: Any, clean_ids: torch.Tensor, scorer: Scorer, names: Sequence[str]
               ) -> tuple[float, dict[str, torch.Tensor]]:
    """The clean prompt's score and each site's values at the prompt's positions (the continuation follows
    them; with causal attention they are the same in the target's and the foil's pass)."""
    length = clean_ids.shape[1]
    stored: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def read(value: torch.Tensor) -> None:
            stored.setdefault(name, value[:, :length].detach().clone())
        return read

    with hooked(model, {name: keep(name) for name in names}):
        score = float(scorer(model, tokenizer, clean_ids).detach())
    return score, stored


def _both_runs(model: Any, tokenizer: Any, clean: str, corrupted: str, scorer: Scorer, names: Sequence[str]
               ) -> tuple[torch.Tensor, torch.Tensor, float, float, dict[str, torch.Tensor]]:
    """A patching run's start: both prompts' ids, both scores, and the clean run's values at ``names``."""
    clean_ids, corrupt_ids = _same_length(tokenizer, clean, corrupted, next(model.parameters()).device)
    clean_score, stored = _clean_run(model, tokenizer, clean_ids, scorer, names)
    return clean_ids, corrupt_ids, clean_score, float(scorer(model, tokenizer, corrupt_ids)), stored


@torch.no_grad()
def patching_sweep(model: Any, tokenizer: Any, clean: str, corrupted: str, scorer: Scorer, *,
                   kind: str = "resid_pre", layers: Sequence[int] | None = None) -> dict[str, Any]:
    """Activation patching at ``kind.L`` for every layer and position: the share of the clean-vs-corrupted
    score difference restored by that one value (``restored[layer][position]``)."""
    layers = list(range(len(decoder_layers(model)))) if layers is None else list(layers)
    clean_ids, corrupt_ids, clean_score, corrupt_score, stored = _both_runs(
        model, tokenizer, clean, corrupted, scorer, [f"{kind}.{layer}" for layer in layers])
    length, gap = clean_ids.shape[1], clean_score - corrupt_score
    restored = []
    for layer in layers:
        row = []
        for position in range(length):
            value = stored[f"{kind}.{layer}"]

            def patch(current: torch.Tensor, value: torch.Tensor = value, position: int = position) -> torch.Tensor:
                edited = current.clone()
                edited[:, position] = value[:, position].to(current.dtype)
                return edited
            with hooked(model, {f"{kind}.{layer}": patch}):
                patched = float(scorer(model, tokenizer, corrupt_ids))
            row.append(round((patched - corrupt_score) / gap, 5) if gap else 0.0)
        restored.append(row)
    return {"kind": kind, "layers": layers, "tokens_clean": [tokenizer.decode([int(t)]) for t in clean_ids[0]],
            "tokens_corrupted": [tokenizer.decode([int(t)]) for t in corrupt_ids[0]], "clean_score": clean_score,
            "corrupted_score": corrupt_score, "restored": restored}


@torch.no_grad()
def head_patching(model: Any, tokenizer: Any, clean: str, corrupted: str, scorer: Scorer, *,
                  layers: Sequence[int] | None = None) -> dict[str, Any]:
    """Activation patching per attention head: head h of layer L takes its clean output at every prompt
    position (its slice of ``attn_heads.L``) in the corrupted run; ``restored[layer][head]`` is the share of
    the clean-vs-corrupted score difference that restores."""
    from tether.interp.sites import head_count

    layers = list(range(len(decoder_layers(model)))) if layers is None else list(layers)
    heads = head_count(model)
    clean_ids, corrupt_ids, clean_score, corrupt_score, stored = _both_runs(
        model, tokenizer, clean, corrupted, scorer, [f"attn_heads.{layer}" for layer in layers])
    length, gap = clean_ids.shape[1], clean_score - corrupt_score
    restored = []
    for layer in layers:
        value = stored[f"attn_heads.{layer}"]
        d = value.shape[-1] // heads
        row = []
        for head in range(heads):
            def patch(current: torch.Tensor, value: torch.Tensor = value, cols: slice = slice(head * d, (head + 1) * d)
                      ) -> torch.Tensor:
                edited = current.clone()
                edited[:, :length, cols] = value[:, :, cols].to(current.dtype)
                return edited
            with hooked(model, {f"attn_heads.{layer}": patch}):
                patched = float(scorer(model, tokenizer, corrupt_ids))
            row.append(round((patched - corrupt_score) / gap, 5) if gap else 0.0)
        restored.append(row)
    return {"kind": "attn_heads", "layers": layers, "heads": heads, "clean_score": clean_score,
            "corrupted_score": corrupt_score, "restored": restored}


def attribution_patching(model: Any, tokenizer: Any, clean: str, corrupted: str, scorer: Scorer, *,
                         kind: str = "resid_pre", layers: Sequence[int] | None = None) -> dict[str, Any]:
    """The first-order estimate of :func:`patching_sweep`: ``(clean − corrupted) · gradient`` at each site
    value of the corrupted run, as a share of the clean-vs-corrupted score difference."""
    device = next(model.parameters()).device
    clean_ids, corrupt_ids = _same_length(tokenizer, clean, corrupted, device)
    layers = list(range(len(decoder_layers(model)))) if layers is None else list(layers)
    length = clean_ids.shape[1]
    names = [f"{kind}.{layer}" for layer in layers]
    with torch.no_grad():
        clean_score, clean_values = _clean_run(model, tokenizer, clean_ids, scorer, names)
    corrupt_values: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def track(name: str) -> Any:
        def read(value: torch.Tensor) -> None:
            if value.requires_grad:
                value.retain_grad()
                corrupt_values[name].append(value)  # one per pass: the target's, and the foil's if any
        return read

    with hooked(model, {n: track(n) for n in names}):
        embeds = model.get_input_embeddings()(corrupt_ids).detach().requires_grad_(True)
        score = scorer(model, tokenizer, corrupt_ids, inputs_embeds=embeds)
        score.backward()
    gap = clean_score - float(score.detach())
    estimate = []
    for name in names:
        effect = torch.zeros(length, device=device)
        for value in corrupt_values[name]:
            assert value.grad is not None
            effect += ((clean_values[name] - value[:, :length].detach()) * value.grad[:, :length]).sum(-1)[0]
        estimate.append([round(float(e) / gap, 5) if gap else 0.0 for e in effect])
    model.zero_grad(set_to_none=True)
    return {"kind": kind, "layers": layers, "clean_score": clean_score, "corrupted_score": float(score.detach()),
            "restored": estimate}
