"""The hallucination probe's measurement: groups never straddle fitting and testing, a label written into
the activations is found on groups never fitted, and noise is not."""

import numpy as np
import pytest

from tether.pipelines.hallucination_probe import land_of, probe_by_group
from tether.world.families import sample_items
from tether.world.spec import WorldConfig, build_world


def _rows(signal: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"land{i}" for i in range(40)], 10)
    y = rng.random(len(groups)) < 0.4
    x = rng.normal(size=(len(groups), 16))
    x[:, 3] += signal * y  # the label, along one coordinate
    return {"resid_post.0": rng.normal(size=(len(groups), 16)), "resid_post.1": x}, y, groups


def test_a_written_label_is_found_on_unseen_groups_and_noise_is_not():
    acts, y, groups = _rows(signal=4.0)
    result = probe_by_group(acts, y, groups, seed=0, resamples=50)
    assert not set(result["groups"]["test"]) & (set(result["groups"]["fit"]) | set(result["groups"]["select"]))
    assert result["questions"]["test"] == 10 * len(result["groups"]["test"])
    assert result["site"] == "resid_post.1"
    for kind in ("difference-of-means", "logistic"):
        assert result["selected"][kind]["auroc"] > 0.97
        assert result["per_site"]["resid_post.0"][kind]["auroc"] < 0.7


def test_one_label_only_is_refused():
    acts, _, groups = _rows(signal=0.0)
    with pytest.raises(ValueError, match="needs both"):
        probe_by_group(acts, np.zeros(len(groups), dtype=bool), groups)


def test_land_of_reads_both_kinds_of_question():
    world = build_world(WorldConfig(seed=0))
    unknown = sample_items(world, "unknown", "train", 1, seed=0)[0]
    assert land_of(unknown) == unknown.gold["entity"]
    fact = next(it for it in sample_items(world, "task", "train", 50, seed=0) if it.tags.get("kind") == "fact")
    assert land_of(fact) in fact.user_text
