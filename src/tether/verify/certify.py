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
    ``slots`` (see the module); None where it cannot be bounded here: a swap changes tokens outside its own word
    (so swaps would not add up), or a swapped text could be read in more than one window."""
    tokenizer, vectors, idf = model.tokenizer, model.vectors, model.idf

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def mass(tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor(tokens, dtype=torch.long)
        if not tokens:
            return torch.zeros(vectors.shape[1]), torch.zeros(())
        return (vectors[index] * idf[index][:, None]).sum(0), idf[index].sum()

    base = ids(slots.text())
    total = len(base)
    num, den = mass(base)
    claimed: list[tuple[int, int]] = []  # the base tokens each word's swaps change: they must not overlap
    d_num_lo, d_num_hi, d_den_lo, d_den_hi, extra = [], [], [], [], []
    for position, options in enumerate(slots.options):
        if not options:
            continue
        changes, lo_tok, hi_tok, longest = [], len(base), 0, 0
        for option in options:
            new = ids(slots.text({position: option}))
            p = 0
            while p < min(len(base), len(new)) and base[p] == new[p]:
                p += 1
            q = 0
            while q < min(len(base), len(new)) - p and base[-1 - q] == new[-1 - q]:
                q += 1
            old_part, new_part = base[p:len(base) - q], new[p:len(new) - q]
            before, after = mass(old_part), mass(new_part)
            changes.append((after[0] - before[0], after[1] - before[1]))
            if old_part or new_part:  # a swap the tokenizer does not see (case, for an uncased one) claims nothing
                lo_tok, hi_tok = min(lo_tok, p), max(hi_tok, len(base) - q)
            longest = max(longest, len(new_part) - len(old_part))
        if lo_tok < hi_tok and any(lo_tok < b and a < hi_tok for a, b in claimed):
            return None  # two words' swaps touch the same token: their changes would not add up
        if lo_tok < hi_tok:
            claimed.append((lo_tok, hi_tok))
        n = torch.stack([c[0] for c in changes])
        d = torch.stack([c[1] for c in changes])
        d_num_lo.append(n.min(0).values.clamp(max=0))
        d_num_hi.append(n.max(0).values.clamp(min=0))
        d_den_lo.append(d.min().clamp(max=0))
        d_den_hi.append(d.max().clamp(min=0))
        extra.append(max(0, longest))
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
    return unit_box(mean_lo, mean_hi)


def unit_box(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A box holding ``m / |m|`` for every ``m`` in ``[lower, upper]`` (None when ``m`` may be 0). Coordinate
    i is ``m_i / sqrt(m_i^2 + R)`` with ``R`` the other coordinates' squared sum: increasing in ``m_i``, and in
    ``R`` decreasing where ``m_i > 0``, increasing where ``m_i < 0``; so its extremes are at ``m_i``'s ends with
    ``R`` at whichever of its own ends the sign of ``m_i`` says."""
    straddle = (lower <= 0) & (upper >= 0)
    sq_lo = torch.where(straddle, torch.zeros_like(lower), torch.minimum(lower.square(), upper.square()))
    sq_hi = torch.maximum(lower.square(), upper.square())
    if sq_lo.sum() <= 0:
        return None
    r_lo, r_hi = sq_lo.sum() - sq_lo, sq_hi.sum() - sq_hi

    def ratio(m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        denominator = (m.square() + r).sqrt()
        return torch.where(denominator > 0, m / denominator.clamp(min=1e-30), torch.sign(m))

    high = torch.where(upper > 0, ratio(upper, r_lo), ratio(upper, r_hi))
    low = torch.where(lower < 0, ratio(lower, r_lo), ratio(lower, r_hi))
    return low.clamp(-1, 1), high.clamp(-1, 1)


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
