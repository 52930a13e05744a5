"""Agreement coefficients against published reference values: Krippendorff's alpha on the computational
example of its Wikipedia article (nominal 0.691, interval 0.811) and on Krippendorff's (2011) four-observer
data (nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797); Cohen's kappa on the textbook 2x2 table
(0.4); Fleiss' kappa on Fleiss' (1971) 10-subject, 14-rater example as its Wikipedia article works it
(0.210). Bootstrap intervals and per-annotator kappas on hand-made data."""

import pytest

from tether.core.agreement import (
    bootstrap,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    per_annotator,
)


def _long(rows):
    """Rows of one annotator's labels per item ("*" or None: not labelled) -> (item, annotator, value)."""
    return [(item, coder, value) for coder, row in enumerate(rows) for item, value in enumerate(row)
            if value not in ("*", None)]


WIKIPEDIA = _long([
    "*    *    *    *    *    3    4    1    2    1    1    3    3    *    3".split(),
    "1    *    2    1    3    3    4    3    *    *    *    *    *    *    *".split(),
    "*    *    2    1    3    4    4    *    2    1    1    3    3    *    4".split(),
])
WIKIPEDIA = [(i, c, int(v)) for i, c, v in WIKIPEDIA]

KRIPPENDORFF_2011 = _long([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
])


@pytest.mark.parametrize(("data", "level", "expected"), [
    (WIKIPEDIA, "nominal", 0.691), (WIKIPEDIA, "interval", 0.811),
    (KRIPPENDORFF_2011, "nominal", 0.743), (KRIPPENDORFF_2011, "ordinal", 0.815),
    (KRIPPENDORFF_2011, "interval", 0.849), (KRIPPENDORFF_2011, "ratio", 0.797),
])
def test_krippendorff_alpha_matches_the_published_values(data, level, expected):
    assert round(krippendorff_alpha(data, level), 3) == expected


def test_alpha_is_one_for_perfect_agreement_and_needs_numbers_beyond_nominal():
    same = [(i, c, "yes" if i % 2 else "no") for i in range(6) for c in range(3)]
    assert krippendorff_alpha(same) == 1.0
    with pytest.raises(ValueError, match="numeric labels"):
        krippendorff_alpha(same, "interval")
    with pytest.raises(ValueError, match="labelled twice"):
        krippendorff_alpha([(0, "a", 1), (1, "a", 2)])


def test_cohen_kappa_on_the_textbook_table():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == 1.0


FLEISS_COUNTS = [  # subjects x categories: how many of the 14 raters chose each category
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_on_fleiss_1971_worked_example():
    annotations = []
    for subject, counts in enumerate(FLEISS_COUNTS):
        labels = [category for category, count in enumerate(counts) for _ in range(count)]
        annotations += [(subject, rater, label) for rater, label in enumerate(labels)]
    assert round(fleiss_kappa(annotations), 3) == 0.210
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(annotations[:-1])


def test_a_bootstrap_interval_brackets_the_value_and_narrows_with_more_items():
    def data(items):
        # Three annotators; the third disagrees on every fifth item.
        return [(i, c, (i % 3) if c < 2 or i % 5 else (i + 1) % 3) for i in range(items) for c in range(3)]

    small = bootstrap(krippendorff_alpha, data(20), resamples=300)
    large = bootstrap(krippendorff_alpha, data(200), resamples=300)
    for estimate in (small, large):
        assert estimate.ci_low <= estimate.value <= estimate.ci_high and estimate.resamples == 300
    assert large.ci_high - large.ci_low < small.ci_high - small.ci_low
    assert (small.n, large.n) == (20, 200)


def test_per_annotator_kappa_finds_the_careless_one():
    annotations = []
    for item in range(40):
        truth = item % 2
        annotations += [(item, "a", truth), (item, "b", truth), (item, "c", truth),
                        (item, "noisy", truth if item % 4 else 1 - truth)]
    scores = per_annotator(annotations)
    assert scores["a"]["kappa"] == 1.0 and scores["a"]["n"] == 40
    assert scores["noisy"]["kappa"] < 0.6 < scores["b"]["kappa"]
