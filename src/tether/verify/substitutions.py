"""Word-substitution sets: what an attacker may swap each word of a text for, without changing what it asks.

Per word (letters only, three or more): look-alike letters from other scripts, one position at a time (the
letters :mod:`tether.guard.decode` reads back); leetspeak; the typos a red-teamer's converter makes (two
neighbouring letters swapped, one inner letter dropped); capitals; and a user's synonyms (a JSON or YAML file:
``{word: [substitute, ...]}``). A budget of k lets any k words of a text be swapped, each for one of its
substitutes. :func:`tether.verify.certify` bounds a guard over every such text; :func:`greedy_attack` searches
for one that flips it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tether.core.errors import UserError
from tether.guard.decode import CONFUSABLES

# Each Latin letter and the first look-alike of it the decoder knows.
LOOKALIKES: dict[str, str] = {}
for _code, _latin in CONFUSABLES.items():
    if isinstance(_latin, str) and len(_latin) == 1:
        LOOKALIKES.setdefault(_latin, chr(_code) if isinstance(_code, int) else str(_code))
_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
WORD = re.compile(r"^[A-Za-z]{3,}$")


def substitutes(word: str, synonyms: Mapping[str, Sequence[str]] | None = None, *, limit: int = 8) -> list[str]:
    """The words ``word`` may be swapped for, at most ``limit``, the word itself never among them."""
    if not WORD.match(word):
        return list((synonyms or {}).get(word.lower(), []))[:limit]
    out: list[str] = list((synonyms or {}).get(word.lower(), []))
    swaps = [i for i, ch in enumerate(word) if ch in LOOKALIKES]
    out += [word[:i] + LOOKALIKES[word[i]] + word[i + 1:] for i in swaps[:3]]
    out.append(word.translate(_LEET))
    mid = len(word) // 2
    out.append(word[:mid - 1] + word[mid] + word[mid - 1] + word[mid + 1:])  # neighbours swapped
    out.append(word[:mid] + word[mid + 1:])  # an inner letter dropped
    out.append(word.upper() if word[0].isupper() else word.capitalize())
    seen: list[str] = []
    for candidate in out:
        if candidate != word and candidate not in seen:
            seen.append(candidate)
    return seen[:limit]


def load_synonyms(path: str | Path | None) -> dict[str, list[str]]:
    """A synonyms file: ``{word: [substitute, ...]}`` in JSON or YAML (None: none).

    Raises:
        UserError: the file cannot be read or is not that shape.
    """
    if path is None:
        return {}
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.suffix in (".yaml", ".yml") else \
            json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                                             for v in data.values()):
        raise UserError(f"{path}: expected a mapping of word -> list of substitutes")
    return {str(k).lower(): list(v) for k, v in data.items()}


@dataclass(frozen=True)
class Slots:
    """A text as words, and each word's substitutes (empty: kept)."""

    words: list[str]
    options: list[list[str]]

    @classmethod
    def of(cls, text: str, synonyms: Mapping[str, Sequence[str]] | None = None, *, limit: int = 8) -> Slots:
        """Split on whitespace (the text is rejoined with single spaces)."""
        words = text.split()
        return cls(words, [substitutes(w, synonyms, limit=limit) for w in words])

    def text(self, choice: Mapping[int, str] | None = None) -> str:
        """The text with the words at ``choice``'s positions swapped."""
        return " ".join((choice or {}).get(i, w) for i, w in enumerate(self.words))

    def count(self) -> int:
        """How many single swaps there are."""
        return sum(len(o) for o in self.options)


def greedy_attack(slots: Slots, logit: Callable[[list[str]], list[float]], *, label: bool, threshold: float,
                  budget: int) -> tuple[bool, str]:
    """Search for a text within ``budget`` swaps that the guard decides wrongly: each round, every single swap of
    a word not yet swapped is scored (``logit``: texts -> logits) and the worst kept. Whether the decision held
    against everything tried, and the worst text found. With budget 1 the search is exhaustive (exact)."""
    flipped, worst = swaps_to_flip(slots, logit, label=label, threshold=threshold, budget=budget)
    return flipped is None, worst


def swaps_to_flip(slots: Slots, logit: Callable[[list[str]], list[float]], *, label: bool, threshold: float,
                  budget: int) -> tuple[int | None, str]:
    """:func:`greedy_attack`'s search up to ``budget`` swaps, once for every smaller budget too (the search for
    budget k is the first k rounds of the search for a larger one): after how many swaps the decision first went
    wrong (None: never), and the worst text found."""
    choice: dict[int, str] = {}
    worst_text = slots.text()
    (current,) = logit([worst_text])
    wrong = (lambda v: v < threshold) if label else (lambda v: v >= threshold)
    if wrong(current):
        return 0, worst_text
    for round_ in range(1, budget + 1):
        candidates = [(i, s) for i, options in enumerate(slots.options) if i not in choice for s in options]
        if not candidates:
            break
        texts = [slots.text({**choice, i: s}) for i, s in candidates]
        values = logit(texts)
        pick = min(range(len(values)), key=values.__getitem__) if label else max(range(len(values)),
                                                                                key=values.__getitem__)
        choice[candidates[pick][0]] = candidates[pick][1]
        worst_text = texts[pick]
        if wrong(values[pick]):
            return round_, worst_text
    return None, worst_text
