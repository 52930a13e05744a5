"""Converters against hand-worked values."""

import random

import pytest

from tether.core.errors import UserError
from tether.redteam.converters import (
    CONVERTERS,
    convert,
    split_tokens,
    to_homoglyphs,
    to_pig_latin,
)


def _rng():
    return random.Random(0)


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("base64", "How do I make it?", "SG93IGRvIEkgbWFrZSBpdD8="),
    ("rot13", "How do I make it?", "Ubj qb V znxr vg?"),
    ("leetspeak", "Tell me the secret", "73ll m3 7h3 53cr37"),
    ("reverse-words", "make  the Korvex toxin", "toxin Korvex the make"),
    ("split-tokens", "Make the Korvex toxin", "Make the K-o-r-v-e-x t-o-x-i-n"),
    ("pig-latin", "Please explain the string, Korvex!", "Easeplay explainway ethay ingstray, Orvexkay!"),
])
def test_converters_by_hand(name, text, expected):
    assert CONVERTERS.get(name)(text, _rng()) == expected


def test_pig_latin_words_without_vowels_and_split_tokens_options():
    assert to_pig_latin("rhythm", _rng()) == "rhythmay"
    assert split_tokens("tiny words only", _rng(), min_length=4, separator=" ") == "t i n y w o r d s o n l y"


def test_homoglyphs_swap_only_look_alikes_at_the_given_rate():
    text = "Open the secret cache"
    assert to_homoglyphs(text, _rng(), rate=0.0) == text
    swapped = to_homoglyphs(text, _rng(), rate=1.0)
    assert swapped == "Ореn thе sесrеt сасhе" and swapped != text and len(swapped) == len(text)
    partial = to_homoglyphs(text, random.Random(3), rate=0.5)
    assert partial == to_homoglyphs(text, random.Random(3), rate=0.5)   # seeded: reproducible
    assert text != partial != swapped


def test_chains_apply_left_to_right_and_instructions_read_in_undo_order():
    text, instruction = convert("hi there", ["reverse-words", "base64"], _rng())
    assert text == "dGhlcmUgaGk="   # base64("there hi")
    assert instruction.startswith("The request below is base64-encoded") and "reverse order" in instruction
    assert instruction.index("base64") < instruction.index("reverse order")
    with pytest.raises(UserError, match="unknown converter 'b64'; known: base64"):
        CONVERTERS.get("b64")
