"""Quote verification: honest quotes pass despite case, apostrophes, typos and ellipses; fabricated ones,
which a plain fuzzy ratio passes, do not."""

from rapidfuzz.fuzz import partial_ratio

from tether.oversight.quotes import check_quote, mark_quotes, quotes_in

SOURCE = ("The capital of Peyar is Ixixix. The colour of Peyar is white. The animal of Peyar is Quenpol. "
          "Travellers say the river can’t be crossed in winter.")


def test_an_exact_quote_is_verified_with_its_place_in_the_source():
    found = check_quote("The colour of Peyar is white", SOURCE)
    assert found.verified and SOURCE[found.start:found.end] == "The colour of Peyar is white"


def test_case_punctuation_apostrophes_and_a_typo_do_not_fail_an_honest_quote():
    assert check_quote("the capital of peyar is ixixx.", SOURCE).verified  # a typo: ixixx / ixixix, 91 alike
    assert check_quote("the river can't be crossed", SOURCE).verified      # straight against curly apostrophe
    found = check_quote("The capital of Peyar ... the animal of Peyar is Quenpol", SOURCE)
    assert found.verified and SOURCE[found.start:found.end].endswith("is Quenpol")


def test_a_fabricated_quote_fails_where_a_plain_fuzzy_ratio_passes_it():
    fabricated = "The capital of Peyar is Tesk"
    assert partial_ratio(fabricated, SOURCE) > 90   # why a plain fuzzy match will not do
    assert not check_quote(fabricated, SOURCE).verified
    assert not check_quote("The colour of Peyar is blue", SOURCE).verified
    # Words in the source but not in that order, and parts of an ellipsis out of order, are not a quote.
    assert not check_quote("Peyar of capital the", SOURCE).verified
    assert not check_quote("the animal of Peyar ... The capital of Peyar", SOURCE).verified
    assert not check_quote("", SOURCE).verified and not check_quote("...", SOURCE).verified


def test_arguments_are_marked_for_the_judge():
    argument = ("It is Ixixix: <quote>The capital of Peyar is Ixixix</quote>. Not <quote>the capital of Peyar "
                "is Tesk</quote>.")
    assert quotes_in(argument) == ["The capital of Peyar is Ixixix", "the capital of Peyar is Tesk"]
    marked, checks = mark_quotes(argument, SOURCE)
    assert marked == ("It is Ixixix: <v_quote>The capital of Peyar is Ixixix</v_quote>. Not <u_quote>the capital "
                      "of Peyar is Tesk</u_quote>.")
    assert [c.verified for c in checks] == [True, False]
