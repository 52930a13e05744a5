"""Simulated traffic: the same stream for the same seed, nothing shifted before the change, and after it each
shift is what it says (held-out jailbreak wrappers at their share, the new topic mix, more refusals)."""

from collections import Counter

import pytest

from tether.world.families import JAILBREAKS_HELDOUT, JAILBREAKS_TRAIN
from tether.world.spec import WorldConfig, build_world
from tether.world.traffic import traffic_records


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(seed=0))


def test_the_stream_is_reproducible_and_unshifted_before_the_change(world):
    first = list(traffic_records(world, 300, seed=1, shift="topic-mix", at=200))
    assert first == list(traffic_records(world, 300, seed=1, shift="topic-mix", at=200))
    assert [r["shifted"] for r in first] == [False] * 200 + [True] * 100
    plain = list(traffic_records(world, 2000, seed=2))
    assert not any(r["wrapper"] in JAILBREAKS_HELDOUT for r in plain)
    assert {r["wrapper"] for r in plain if r["family"] == "jailbreak"} <= set(JAILBREAKS_TRAIN)


def test_each_shift_is_what_it_says(world):
    after = list(traffic_records(world, 3000, seed=3, shift="heldout-jailbreak", at=0))
    heldout = sum(r["wrapper"] in JAILBREAKS_HELDOUT for r in after) / len(after)
    assert 0.01 < heldout < 0.03  # 2% of the traffic
    base = Counter(r["family"] for r in traffic_records(world, 3000, seed=4))
    mixed = Counter(r["family"] for r in traffic_records(world, 3000, seed=4, shift="topic-mix", at=0))
    assert base["task"] / 3000 < 0.3 < 0.4 < mixed["task"] / 3000
    refusals = [sum(r["refused"] for r in traffic_records(world, 3000, seed=5, shift=s, at=0)) / 3000
                for s in ("none", "refuses-more")]
    assert refusals[1] > refusals[0] + 0.03, refusals
    with pytest.raises(ValueError, match="shift 'sideways'"):
        next(traffic_records(world, 1, shift="sideways"))  # type: ignore[arg-type]
