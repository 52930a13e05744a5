"""Label aggregation on hand-made and seeded simulated crowds: majority ties, Dawid–Skene recovering truth
that a careless majority gets wrong (and reading a label-swapping annotator backwards), Bradley–Terry
recovering known strengths and finding the annotator who reports the opposite, per-group decisions."""

import math
import random

import pytest

from tether.data.aggregate import bradley_terry, by_group, dawid_skene, majority


def test_majority_takes_the_most_votes_and_breaks_ties_at_random_not_by_label_order():
    annotations = [(0, "a", "x"), (0, "b", "x"), (0, "c", "y"), (1, "a", "x"), (1, "b", "y")]
    assert majority(annotations)[0] == "x"
    ties = {majority(annotations, seed=s)[1] for s in range(20)}
    assert ties == {"x", "y"}


def _crowd(items, accuracies, seed=0, classes=(0, 1, 2)):
    rng = random.Random(seed)
    truth = {i: rng.choice(classes) for i in range(items)}
    annotations = []
    for i, t in truth.items():
        for name, accuracy in accuracies.items():
            if accuracy == "swap":  # always says the next label: wrong every time, but informative
                label = classes[(classes.index(t) + 1) % len(classes)]
            else:
                label = t if rng.random() < accuracy else rng.choice([c for c in classes if c != t])
            annotations.append((i, name, label))
    return truth, annotations


def _accuracy(labels, truth):
    return sum(labels[i] == t for i, t in truth.items()) / len(truth)


def test_dawid_skene_trusts_the_careful_annotators_over_a_careless_majority():
    truth, annotations = _crowd(300, {"careful1": 0.95, "careful2": 0.9, "spam1": 0.4, "spam2": 0.4,
                                      "spam3": 0.4})
    model = dawid_skene(annotations)
    # Majority is right 77% of the time here: three weak annotators outvote two careful ones.
    assert _accuracy(model.labels, truth) >= 0.9
    assert _accuracy(model.labels, truth) > _accuracy(majority(annotations), truth) + 0.1
    assert model.accuracy("careful1") > 0.85 > 0.55 > model.accuracy("spam1")
    assert sum(model.priors.values()) == pytest.approx(1.0)
    assert all(sum(p.values()) == pytest.approx(1.0) for p in model.posteriors.values())


def test_dawid_skene_reads_a_label_swapping_annotator_backwards():
    truth, annotations = _crowd(200, {"good": 0.8, "swapper": "swap", "noisy": 0.5})
    model = dawid_skene(annotations)
    assert _accuracy(model.labels, truth) >= 0.97  # the swapper's labels, read backwards, are exact
    assert model.confusion["swapper"][0][1] > 0.9


def test_bradley_terry_recovers_known_strengths_and_distrusts_a_contrarian():
    rng = random.Random(1)
    true = {f"o{i}": (i - 4.5) / 2 for i in range(10)}
    comparisons = []
    for _ in range(800):
        a, b = rng.sample(sorted(true), 2)
        p = 1 / (1 + math.exp(-(true[a] - true[b])))
        a_wins = rng.random() < p
        annotator = rng.choice(["r1", "r2", "r3", "contrarian"])
        if annotator == "contrarian":
            a_wins = not a_wins
        comparisons.append((a, b, annotator) if a_wins else (b, a, annotator))
    fitted = bradley_terry(comparisons)
    order = sorted(true, key=fitted.scores.get)
    assert order == sorted(true, key=true.get)
    assert fitted.reliability["contrarian"] < 0.2 < 0.8 < min(fitted.reliability[a] for a in ("r1", "r2", "r3"))
    assert abs(sum(fitted.scores.values())) < 1e-6
    # Without reliability the contrarian's quarter of the data flattens the strengths.
    plain = bradley_terry(comparisons, reliability=False)
    assert plain.scores["o9"] - plain.scores["o0"] < fitted.scores["o9"] - fitted.scores["o0"]
    assert fitted.prefers("o9", "o0")


def test_groups_decide_separately_and_their_disagreements_are_listed():
    annotations = [(0, "u1", "A"), (0, "u2", "A"), (0, "e1", "B"), (0, "e2", "B"),
                   (1, "u1", "A"), (1, "u2", "A"), (1, "e1", "A"), (1, "e2", "A"), (2, "nobody", "B")]
    decided, disputed = by_group(annotations, {"u1": "users", "u2": "users", "e1": "experts", "e2": "experts"})
    assert decided == {"users": {0: "A", 1: "A"}, "experts": {0: "B", 1: "A"}}
    assert disputed == {0: {"users": "A", "experts": "B"}}
    decided, _ = by_group(annotations, {"u1": "users", "e1": "experts"}, lambda rows: dawid_skene(rows).labels)
    assert decided["experts"][0] == "B"
