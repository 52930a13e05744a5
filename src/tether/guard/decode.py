"""Reading what an attacker encoded: a text -> the plain text a capable model would read out of it.

A request a filter has learned to catch is sent encoded instead (base64, ROT13, leetspeak, Pig Latin,
look-alike letters, letters spelled out one by one) with an instruction to decode it: the model reads it,
a classifier trained on plain text does not. :func:`decode` undoes the encodings the field's jailbreak
tools use, and :func:`readings` gives a guard the texts to score: the text itself and, where anything was
decoded, the decoded sentences (the guard's score is the worse of the two, so decoding never hides what
the text said plainly, and a long text pays for a second reading only of the sentences that changed).

Each step is cheap and only runs where its encoding shows: base64 and hex on long runs of their
alphabets, leetspeak where digits sit inside words, ROT13 and Pig Latin on sentences with almost none of
the short words every English sentence has (and then only if the decoding has them). A plain English text,
the common case, costs a few regular-expression scans.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import string
import unicodedata
from collections.abc import Container
from itertools import islice

# Letters from other scripts drawn like Latin ones in most fonts (Cyrillic and Greek), and zero-width or
# soft-hyphen characters that split a word without showing.
CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "с": "c", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "І": "I", "Ј": "J", "К": "K", "М": "M", "О": "O", "Р": "P",
    "Ѕ": "S", "Т": "T", "Х": "X", "У": "Y",
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T",
    "Χ": "X", "Υ": "Y", "Ζ": "Z",
    "\u200b": None, "\u200c": None, "\u200d": None, "\u2060": None, "\ufeff": None, "\u00ad": None,
})

# The short words nearly every English sentence has; a sentence of several words with none of them is
# not plain English (or is a list of names).
FUNCTION_WORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been it its this that these "
    "those i me my you your he she his her we our they them their what how why when where which who do does did "
    "can could would should will not no so than then there here about into out up all any some".split())

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_DIGITS = re.compile(r"[0-9@$]")
_LEET_HINT = re.compile(r"[A-Za-z][0-9@$]|[0-9@$][A-Za-z]")  # a digit against a letter
_LEET_WORDS = re.compile(r"(?<![\w@$])[A-Za-z0-9@$]*[0-9@$][A-Za-z0-9@$]*")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# Letters spelled out with one separator throughout ("K-o-r-v-e-x", "t.o.x.i.n": three or more), or with single
# spaces ("b o m b": four or more, fewer are too often real words); a run ends where the separator changes.
# (The lookahead only lets a single character followed by a separator start a match: a third faster.)
SPACED = re.compile(r"(?<!\w)\w(?=[-._ ]\w(?:[-._ ]|\b))(?:([-._])\w(?:\1\w)+|(?: \w){3,})(?!\w)")
_SENTENCES = re.compile(r"[^\n.!?]+[.!?]*")
_LETTERS = re.compile(r"[A-Za-z]+")
_VOWELS = frozenset("aeiouAEIOU")
# Function words as ROT13 writes them ("gur", "naq", "ubj"), less the few that are words themselves ("be" <-> "or").
ROT13_FUNCTION_WORDS = frozenset(codecs.encode(w, "rot13") for w in FUNCTION_WORDS) - FUNCTION_WORDS
_PIG_END = re.compile(r"[a-z]ay\b")


def function_share(text: str) -> tuple[float, int]:
    """The share of the text's words that are :data:`FUNCTION_WORDS`, and how many words it has."""
    words = _LETTERS.findall(text.lower())
    return (sum(w in FUNCTION_WORDS for w in words) / len(words) if words else 0.0), len(words)


def _printable(text: str) -> bool:
    return bool(text) and sum(c.isprintable() or c.isspace() for c in text) >= 0.9 * len(text)


def _decode_run(match: re.Match[str], *, depth: int = 1) -> str:
    """A long run of base64's alphabet decoded: as hex if it is all hex digits, else as base64 (standard or
    URL-safe); kept as it is unless it decodes to printable text, whose own runs are decoded ``depth`` times
    more (base64 inside base64)."""
    run = match.group(0)
    if run.isalpha() and (run.islower() or run.isupper()):  # one long word, not an encoding
        return run
    try:
        if len(run) % 2 == 0 and not run.strip(string.hexdigits):
            text = bytes.fromhex(run).decode("utf-8")
        else:
            altchars = b"-_" if "-" in run or "_" in run else None
            text = base64.b64decode(run + "=" * (-len(run) % 4), altchars=altchars).decode("utf-8")
    except (binascii.Error, ValueError):
        return run
    if not _printable(text):
        return run
    if depth and len(text) >= 16:
        text = _BASE64.sub(lambda m: _decode_run(m, depth=depth - 1), text)
    return f" {text} "


def join_spaced(match: re.Match[str]) -> str:
    """A match of :data:`SPACED` with its separators dropped."""
    return re.sub(r"[-._ ]", "", match.group(0))


def unpig(word: str, known: Container[str] = FUNCTION_WORDS) -> str:
    """One Pig Latin word back to English: ``...way`` after a vowel-initial word, or the consonants before
    ``ay`` moved back to the front; of the possible readings the first ``known`` word, else the likeliest."""
    lower = word.lower()
    if not lower.endswith("ay") or len(lower) < 3:
        return word
    stem = lower[:-2]
    run = len(stem) - len(stem.rstrip("bcdfghjklmnpqrstvwxyz"))
    # An all-consonant word ("by" -> "byay") kept whole; else 1 to 6 consonants moved back; "...way" after a
    # vowel-initial word.
    candidates = [stem] if run == len(stem) else [stem[-k:] + stem[:-k] for k in range(1, min(run, 6) + 1)]
    if lower.endswith("way") and lower[0] in _VOWELS:
        candidates.insert(0, lower[:-3])
    out = next((c for c in candidates if c in known), candidates[0])
    return out.capitalize() if word[0].isupper() else out


def _unscramble(sentence: str, known: Container[str]) -> str:
    """A sentence of 3+ words with almost no function words, ROT13- or Pig Latin-decoded if that reads better."""
    lowered = sentence.lower()
    words = lowered.split()
    if len(words) < 3:
        return sentence
    # Scans in C first (a ROT13 function word; "-ay" ending half the words): most sentences leave here.
    rot13 = not ROT13_FUNCTION_WORDS.isdisjoint(words)
    pig = 2 * len(_PIG_END.findall(lowered)) >= len(words)
    if not (rot13 or pig):
        return sentence
    share, n = function_share(sentence)
    if n < 3 or share >= 0.15:
        return sentence
    best, best_share = sentence, share
    candidates = [codecs.encode(sentence, "rot13")] if rot13 else []
    if pig:
        candidates.append(_LETTERS.sub(lambda m: unpig(m.group(0), known), sentence))
    for candidate in candidates:
        candidate_share, _ = function_share(candidate)
        if candidate_share > best_share + 0.15:
            best, best_share = candidate, candidate_share
    return best


def decode(text: str, known: Container[str] = FUNCTION_WORDS, *, skip: Container[str] = ()) -> str:
    """``text`` with what looks encoded decoded (``known``: words that help undo Pig Latin, e.g. a model's
    vocabulary). Each step reads the previous one's output, so an encoding inside base64 or hex is read too
    (and base64 inside base64). Plain text comes back unchanged. ``skip``: steps left to the model that reads
    the result, which takes them itself: ``"confusables"`` (look-alike letters), ``"spaced"`` (spelled-out
    letters joined)."""
    if "confusables" not in skip and not text.isascii():
        text = unicodedata.normalize("NFKC", text.translate(CONFUSABLES))
    if len(text) >= 16:
        text = _BASE64.sub(_decode_run, text)
    # Where digits touch letters twice or more, every word with digits is read as leetspeak, pure-digit ones
    # too ("70": to); one such word ("base64", "mp3") is not leetspeak.
    if _DIGITS.search(text) and len(list(islice(_LEET_HINT.finditer(text), 2))) == 2:
        text = _LEET_WORDS.sub(lambda m: m.group(0).translate(_LEET), text)
    if "spaced" not in skip:
        text = SPACED.sub(join_spaced, text)
    lowered = text.lower()
    rot13 = len(ROT13_FUNCTION_WORDS.intersection(lowered.split())) >= 2
    pig = len(_PIG_END.findall(lowered)) >= 3
    if not (rot13 or pig):
        return text
    return _SENTENCES.sub(lambda m: _unscramble(m.group(0), known), text)


def changed_part(text: str, decoded: str) -> str:
    """The sentences of ``decoded`` that differ from ``text``: from the first change to the last, widened to
    the sentence or line boundaries around them (so a long text with one encoded request in it is read a
    second time only where the request is, in its own sentence)."""
    start = _common_prefix(text, decoded)
    end = len(decoded) - _common_suffix(text[start:], decoded[start:])
    start = max(decoded.rfind(c, 0, start) for c in ".!?\n") + 1
    ends = [i for i in (decoded.find(c, end) for c in ".!?\n") if i >= 0]
    return decoded[start:min(ends) + 1 if ends else len(decoded)]


def _common_prefix(a: str, b: str) -> int:
    # Binary search over slice comparisons (memcmp in C): a handful of comparisons, not a loop over characters.
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _common_suffix(a: str, b: str) -> int:
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            low = mid
        else:
            high = mid - 1
    return low


def readings(text: str, known: Container[str] = FUNCTION_WORDS, *, skip: Container[str] = ()) -> list[str]:
    """What a guard should score: the text, and where anything decodes, the decoded sentences (``skip``: as
    :func:`decode`, for a model that takes those steps itself)."""
    decoded = decode(text, known, skip=skip)
    return [text] if decoded == text else [text, changed_part(text, decoded)]
