"""The reward-hacking watchdog on hand-made signal sequences."""

import pytest

from tether.train.watchdog import WatchConfig, Watchdog


def _feed(dog, rows):
    return [dog.observe(step, row) for step, row in enumerate(rows, start=1)]


def test_proxy_up_gold_down_fires_after_patience_and_names_the_best_step():
    dog = Watchdog(WatchConfig(gold_drop=0.1, window=1, patience=2))
    gold = [0.0, 0.2, 0.4, 0.35, 0.25, 0.2]
    proxy = [0.0, 0.5, 1.0, 1.2, 1.4, 1.6]
    verdicts = _feed(dog, [{"reward": p, "gold_reward": g} for p, g in zip(proxy, gold, strict=True)])
    assert [v.best for v in verdicts] == [True, True, True, False, False, False]
    # Step 5 is the first 0.1 below the best (0.4 -> 0.25); patience 2 fires at step 6.
    assert [v.alarm is not None for v in verdicts] == [False] * 5 + [True]
    assert verdicts[-1].alarm.rule == "gold_drop" and dog.best_step == 3


def test_gold_falling_with_the_proxy_is_not_hacking():
    dog = Watchdog(WatchConfig(gold_drop=0.1, window=1, patience=1))
    verdicts = _feed(dog, [{"reward": 1.0, "gold_reward": 0.5}, {"reward": 0.5, "gold_reward": 0.1}])
    assert all(v.alarm is None for v in verdicts)


def test_moving_mean_hides_one_bad_batch():
    dog = Watchdog(WatchConfig(kl_budget=1.0, window=3, patience=1))
    verdicts = _feed(dog, [{"kl": 0.2}, {"kl": 2.0}, {"kl": 0.2}, {"kl": 2.0}, {"kl": 2.0}])
    # Means: 0.2, 1.1 (fires: window is the history so far), 0.8, 1.4, 1.4.
    assert [v.alarm is not None for v in verdicts] == [False, True, False, True, True]
    assert dog.smoothed("kl") == pytest.approx(1.4)


def test_disagreement_rise_and_best_without_gold():
    dog = Watchdog(WatchConfig(disagreement_rise=0.5, window=1, patience=1), disagreement="dis")
    verdicts = _feed(dog, [{"dis": 0.3}, {"dis": 0.7}, {"dis": 0.81}])
    assert [v.alarm is not None for v in verdicts] == [False, False, True]
    assert [v.best for v in verdicts] == [True, True, False] and dog.best_step == 2
    assert "0.81" in verdicts[-1].alarm.detail


def test_state_round_trip_continues_exactly_where_it_left_off():
    """What a checkpoint keeps: a fresh watchdog given the state after step 3 judges steps 4-7 as the
    original does (same best step, same alarm at step 7)."""
    cfg = WatchConfig(gold_drop=0.1, window=2, patience=2, disagreement_rise=0.5)
    rows = [{"reward": p, "gold_reward": g, "d": d} for p, g, d in
            zip([0.0, 0.5, 1.0, 1.2, 1.4, 1.6, 1.8], [0.0, 0.2, 0.4, 0.35, 0.25, 0.1, 0.05],
                [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3], strict=True)]
    original = Watchdog(cfg, disagreement="d")
    first = _feed(original, rows[:3])
    restored = Watchdog(cfg, disagreement="d")
    restored.load_state_dict(original.state_dict())
    tail = [(step, row) for step, row in enumerate(rows[3:], start=4)]
    assert [original.observe(s, r) for s, r in tail] == [restored.observe(s, r) for s, r in tail]
    assert restored.state_dict() == original.state_dict() and first[-1].best
    assert [(a.step, a.rule) for a in restored.alarms] == [(7, "gold_drop")] and restored.best_step == 4
