"""Data curation: near-duplicate removal, decontamination against evaluation sets, and what a cut on a
scorer's values would keep.

Both work on what a row gives a model to read (:func:`row_text`: every message's content, prompts,
completions, chosen and rejected replies), normalised to lower-case words (:func:`words`), so a change of
case, punctuation or spacing hides nothing.

- **Near duplicates** (:func:`near_duplicates`): rows whose sets of word ``shingle``-grams have a Jaccard
  similarity of at least ``threshold``. Candidates come from MinHash locality-sensitive hashing
  (``datasketch``), which finds them without comparing every pair; each candidate is then checked on its
  exact Jaccard similarity, so nothing is removed on the sketch's estimate alone. The first row of a group
  is kept.
- **Contamination** (:func:`contamination`): a training row is contaminated by an evaluation item when
  they share a word ``n``-gram (GPT-3's decontamination used 13-grams). An item shorter than ``n`` words
  contaminates a row that holds all of it, in order: short prompts, which most safety suites are, would
  otherwise never be found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TEXT_KEYS = ("prompt", "messages", "completion", "chosen", "rejected", "response", "text", "content")


def row_text(row: Mapping[str, Any]) -> str:
    """Every piece of text a row gives a model to read, joined by newlines: the strings (and message
    contents) under its prompt, messages, completion, chosen, rejected, response, text and content keys;
    other columns (ids, labels, metadata) are left out."""
    parts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, Mapping):
            collect(value.get("content"))
        elif isinstance(value, list):
            for item in value:
                collect(item)

    for key in _TEXT_KEYS:
        if key in row:
            collect(row[key])
    return "\n".join(parts)


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and digits, a trailing contraction kept): what both checks
    compare, so case, punctuation and spacing change nothing. Curly apostrophes count as straight ones."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """The word ``n``-grams of ``tokens``; a sequence shorter than ``n`` is its own single gram."""
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicates(texts: Sequence[str], *, threshold: float = 0.8, shingle: int = 5, num_perm: int = 128,
                    seed: int = 1) -> list[tuple[int, float] | None]:
    """Per text: ``(i, similarity)`` when it is a near duplicate of the earlier kept text ``i``, else None.

    Texts are compared on their word ``shingle``-grams; MinHash LSH proposes candidates and the exact
    Jaccard similarity decides. A text is compared only with texts kept before it, so a chain of small
    edits is cut where it strays ``threshold`` from what was kept."""
    from datasketch import MinHash, MinHashLSH

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold {threshold}: expected a similarity in (0, 1]")
    # The sketch only proposes candidates and the exact similarity decides, so proposing at a lower threshold
    # costs checks, never correctness; datasketch cannot band for thresholds near 1.
    lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=num_perm)
    grams = [ngrams(words(t), shingle) for t in texts]
    found: list[tuple[int, float] | None] = []
    for index, shingles in enumerate(grams):
        sketch = MinHash(num_perm=num_perm, seed=seed)
        sketch.update_batch([" ".join(g).encode() for g in shingles])
        best: tuple[int, float] | None = None
        for key in lsh.query(sketch):
            kept = int(key)
            similarity = jaccard(shingles, grams[kept])
            if similarity >= threshold and (best is None or (similarity, -kept) > (best[1], -best[0])):
                best = (kept, round(similarity, 4))
        found.append(best)
        if best is None:
            lsh.insert(str(index), sketch)
    return found


def contamination(texts: Sequence[str], suites: Mapping[str, Sequence[str]], *, n: int = 13
                  ) -> list[dict[str, list[int]]]:
    """Per training text, the evaluation items (index per suite) it shares a word ``n``-gram with (an item
    shorter than ``n`` words: all of it, in order); empty when clean."""
    index: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    lengths: set[int] = set()
    for suite, items in suites.items():
        for i, item in enumerate(items):
            tokens = words(item)
            size = min(n, len(tokens))
            if not size:
                continue
            lengths.add(size)
            for gram in ngrams(tokens, size):
                index.setdefault(gram, []).append((suite, i))
    out: list[dict[str, list[int]]] = []
    for text in texts:
        tokens = words(text)
        hits: dict[str, set[int]] = {}
        for size in lengths:
            for gram in _grams(tokens, size):
                for suite, i in index.get(gram, ()):
                    hits.setdefault(suite, set()).add(i)
        out.append({suite: sorted(found) for suite, found in sorted(hits.items())})
    return out


def _grams(tokens: Sequence[str], size: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i:i + size]) for i in range(len(tokens) - size + 1))


def kept_at_thresholds(values: Sequence[float], quantiles: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
                       ) -> list[dict[str, float]]:
    """What a cut on a score would keep: for thresholds at the values' ``quantiles`` (nearest rank), the
    share of values at or above each (what ``--below`` at that threshold keeps)."""
    ordered = sorted(values)
    out = []
    for q in quantiles:
        threshold = ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
        kept = sum(v >= threshold for v in ordered) / len(ordered)
        out.append({"quantile": q, "threshold": round(threshold, 6), "kept_share": round(kept, 4)})
    return out
