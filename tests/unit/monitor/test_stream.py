"""The streaming monitor: false alarms on unshifted traffic come about as often as asked, a shift of the mean
is found within a few windows, and categories and embeddings become signals."""

import numpy as np

from tether.monitor.stream import Projection, StreamMonitor, category_signals, scalar_signals


def _records(values):
    return [{"latency_ms": float(v)} for v in values]


def test_false_alarms_come_about_as_often_as_asked_and_a_shift_is_found_fast():
    rng = np.random.default_rng(0)
    monitor = StreamMonitor.calibrate(_records(rng.normal(size=20_000)), window=20, arl_windows=100)
    alarms = [a for r in _records(rng.normal(size=20 * 2000)) for a in monitor.update(r)]
    # 2000 unshifted windows at one false alarm per 100 windows on average: about 20 (Poisson spread).
    assert 8 <= len(alarms) <= 35, len(alarms)
    assert monitor.windows == 2000

    shifted = StreamMonitor.calibrate(_records(rng.normal(size=20_000)), window=20, arl_windows=100)
    for r in _records(rng.normal(size=20 * 50)):
        shifted.update(r)
    delays = []
    for window, value in enumerate(rng.normal(size=20 * 50).reshape(50, 20) + 0.5):
        for r in _records(value):
            if shifted.update(r):
                delays.append(window)
    assert delays and delays[0] <= 6, delays  # a half-sigma shift: z moves by 0.5 * sqrt(20) = 2.2 per window


def test_signals_from_records_categories_and_embeddings():
    record = {"prompt_tokens": 12, "latency_ms": 3.5, "status": 400, "refused": True,
              "guards": [{"guard": "cascade", "score": 0.9}, {"guard": "regex"}]}
    assert scalar_signals(record) == {"prompt_tokens": 12.0, "latency_ms": 3.5, "refused": 1.0, "blocked": 1.0,
                                      "guard:cascade": 0.9}
    topics = category_signals("family", ["task", "hazard"])
    assert topics({"family": "hazard"}) == {"family=task": 0.0, "family=hazard": 1.0, "family=other": 0.0}
    assert topics({"family": "new"})["family=other"] == 1.0
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 6)) * np.array([5, 1, 1, 1, 1, 1])
    projection = Projection.fit(reference, k=2)
    assert abs(projection.components[0][0]) > 0.95  # the direction of largest spread comes first
    assert set(projection.signals(reference[0])) == {"embedding:pc0", "embedding:pc1"}


def test_a_rate_never_seen_in_the_reference_alarms_when_it_appears():
    reference = [{"family": "task"} for _ in range(5000)]
    monitor = StreamMonitor.calibrate(reference, window=50, arl_windows=1000,
                                      extractors=[category_signals("family", ["task"])])
    quiet = [a for _ in range(50 * 20) for a in monitor.update({"family": "task"})]
    assert quiet == []
    alarms = []
    for i in range(50 * 5):  # a new kind of request at 10%
        alarms += monitor.update({"family": "jailbreak-new" if i % 10 == 0 else "task"})
    assert {a.signal for a in alarms} >= {"family=other"}
