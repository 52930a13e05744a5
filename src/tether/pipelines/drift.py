"""How fast the monitor finds a shift in deployment traffic, and how often it cries wolf without one.

The experiment (``tether experiment drift``) on simulated world traffic (:mod:`tether.world.traffic`):

1. a monitor is calibrated on ``reference`` unshifted requests (:class:`tether.monitor.watcher.Monitor`:
   lengths, refusals, prompt-embedding components and novelty; the false-alarm budget ``arl_windows``);
2. **false alarms**: a fresh pool of ``pool`` unshifted requests (another traffic seed than the
   reference's) is resampled into ``null_windows`` windows, run as ``null_streams`` independent streams
   through the same CUSUMs (vectorised: :func:`null_alarms`, checked against the streaming monitor in the
   tests); the false alarms per 10,000 windows with an exact Poisson interval;
3. **delay**: for each shift (held-out jailbreak wrappers at 2% of traffic, a new topic mix, a model that
   refuses more) and each of ``repeats`` traffic seeds, a stream that changes at request ``at``: the number
   of requests after the change until the first alarm (up to ``horizon``; a stream that does not alarm by
   then counts as not detected), and the signal that raised it. Alarms before the change are counted as
   false alarms of that stream.

Nothing is trained; the monitor reads only what a gateway could see (prompt, reply, lengths, the refusal
grade), never the truth the traffic generator carries beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.stats import poisson_interval
from tether.monitor.stream import SignalStats
from tether.monitor.watcher import Monitor, MonitorConfig, observe_all

SEEN = ("prompt", "response", "prompt_chars", "response_chars", "refused", "i")


class DriftConfig(Config):
    """``tether experiment drift``."""

    world_seed: int = Field(0, description="which world")
    monitor: MonitorConfig = Field(default_factory=lambda: MonitorConfig(per_key=False))
    reference: int = Field(50_000, ge=200, description="unshifted requests the monitor is calibrated on")
    pool: int = Field(200_000, ge=200, description="fresh unshifted requests resampled for the false-alarm count")
    null_windows: int = Field(1_000_000, ge=100, description="windows of resampled unshifted traffic")
    null_streams: int = Field(1000, ge=1, description="independent streams the null windows are split into")
    shifts: list[str] = Field(default_factory=lambda: ["heldout-jailbreak", "topic-mix", "refuses-more"])
    repeats: int = Field(5, ge=1, description="traffic seeds per shift")
    at: int = Field(2000, ge=0, description="the request at which the shift starts")
    horizon: int = Field(20_000, ge=100, description="requests after the change before a stream counts as missed")
    seed: int = 0
    out: str = Field("runs/drift", description="experiment directory")


def _show(cfg: DriftConfig, summary: dict[str, Any]) -> list[str]:
    null = summary["false_alarms"]
    lines = [f"false alarms: {null['alarms']} in {null['windows']:,} unshifted windows = {null['per_10k']:.2f} per "
             f"10,000 windows [{null['per_10k_low']:.2f}-{null['per_10k_high']:.2f}] (budget: one per "
             f"{cfg.monitor.arl_windows:g} windows)"]
    for shift, result in summary["delays"].items():
        delays = result["delays"]
        shown = ", ".join("missed" if d is None else str(d) for d in delays)
        lines.append(f"  {shift:18} detected {result['detected']}/{len(delays)}; requests after the change: {shown}"
                     f" (first signals: {', '.join(sorted(set(result['signals'])))})")
    lines.append(f"table: {cfg.out}/drift.json")
    return lines


@recipe("drift", group="experiment", config=DriftConfig,
        summary="The monitor on simulated world traffic: false alarms on long unshifted streams (with an interval) "
        "and detection delay for three shifts.",
        example="tether experiment drift --set world_seed=1 --out runs/drift-1",
        produces={"drift": output("drift.json")}, show=_show)
def run(cfg: DriftConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the experiment; write and return ``drift.json``."""
    run_dir = RunDir(cfg.out, command="experiment drift", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _experiment(cfg, rd.path))


def _seen(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in SEEN if k in record}


def _experiment(cfg: DriftConfig, out: Path) -> dict[str, Any]:
    from tether.world.spec import WorldConfig, build_world
    from tether.world.traffic import traffic_records

    world = build_world(WorldConfig(seed=cfg.world_seed))
    started = time.perf_counter()
    reference = [_seen(r) for r in traffic_records(world, cfg.reference, seed=cfg.seed)]
    monitor = Monitor.calibrate(reference, cfg.monitor)
    calibrate_s = time.perf_counter() - started
    pool = [_seen(r) for r in traffic_records(world, cfg.pool, seed=cfg.seed + 10_000)]
    features = monitor.signals.features(pool)
    names = monitor.signal_names()
    matrix = np.array([[row.get(n, np.nan) for n in names] for row in features])
    alarms = null_alarms(matrix, [monitor.stream.stats[n] for n in names], window=cfg.monitor.window,
                         windows=cfg.null_windows, streams=cfg.null_streams, k=cfg.monitor.k, seed=cfg.seed)
    interval = poisson_interval(int(alarms.sum()))
    scale = 10_000 / cfg.null_windows
    null = {"windows": cfg.null_windows, "alarms": int(alarms.sum()), "per_10k": alarms.sum() * scale,
            "per_10k_low": interval[0] * scale, "per_10k_high": interval[1] * scale,
            "by_signal": {n: int(a) for n, a in zip(names, alarms, strict=True) if a},
            "pool": cfg.pool, "streams": cfg.null_streams}

    delays: dict[str, Any] = {}
    throughput = []
    for shift in cfg.shifts:
        result: dict[str, Any] = {"delays": [], "signals": [], "false_alarms_before_change": 0}
        for repeat in range(cfg.repeats):
            fresh = Monitor(monitor.config, monitor.signals, monitor.stream.fork("all"))
            stream = [_seen(r) for r in traffic_records(world, cfg.at + cfg.horizon, seed=cfg.seed + 1 + repeat,
                                                         shift=shift, at=cfg.at)]  # type: ignore[arg-type]
            began = time.perf_counter()
            raised, _ = observe_all(fresh, stream)
            throughput.append(len(stream) / (time.perf_counter() - began))
            before = [a for a in raised if a.requests <= cfg.at]
            after = [a for a in raised if a.requests > cfg.at]
            result["false_alarms_before_change"] += len(before)
            result["delays"].append(after[0].requests - cfg.at if after else None)
            result["signals"].append(after[0].signal if after else "none")
        result["detected"] = sum(d is not None for d in result["delays"])
        delays[shift] = result
    summary = {"world_seed": cfg.world_seed, "signals": names, "window": cfg.monitor.window,
               "arl_windows": cfg.monitor.arl_windows, "thresholds": {n: monitor.stream.stats[n].h for n in names},
               "false_alarms": null, "delays": delays, "at": cfg.at, "horizon": cfg.horizon,
               "calibrate_s": round(calibrate_s, 2), "requests_per_s": round(float(np.median(throughput)), 1)}
    (out / "drift.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def null_alarms(matrix: np.ndarray, stats: list[SignalStats], *, window: int, windows: int, streams: int,
                k: float, seed: int = 0) -> np.ndarray:
    """False alarms per signal over ``windows`` windows of requests resampled from the rows of ``matrix``
    (requests × signals; NaN where a request lacks a signal), run as ``streams`` independent streams of
    ``windows // streams`` windows through each signal's two-sided CUSUM exactly as
    :class:`tether.monitor.stream.StreamMonitor` runs it (restart after an alarm)."""
    rng = np.random.default_rng(seed)
    mean = np.array([s.mean for s in stats])
    std = np.array([s.std for s in stats])
    h = np.array([s.h for s in stats])
    present = ~np.isnan(matrix)
    values = np.where(present, matrix, 0.0)
    steps = windows // streams
    upper = np.zeros((streams, len(stats)))
    lower = np.zeros_like(upper)
    alarms = np.zeros(len(stats), dtype=np.int64)
    for _ in range(steps):
        rows = rng.integers(0, len(matrix), size=(streams, window))
        counts = present[rows].sum(1)
        means = values[rows].sum(1) / np.maximum(counts, 1)
        z = np.where(counts > 0, (means - mean) / (std / np.sqrt(np.maximum(counts, 1))), 0.0)
        upper = np.maximum(0.0, upper + z - k)
        lower = np.maximum(0.0, lower - z - k)
        fired = ((upper > h) | (lower > h)) & (counts > 0)
        alarms += fired.sum(0)
        upper[fired] = 0.0
        lower[fired] = 0.0
    return alarms
