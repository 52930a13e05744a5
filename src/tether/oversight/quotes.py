"""Quotes from a source text, verified by fuzzy matching (Khan et al. 2024's verified quotes, forgiving).

In debate and consultancy with information asymmetry the debaters see a source the judge does not; what
keeps them honest is that a quote is checked against the source and shown to the judge as verified or
not. An exact-match check fails honest quotes over a curly apostrophe, a changed case or a typo; a plain
fuzzy ratio passes fabricated ones ("The capital of Peyar is Tesk" scores 92 of 100 against "The capital
of Peyar is Ixixix", rapidfuzz's partial ratio). :func:`check_quote` matches word by word instead: every
word of the quote must match the next word of one place in the source, each with a character similarity
of at least ``word_similarity`` (typos pass, a different word does not), and an ellipsis may skip source
words between two parts of a quote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.fuzz import ratio

QUOTE = re.compile(r"<quote>(.*?)</quote>", re.S)
_WORD = re.compile(r"[\w']+")
_ELLIPSIS = re.compile(r"\.\.\.|…")


@dataclass(frozen=True)
class QuoteCheck:
    """A quote and where, if anywhere, the source says it (character offsets into the source)."""

    quote: str
    verified: bool
    start: int = -1
    end: int = -1


def words(text: str) -> list[tuple[str, int, int]]:
    """``text``'s words, case-folded, typographic apostrophes straightened and punctuation dropped, with
    their character offsets in ``text``."""
    straight = text.replace("\u2019", "'").replace("\u2018", "'")  # one character each: offsets hold
    return [(m.group().casefold().strip("'"), m.start(), m.end()) for m in _WORD.finditer(straight)
            if m.group().strip("'")]


def check_quote(quote: str, source: str, *, word_similarity: float = 80.0) -> QuoteCheck:
    """Whether ``source`` says ``quote``: its parts (split at ellipses) each match consecutive source words,
    in order, every word pair at least ``word_similarity`` (0-100, rapidfuzz's normalised Levenshtein
    ratio) alike. The first place that matches is returned. A quote with no words is not verified.

    Example: "the capital of peyar is ixixx" is verified in "The capital of Peyar is Ixixix." (one typo,
    "ixixx" against "ixixix" is 91 alike); "The capital of Peyar is Tesk" is not ("tesk" against "ixixix"
    is 0 alike: no character in common).
    """
    parts = [words(part) for part in _ELLIPSIS.split(quote)]
    parts = [p for p in parts if p]
    source_words = words(source)
    if not parts:
        return QuoteCheck(quote, False)

    def match_at(part: list[tuple[str, int, int]], at: int) -> bool:
        return all(ratio(w, source_words[at + i][0]) >= word_similarity for i, (w, _, _) in enumerate(part))

    # Each part at its earliest place after the previous one: if any placement works, that one does (it
    # leaves the most source for the parts after it), so no search over placements is needed.
    spans, at = [], 0
    for part in parts:
        found = next((i for i in range(at, len(source_words) - len(part) + 1) if match_at(part, i)), None)
        if found is None:
            return QuoteCheck(quote, False)
        spans.append((found, found + len(part)))
        at = found + len(part)
    return QuoteCheck(quote, True, source_words[spans[0][0]][1], source_words[spans[-1][1] - 1][2])


def quotes_in(text: str) -> list[str]:
    """The quotes an argument makes: the text between each ``<quote>`` and ``</quote>``."""
    return [m.group(1) for m in QUOTE.finditer(text)]


def mark_quotes(text: str, source: str, *, word_similarity: float = 80.0) -> tuple[str, list[QuoteCheck]]:
    """``text`` with each ``<quote>…</quote>`` shown to a judge as ``<v_quote>…</v_quote>`` (the source says
    it) or ``<u_quote>…</u_quote>`` (it does not), and the checks."""
    checks: list[QuoteCheck] = []

    def replace(match: re.Match[str]) -> str:
        found = check_quote(match.group(1), source, word_similarity=word_similarity)
        checks.append(found)
        tag = "v_quote" if found.verified else "u_quote"
        return f"<{tag}>{match.group(1)}</{tag}>"

    return QUOTE.sub(replace, text), checks
