"""Certified accuracy of a guard's head, beside the accuracy an attack leaves: in feature space (every vector within
epsilon, L-infinity, of the text's) and over word substitutions (every text within a budget of swaps).

A row is *certified* when the bound says its decision is right everywhere in the set; *held* when the attack
found no point of the set where it is wrong. Certified accuracy is a lower bound on robust accuracy and the
attack's an upper one, so a certified row the attack broke would be a wrong certificate: :func:`feature_curve`
and :func:`substitution_curve` raise :class:`CertificateError` if it ever happens.

Over substitutions, the ``static`` guard (IDF-weighted mean of static token vectors, normalised) is bounded
exactly as it computes: each swap changes the weighted sum and the total weight by amounts known per word and
substitute; with at most k swaps, each coordinate's sum and the total weight lie in intervals (the k largest
changes each way), so the mean and then its unit-length version lie in a box (:func:`static_box`), which CROWN
bounds through the head. For the ``embedding`` guard (a transformer encoder), no such box is tractable here; a
budget of one swap is certified exactly by trying every swap (:func:`substitution_curve` says which it did).
Certificates are of the model's own read of the text; a guard that also scores decoded readings
(``read_encodings``) takes the worse score, which no certificate here covers for safe texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from tether.core.stats import wilson_interval
from tether.verify.bounds import certified, crown, ibp, linf_box, pgd_linf
from tether.verify.substitutions import Slots, swaps_to_flip


class CertificateError(AssertionError):
    """A row certified robust was broken by an attack: the certificate is wrong (a bug, never expected)."""


def _rate(mask: torch.Tensor) -> dict[str, float | int]:
    return wilson_interval(int(mask.sum()), int(mask.numel())).as_dict()


def feature_curve(layers: Sequence[torch.nn.Module], features: torch.Tensor, labels: torch.Tensor, threshold: float,
                  epsilons: Sequence[float], *, attack_steps: int = 40) -> list[dict[str, Any]]:
    """Per epsilon: clean accuracy, certified accuracy by IBP and by CROWN, accuracy under a PGD attack (each with
    a Wilson interval); ``threshold`` is the decision threshold on the logit.

    Raises:
        CertificateError: a certified row was broken by the attack.
    """
    with torch.no_grad():
        clean = (torch.nn.Sequential(*layers)(features).squeeze(-1) >= threshold) == labels.bool()
    out = []
    for epsilon in epsilons:
        box = linf_box(features, epsilon)
        with torch.no_grad():
            by_ibp = certified(*ibp(layers, *box), labels, threshold)
            by_crown = certified(*crown(layers, *box), labels, threshold)
        held = pgd_linf(layers, features, labels, epsilon, threshold, steps=attack_steps)
        broken = (by_crown | by_ibp) & ~held
        if broken.any():
            raise CertificateError(f"epsilon {epsilon}: {int(broken.sum())} certified rows broken by the attack")
        out.append({"epsilon": epsilon, "clean": _rate(clean), "certified_ibp": _rate(by_ibp),
                    "certified_crown": _rate(by_crown), "empirical": _rate(held)})
    return out


def static_box(model: Any, slots: Slots, budget: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A box holding the ``static`` model's pooled, normalised vector of every text within ``budget`` swaps of
    ``slots`` (see the module); None where it cannot be bounded here: the text's tokens are not its words' tokens
    laid end to end, or a swapped text could be read in more than one window."""
    tokenizer, vectors, idf = model.tokenizer, model.vectors, model.idf

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    words = [ids(w) for w in slots.words]
    if [t for w in words for t in w] != ids(slots.text()):
        return None

    def mass(tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor(tokens, dtype=torch.long)
        if not tokens:
            return torch.zeros(vectors.shape[1]), torch.zeros(())
        return (vectors[index] * idf[index][:, None]).sum(0), idf[index].sum()

    total = sum(len(w) for w in words)
    num, den = mass([t for w in words for t in w])
    d_num_lo, d_num_hi, d_den_lo, d_den_hi, extra = [], [], [], [], []
    for word, options in zip(words, slots.options, strict=True):
        if not options:
            continue
        base_num, base_den = mass(word)
        swapped = [ids(s) for s in options]
        changes = [mass(s) for s in swapped]
        n = torch.stack([c[0] - base_num for c in changes])
        d = torch.stack([c[1] - base_den for c in changes])
        d_num_lo.append(n.min(0).values.clamp(max=0))
        d_num_hi.append(n.max(0).values.clamp(min=0))
        d_den_lo.append(d.min().clamp(max=0))
        d_den_hi.append(d.max().clamp(min=0))
        extra.append(max(0, max(len(s) for s in swapped) - len(word)))
    k = min(budget, len(d_num_lo))
    if total + sum(sorted(extra, reverse=True)[:k]) > model.max_tokens:
        return None
    if k:
        num_lo = num + torch.stack(d_num_lo).topk(k, dim=0, largest=False).values.sum(0)
        num_hi = num + torch.stack(d_num_hi).topk(k, dim=0).values.sum(0)
        den_lo = den + torch.stack(d_den_lo).topk(k, largest=False).values.sum()
        den_hi = den + torch.stack(d_den_hi).topk(k).values.sum()
    else:
        num_lo = num_hi = num
        den_lo = den_hi = den
    if den_lo <= 0:
        return None
    corners = torch.stack([num_lo / den_lo, num_lo / den_hi, num_hi / den_lo, num_hi / den_hi])
    mean_lo, mean_hi = corners.min(0).values, corners.max(0).values
    straddle = (mean_lo <= 0) & (mean_hi >= 0)
    norm_lo = torch.where(straddle, torch.zeros_like(mean_lo), torch.minimum(mean_lo.abs(), mean_hi.abs())).norm()
    norm_hi = torch.maximum(mean_lo.abs(), mean_hi.abs()).norm()
    if norm_lo <= 0:
        return None
    parts = torch.stack([mean_lo / norm_lo, mean_lo / norm_hi, mean_hi / norm_lo, mean_hi / norm_hi])
    return parts.min(0).values.clamp(-1, 1), parts.max(0).values.clamp(-1, 1)


def substitution_curve(rows: Sequence[tuple[str, bool]], logit: Callable[[list[str]], list[float]],
                       threshold: float, budgets: Sequence[int], *, layers: Sequence[torch.nn.Module] | None = None,
                       box: Callable[[Slots, int], tuple[torch.Tensor, torch.Tensor] | None] | None = None,
                       synonyms: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Per budget: accuracy under the greedy swap attack (``logit``: texts -> logits), and certified accuracy:
    through ``box`` and CROWN on ``layers`` where given (the static guard), else by trying every single swap
    (budget 1 only; larger budgets are left uncertified, said as ``certified: null``).

    Raises:
        CertificateError: a certified row was broken by the attack.
    """
    slots = [Slots.of(text, synonyms) for text, _ in rows]
    labels = [label for _, label in rows]
    # One greedy search per row to the largest budget answers every smaller one (its rounds are nested).
    flips = [swaps_to_flip(slot, logit, label=label, threshold=threshold, budget=max(budgets, default=0))[0]
             for slot, label in zip(slots, labels, strict=True)]
    out = []
    for budget in budgets:
        held = [flip is None or flip > budget for flip in flips]
        sure: list[bool] = []
        method = "box+crown" if box is not None else ("enumeration" if budget <= 1 else None)
        for slot, label, kept in zip(slots, labels, held, strict=True):
            if box is not None and layers is not None:
                bounds = box(slot, budget)
                if bounds is None:
                    sure.append(False)
                    continue
                with torch.no_grad():
                    lo, hi = crown(layers, bounds[0][None], bounds[1][None])
                sure.append(bool(certified(lo, hi, torch.tensor([float(label)]), threshold)[0]))
            elif method == "enumeration":
                sure.append(kept)  # budget <= 1: the search tried every swap, so holding is a proof
        held_t = torch.tensor(held)
        entry: dict[str, Any] = {"budget": budget, "empirical": _rate(held_t), "method": method,
                                 "swaps_per_text": round(sum(s.count() for s in slots) / max(1, len(slots)), 2)}
        if method is not None:
            sure_t = torch.tensor(sure)
            if (sure_t & ~held_t).any():
                raise CertificateError(f"budget {budget}: {int((sure_t & ~held_t).sum())} certified rows broken")
            entry["certified"] = _rate(sure_t)
        else:
            entry["certified"] = None
        out.append(entry)
    return out
