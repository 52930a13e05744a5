"""Run directories: every command writes one, so any result can be traced to what made it.

Layout::

    DIR/config.yaml      the resolved config, every field written out
    DIR/metrics.jsonl    one JSON object per logged step, appended and flushed as it goes
    DIR/record.json      a typed, versioned RunRecord: what ran, versions, seed, timings, outputs
    DIR/checkpoints/     training state for --resume
    DIR/...              artifacts (models, datasets, reports)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tether.core.config import dump_config
from tether.core.errors import UserError

RECORD_SCHEMA_VERSION = 1
METRICS_SCHEMA_VERSION = 1
_TRACKED_PACKAGES = ("tether", "torch", "transformers", "tokenizers", "accelerate", "peft", "datasets")


class RunRecord(BaseModel):
    """What ran, with what, and what it produced. Written to ``record.json``."""

    schema_version: int = RECORD_SCHEMA_VERSION
    command: str
    status: Literal["running", "finished", "failed", "interrupted"] = "running"
    seed: int | None = None
    started_at: str
    finished_at: str | None = None
    seconds: float | None = None
    resumed: int = Field(0, description="how many times this run was resumed")
    versions: dict[str, str] = Field(default_factory=dict)
    git_revision: str | None = None
    host: str = Field(default_factory=platform.node)
    outputs: dict[str, str] = Field(default_factory=dict, description="name -> path, relative to the run dir")
    counters: dict[str, int] = Field(default_factory=dict, description="e.g. skipped_rows")
    summary: dict[str, Any] = Field(default_factory=dict, description="final metrics")
    error: str | None = None

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord | None:
        """The record of the run in ``run_dir``; None if it holds none.

        Raises:
            UserError: ``record.json`` is there but is not a run record (named with the file).
        """
        path = Path(run_dir) / "record.json"
        if not path.is_file():
            return None
        try:
            return cls.model_validate_json(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path}: not a tether run record ({str(exc).splitlines()[0]})") from None


def finished_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``run_dir``; None if it holds no finished run."""
    record = RunRecord.read(run_dir)
    return record.summary if record is not None and record.status == "finished" else None


def run_stage(cfg: Any, run: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Run one recipe (its config, whose ``out`` is the run directory, and its ``run``) unless that directory
    already holds a finished run; resume it when it holds an unfinished one. The run's summary either way."""
    done = finished_summary(cfg.out)
    if done is not None:
        return done
    return run(cfg, resume=RunRecord.read(cfg.out) is not None)


class MetricValue(BaseModel):
    """One metric of an evaluation or red-team run: a rate with its 95% interval and how many it is over."""

    model_config = ConfigDict(extra="allow")
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{value, ci_low, ci_high, n}``."""
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}


class MetricsDocument(BaseModel):
    """``metrics.json`` of an evaluation (``tether eval``) or a red-team run: every metric, and what else the
    run wrote beside them (suite, model, scorers, timings, ...; kept as they are)."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = METRICS_SCHEMA_VERSION
    metrics: dict[str, MetricValue]

    def rates(self, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """``{metric: {value, ci_low, ci_high, n}}`` for ``names`` (those present; default: every metric)."""
        chosen = self.metrics if names is None else {n: self.metrics[n] for n in names if n in self.metrics}
        return {name: m.as_dict() for name, m in chosen.items()}


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every line a run logged to ``metrics.jsonl`` (one per logged training step), in order; [] if none."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(path: str | Path) -> MetricsDocument:
    """The metrics document of a run: its directory, or its ``metrics.json``.

    Raises:
        UserError: there is none, or it is not a metrics document (named with the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path}: no metrics (the run did not finish, or this is not a run directory)")
    try:
        return MetricsDocument.model_validate_json(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path}: not a metrics document ({str(exc).splitlines()[0]})") from None


def package_versions() -> dict[str, str]:
    """Installed versions of tether's core packages, plus Python."""
    found = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    """What a measurement ran on: the CPU (model name, cores, the vector kernels torch picked), torch's
    threads and the GPU, if any. Results of the world's builds depend on the kernels (see world.build)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass  # not Linux: the platform's name is what there is
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def environment(extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """Date, machine, package versions (tether's core ones and ``extra_packages``) and git revision: what
    a results file records beside its numbers."""
    versions = package_versions()
    for name in extra_packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "versions": versions,
            "git": git_revision()}


def git_revision(start: Path | None = None) -> str | None:
    """The git commit of the working tree tether runs from (or ``start``), if any; '+dirty' when modified."""
    cwd = start or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}+dirty" if dirty else rev


# Keys a resumed run may change: extending the run is the point of resuming it.
RESUMABLE_CHANGES = frozenset({"loop.max_steps"})


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _check_resumable(saved_path: Path, config: BaseModel) -> None:
    """Refuse to resume a run under a different config (other than :data:`RESUMABLE_CHANGES`)."""
    import yaml

    if not saved_path.is_file():
        return
    saved = _flatten(yaml.safe_load(saved_path.read_text()) or {})
    now = _flatten(config.model_dump(mode="json"))
    for key in sorted(set(saved) | set(now)):
        if key not in RESUMABLE_CHANGES and saved.get(key) != now.get(key):
            raise UserError(f"--resume: config key {key!r} is {now.get(key)!r} but the run in {saved_path.parent} "
                            f"used {saved.get(key)!r}; resume with the same config (only loop.max_steps may change)")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


FAILED_ATTEMPTS = "failed-attempts"


def _set_aside(path: Path) -> Path:
    """Move everything in ``path`` into ``path/failed-attempts/N`` (N: the next free number)."""
    attempts = path / FAILED_ATTEMPTS
    number = 1 + max((int(p.name) for p in attempts.iterdir() if p.name.isdigit()), default=0) \
        if attempts.is_dir() else 1
    target = attempts / str(number)
    target.mkdir(parents=True)
    for entry in path.iterdir():
        if entry.name != FAILED_ATTEMPTS:
            entry.rename(target / entry.name)
    return target


class RunDir:
    """A run directory opened for writing.

    ``resume=False`` refuses a directory that already holds a run, so nothing is overwritten
    by accident — except one whose run failed before its first checkpoint (bad input): its files
    move to ``failed-attempts/N/`` and the new run takes the directory; ``resume=True`` reopens a
    run, keeping metrics and checkpoints.
    """

    def __init__(self, path: str | Path, *, command: str, config: BaseModel, seed: int | None,
                 resume: bool = False) -> None:
        self.path = Path(path)
        self.record_path = self.path / "record.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self._started = time.perf_counter()
        # Under torchrun / accelerate launch only global rank 0 writes; the others keep the record in memory.
        self.writer = int(os.environ.get("RANK", "0")) == 0
        if not self.writer:
            self.record = RunRecord(command=command, seed=seed, started_at=_now())
            return
        existing = self.record_path.is_file()
        if existing and not resume:
            previous = RunRecord.read(self.path)
            if previous is None or previous.status != "failed" or self.checkpoints.exists():
                raise UserError(f"{self.path} already holds a run; pass --resume to continue it or choose another "
                                "--out")
            # A run that failed before its first checkpoint (bad input, a wrong key) holds nothing to resume:
            # this run takes the directory over, keeping the failed attempt's files beside it.
            _set_aside(self.path)
            existing = False
        if resume and not existing:
            raise UserError(f"--resume: {self.path} holds no run to resume (no record.json)")
        self.path.mkdir(parents=True, exist_ok=True)  # checkpoints/ appears with the first checkpoint
        if existing:
            _check_resumable(self.path / "config.yaml", config)
            self.record = RunRecord.model_validate_json(self.record_path.read_text())
            self.record.resumed += 1
            self.record.status = "running"
            self.record.error = None
        else:
            self.record = RunRecord(command=command, seed=seed, started_at=_now())
        self.record.versions = package_versions()
        self.record.git_revision = git_revision()
        (self.path / "config.yaml").write_text(dump_config(config))
        self.save_record()

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` and flush it, so a killed run loses nothing logged."""
        if not self.writer:
            return
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(metrics, sort_keys=False) + "\n")
            fh.flush()

    def read_log(self) -> list[dict[str, Any]]:
        """Every line logged so far, in order."""
        return read_log(self.path)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop logged lines with ``step > after_step`` (written after the checkpoint a resume starts from)."""
        if not self.writer:
            return
        kept = [m for m in self.read_log() if m.get("step", 0) <= after_step]
        self.metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))

    def add_output(self, name: str, path: str | Path) -> None:
        """Record an artifact, stored relative to the run directory where possible."""
        p = Path(path)
        try:
            p = p.resolve().relative_to(self.path.resolve())
        except ValueError:
            pass
        self.record.outputs[name] = str(p)
        self.save_record()

    def count(self, name: str, amount: int) -> None:
        """Add to a named counter (e.g. ``skipped_rows``) in the record."""
        self.record.counters[name] = self.record.counters.get(name, 0) + amount
        self.save_record()

    def record_skipped(self, messages: list[str]) -> None:
        """Count skipped input rows and keep every reason in ``skipped_rows.txt`` (file:line: why)."""
        if not messages or not self.writer:
            return
        with (self.path / "skipped_rows.txt").open("a") as fh:
            fh.writelines(m + "\n" for m in messages)
        self.count("skipped_rows", len(messages))

    def execute(self, body: Callable[[RunDir], dict[str, Any]],
                summarize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run ``body(self)`` and close the record: finished with its result as the summary (or what
        ``summarize`` makes of it), or failed / interrupted with the error. Returns the result."""
        try:
            result = body(self)
        except BaseException as exc:
            self.finish("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=str(exc)[:500])
            raise
        self.finish(summary=result if summarize is None else summarize(result))
        return result

    def finish(self, status: Literal["finished", "failed", "interrupted"] = "finished", *,
               summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Close the record with a status, the final summary and the elapsed time."""
        self.record.status = status
        self.record.finished_at = _now()
        self.record.seconds = round((self.record.seconds or 0.0) + time.perf_counter() - self._started, 3)
        if summary is not None:
            self.record.summary = summary
        self.record.error = error
        self.save_record()

    def save_record(self) -> None:
        """Write ``record.json`` atomically (write then rename), so it is never half-written."""
        if not self.writer:
            return
        tmp = self.record_path.with_suffix(".json.tmp")
        tmp.write_text(self.record.model_dump_json(indent=2))
        tmp.replace(self.record_path)
