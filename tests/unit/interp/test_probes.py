"""Probes against hand-worked values and planted directions: difference of means, logistic regression, AUROC
with an interval, recall at 1% false positives on a control set; a probe named by its site is trained and
applied the same way on every architecture."""

import numpy as np
import pytest

from tether.core.stats import auroc_rows
from tether.interp.capture import capture
from tether.interp.probes import (
    Probe,
    ProbeEnsemble,
    difference_of_means,
    logistic_probe,
    probe_metrics,
    recall_at_fpr,
)
from tether.models.tiny import TINY_ARCHITECTURES, build_tiny_model

# Every architecture runs in the slow tier; these, one of each way a layer is built (sequential and parallel
# blocks, Conv1D, fused and routed experts, sandwich norms, an embedding norm), in every run.
CORE = {"llama", "gpt2", "opt", "gptj", "phi", "mixtral", "qwen2_moe", "llama4_text", "gemma2", "bloom"}
ARCHITECTURES = [a if a in CORE else pytest.param(a, marks=pytest.mark.slow) for a in sorted(TINY_ARCHITECTURES)]


def test_difference_of_means_by_hand():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 2.0], [6.0, 2.0]])
    probe = difference_of_means("resid_post.0", x, [0, 0, 1, 1])
    # Standardised by means (3, 1) and scales (sqrt(5), 1) the rows are (-3/√5, -1), (-1/√5, -1), (1/√5, 1),
    # (3/√5, 1); the positives' mean minus the negatives' is w = (4/√5, 2); the two means' midpoint is 0, so
    # the bias is 0 and the scores are z · w: -12/5 - 2, -4/5 - 2, 4/5 + 2, 12/5 + 2.
    assert np.allclose(probe.weights, [4 / np.sqrt(5), 2.0]) and probe.bias == pytest.approx(0.0)
    assert np.allclose(probe.scores(x), [-4.4, -2.8, 2.8, 4.4])
    with pytest.raises(ValueError, match="positive and negative"):
        difference_of_means("s", x, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="width 2"):
        probe.scores(np.zeros((3, 5)))


def test_recall_at_a_false_positive_rate_by_hand():
    control = np.arange(100.0)  # 1% of 100 controls may pass: the threshold is 98, and 99 > 98 is the one
    recall, threshold = recall_at_fpr([97.0, 98.0, 98.5, 150.0], control, 0.01)
    assert threshold == 98.0 and recall == 0.5
    assert recall_at_fpr([1.0], [0.0, 0.0], 0.0) == (1.0, 0.0)


def test_an_ensemble_averages_standardised_scores_by_hand():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 2.0], [6.0, 2.0]])
    a = difference_of_means("resid_post.0", x, [0, 0, 1, 1])  # scores -4.4, -2.8, 2.8, 4.4 (above)
    # The same rows reversed and 10x larger, fitted the same way: it scores them -4.4, -2.8, 2.8, 4.4 too.
    b = difference_of_means("resid_post.1", 10 * x[::-1], [0, 0, 1, 1])
    ensemble = ProbeEnsemble.fit([a, b], {"resid_post.0": x, "resid_post.1": 10 * x[::-1]})
    # Each probe's scores have mean 0 and spread sqrt((4.4² + 2.8²) / 2) = sqrt(13.6) on the fitting rows.
    assert np.allclose(ensemble.centre, [0, 0]) and np.allclose(ensemble.spread, [np.sqrt(13.6)] * 2)
    mixed = {"resid_post.0": x, "resid_post.1": 10 * x}  # the second probe now scores 4.4, 2.8, -2.8, -4.4
    assert np.allclose(ensemble.scores(mixed), 0.0)
    assert ensemble.sites == ["resid_post.0", "resid_post.1"]
    with pytest.raises(ValueError, match="reads resid_post.1"):
        ensemble.scores({"resid_post.0": x})
    with pytest.raises(ValueError, match="one probe per site"):
        ProbeEnsemble.fit([a, a], {"resid_post.0": x})


def test_probes_find_a_planted_direction_and_say_how_well(tmp_path):
    rng = np.random.default_rng(0)
    direction = rng.normal(size=32)
    labels = rng.random(600) < 0.5
    x = rng.normal(size=(600, 32)) + np.outer(labels, direction) * 0.6
    for fit in (difference_of_means, logistic_probe):
        probe = fit("resid_post.1", x[:400], labels[:400])
        metrics = probe_metrics(probe.scores(x[400:]), labels[400:], resamples=100)
        assert metrics["auroc"] > 0.95 and metrics["auroc_low"] <= metrics["auroc"] <= metrics["auroc_high"]
        assert 0 < metrics["recall_at_0.01_fpr"] <= 1
    noise = probe_metrics(rng.normal(size=400), rng.random(400) < 0.5, resamples=100)
    assert noise["auroc_low"] < 0.5 < noise["auroc_high"]  # no signal: the interval covers chance
    again = Probe.load(probe.save(tmp_path / "probe.json"))
    assert np.allclose(again.scores(x), probe.scores(x)) and again.site == "resid_post.1"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_site_name_and_one_probe_recipe_work_unchanged_on_every_architecture(arch, tokenizer, tmp_path):
    model = build_tiny_model(arch, tokenizer, seed=0).eval()
    odd = [f"zq xv zq {i} xv zq" for i in range(16)]
    plain = [f"please tell me about item {i}" for i in range(16)]
    acts = capture(model, tokenizer, odd + plain, ["resid_post.-1"], positions="mean")["resid_post.-1"].numpy()
    labels = np.array([1] * 16 + [0] * 16)
    fit = np.r_[0:10, 16:26]
    held = np.r_[10:16, 26:32]
    difference_of_means("resid_post.-1", acts[fit], labels[fit]).save(tmp_path / "probe.json")
    probe = Probe.load(tmp_path / "probe.json")
    assert probe_metrics(probe.scores(acts[held]), labels[held], resamples=10)["auroc"] > 0.9, arch


def test_auroc_rows_is_the_roc_area_row_by_row_with_ties_counting_half():
    from sklearn.metrics import roc_auc_score

    # Row 0: positives 0.9 and 0.5 against negatives 0.5 and 0.1: 0.9 beats both, 0.5 ties one (half) and
    # beats one: 3.5 of 4. Row 1: perfectly reversed: 0.
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.1, 0.2, 0.8, 0.9]])
    labels = np.array([[True, True, False, False], [True, True, False, False]])
    assert auroc_rows(scores, labels).tolist() == [0.875, 0.0]
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(20, 50)), 1)  # many ties
    labels = rng.random((20, 50)) < 0.3
    expected = [roc_auc_score(y, s) for s, y in zip(scores, labels, strict=True)]
    assert auroc_rows(scores, labels) == pytest.approx(expected)
