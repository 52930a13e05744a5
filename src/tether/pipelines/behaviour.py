"""What interpretability experiments share: world hazard items split by hazard, replies graded by gold and
by the refusal detectors, and paired before/after effects with intervals."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tether.core.stats import paired_difference, wilson_interval


def split_hazards(items: Sequence[Any], shares: Sequence[float], seed: int) -> list[list[Any]]:
    """Hazard items grouped by the hazard they ask about, the hazards shuffled and cut by ``shares``: no
    hazard is in two groups, so what is found on one group is measured on hazards it never saw."""
    return split_by(items, lambda it: it.gold["item"], shares, seed)


def split_by(items: Sequence[Any], key: Callable[[Any], str], shares: Sequence[float], seed: int
             ) -> list[list[Any]]:
    """Items grouped by ``key`` (a name), the names shuffled and cut by ``shares``: no name in two groups."""
    names = sorted({key(it) for it in items})
    random.Random(seed).shuffle(names)
    cuts, total, groups = [], 0.0, []
    for share in shares:
        total += share
        cuts.append(round(total * len(names)))
    start = 0
    for cut in cuts:
        chosen = set(names[start:cut])
        groups.append([it for it in items if key(it) in chosen])
        start = cut
    return groups


def distinct(items: Sequence[Any]) -> list[Any]:
    """``items`` without repeated user texts (the first of each kept)."""
    seen: set[str] = set()
    kept = []
    for it in items:
        if it.user_text not in seen:
            seen.add(it.user_text)
            kept.append(it)
    return kept


class Judge:
    """Gold labels and the detectors' refusal verdicts for replies."""

    def __init__(self, learned: bool) -> None:
        from tether.scoring.refusal import PhraseDetector, RefusalDetector

        self.phrases = PhraseDetector()
        self.learned = RefusalDetector.load() if learned else None

    def grade(self, items: Sequence[Any], replies: Sequence[str]) -> list[dict[str, Any]]:
        """Per reply: the reply, its gold label and each detector's refusal verdict."""
        from tether.world.grader import grade

        learned = self.learned.refuses(list(replies)) if self.learned is not None and replies else [None] * len(replies)
        return [{"label": grade(it, reply).label, "reply": reply, "phrase_refusal": self.phrases.refuses(reply),
                 "learned_refusal": flag} for it, reply, flag in zip(items, replies, learned, strict=True)]


@torch.no_grad()
def next_token_logprobs(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """Log-probabilities of the token after each text (texts × vocabulary)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    rows = []
    try:
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(list(texts[start:start + batch_size]), return_tensors="pt", padding=True)
            logits = model(**encoded.to(model.device)).logits.float()
            last = encoded["attention_mask"].sum(1) - 1
            rows.append(torch.log_softmax(logits[torch.arange(len(last)), last], -1).cpu())
    finally:
        tokenizer.padding_side = side
    return torch.cat(rows)


def share(rows: Sequence[dict[str, Any]], label: str) -> float:
    """The share of graded rows with gold ``label``."""
    return share_if(rows, lambda g: g["label"] == label)


def share_if(rows: Sequence[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> float:
    """The share of graded rows that pass ``test``."""
    return round(sum(map(test, rows)) / len(rows), 4) if rows else float("nan")


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Gold labels counted."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return dict(sorted(counts.items()))


def rate(rows: Sequence[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> dict[str, float]:
    """The share that passes ``test`` with its Wilson interval."""
    return wilson_interval(sum(map(test, rows)), len(rows)).as_dict()


def effect(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]],
            test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Rates before and after on the same prompts, and the paired change with its interval."""
    a, b = [[float(test(g))] for g in before], [[float(test(g))] for g in after]
    paired = paired_difference(a, b)
    return {"before": share_if(before, test), "after": share_if(after, test),
            "before_rate": rate(before, test), "after_rate": rate(after, test),
            "change": round(paired.diff, 4), "ci_low": round(paired.ci_low, 4), "ci_high": round(paired.ci_high, 4),
            "p": paired.p_value, "method": paired.method, "n": paired.n}
