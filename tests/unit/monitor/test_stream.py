"""The streaming monitor: false alarms on unshifted traffic come about as often as asked, a shift of the mean
is found within a few windows, rates get exact thresholds, alarms carry the requests nearest them, and a
calibration survives a save; the vectorised false-alarm count of the drift experiment runs the same CUSUMs."""

import numpy as np
import pytest

from tether.monitor.stream import StreamMonitor, replay
from tether.pipelines.drift import null_alarms


def _rows(values, name="latency_ms"):
    return [{name: float(v)} for v in values]


def test_false_alarms_come_about_as_often_as_asked_and_a_shift_is_found_fast():
    rng = np.random.default_rng(0)
    monitor = StreamMonitor.calibrate(_rows(rng.normal(size=200_000)), window=20, arl_windows=100)
    assert monitor.stats["latency_ms"].kind == "mean"
    alarms = replay(monitor, _rows(rng.normal(size=20 * 4000)))
    # 4000 unshifted windows at no more than one false alarm per 100 windows: about 40 at most (the threshold
    # allows for the reference's error, so somewhat fewer).
    assert 10 <= len(alarms) <= 50, len(alarms)
    assert monitor.windows == 4000

    shifted = StreamMonitor.calibrate(_rows(rng.normal(size=20_000)), window=20, arl_windows=100)
    replay(shifted, _rows(rng.normal(size=20 * 50)))
    delays = []
    for window, value in enumerate(rng.normal(size=20 * 50).reshape(50, 20) + 0.5):
        for r in _rows(value):
            if shifted.update(r):
                delays.append(window)
    assert delays and delays[0] <= 6, delays  # a half-sigma shift: z moves by 0.5 * sqrt(20) = 2.2 per window


def test_a_rate_never_seen_in_the_reference_alarms_when_it_appears():
    reference = [{"family=task": 1.0, "family=other": 0.0} for _ in range(5000)]
    monitor = StreamMonitor.calibrate(reference, window=50, arl_windows=1000)
    assert monitor.stats["family=other"].kind == "rate"
    assert monitor.stats["family=other"].mean == pytest.approx(1 / 5002)  # one pseudo-event
    assert replay(monitor, reference[:50 * 20]) == []
    alarms = []
    for i in range(50 * 5):  # a new kind of request at 10%
        new = i % 10 == 0
        alarms += monitor.update({"family=task": float(not new), "family=other": float(new)},
                                 {"i": i, "new": new})
    assert {a.signal for a in alarms} >= {"family=other"}
    first = next(a for a in alarms if a.signal == "family=other")
    assert first.z > 0 and first.examples and all(e["new"] for e in first.examples)  # the new requests shown


def test_the_calibration_survives_a_save_and_a_fork_starts_at_rest():
    rng = np.random.default_rng(2)
    monitor = StreamMonitor.calibrate(_rows(rng.normal(size=2000)) + _rows(rng.integers(0, 2, 2000), "refused"),
                                      window=10, arl_windows=50)
    again = StreamMonitor.from_state(monitor.state())
    assert again.stats == monitor.stats and again.window == 10
    replay(monitor, _rows(rng.normal(size=35)))
    fork = monitor.fork("key:k1")
    assert fork.requests == 0 and fork.scope == "key:k1" and fork.stats is monitor.stats


def test_the_vectorised_null_count_runs_the_streaming_monitors_cusums():
    rng = np.random.default_rng(3)
    matrix = np.column_stack([rng.normal(size=500), rng.random(500) < 0.1])
    rows = [{"x": float(a), "r": float(b)} for a, b in matrix]
    monitor = StreamMonitor.calibrate(rows, window=10, arl_windows=5)  # a low budget: alarms to compare
    names = sorted(monitor.stats)
    ordered = np.column_stack([matrix[:, 1], matrix[:, 0]])  # columns in the signals' sorted order: r, x
    counted = null_alarms(ordered, [monitor.stats[n] for n in names], window=10, windows=300, streams=1,
                          k=monitor.k, seed=7)
    # The same resampled requests through the streaming monitor.
    generator = np.random.default_rng(7)
    draws = [generator.integers(0, 500, size=(1, 10)) for _ in range(300)]
    streamed = replay(monitor, [rows[i] for d in draws for i in d[0]])
    by_signal = {n: sum(a.signal == n for a in streamed) for n in names}
    assert [by_signal[n] for n in names] == counted.tolist() and sum(by_signal.values()) > 0
