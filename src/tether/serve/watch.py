"""The monitor beside the gateway: traffic watched off the request path, alarms acted on and audited.

A request's record (its audit row with the prompt and reply added, never stored) is handed to the watch's
``submit`` after its audit row is committed: a put on a bounded queue, which never waits; when the queue
is full the record is dropped and counted (``dropped``, and the gateway's metrics), so a slow monitor never
slows a request. The monitor (:class:`tether.monitor.watcher.Monitor`) takes what is queued in batches; in
one transaction the windows it closed (the dashboard's time series), its alarms, the actions their rules
name and an audit row for each alarm are written. Then, if one is set, a webhook is called with each alarm
(retried, after the commit: a webhook that is down loses nothing stored).

Actions (:class:`ActionRule`, first matching rule per alarm; an alarm no rule matches is recorded and
notified only):

- ``escalate``: every later request of the key is held for a person in the review queue (the key's
  ``review`` scope is set; a reviewer's decision answers it, as for a guard in ``escalate`` mode);
- ``throttle``: the key's requests per minute are cut to ``rpm`` (never raised);
- ``kill``: the key's kill switch (or, for an alarm on all traffic, the ``all`` switch) is set;
- ``notify``: nothing beyond the record, the audit row and the webhook.

Actions on a key are undone by hand (``tether keys`` / the admin API): a monitor never lifts them.

Two ways to run it: :class:`Watch` is a thread (the batch command, tests, embedding in a program);
:class:`WatchProcess`, what ``tether serve --monitor`` runs, puts the monitor in a process of its own, fed
through a bounded multiprocessing queue, so the monitor's Python never holds the gateway's interpreter lock
while a request waits for it. What it finds comes back to the gateway's process and is written through the
gateway's own group commit (a separate writer would hold the store's write lock, and every request's
commit would queue behind it). Both write through a :class:`Recorder`.

Each server process runs its own monitor over the requests it serves; with several workers each sees its
share of the traffic (the per-key and whole-traffic statistics are then per worker).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field, model_validator

from tether.core.config import Config
from tether.monitor.stream import Alarm
from tether.monitor.watcher import Monitor, WindowClosed
from tether.serve.audit import AuditLog
from tether.serve.keys import update_scopes_in
from tether.serve.kill import kill_in
from tether.serve.store import MONITOR_ALARMS, MONITOR_WINDOWS

log = logging.getLogger(__name__)

Writer = Callable[[Callable[[sa.Connection], Any]], Any]


class ActionRule(Config):
    """What to do about an alarm: the first rule whose ``scope`` and ``signals`` match it applies."""

    scope: Literal["key", "all"] = Field("key", description="alarms on one key's traffic, or on all traffic")
    signals: list[str] = Field(default_factory=lambda: ["*"], description="signal names (shell patterns)")
    action: Literal["escalate", "throttle", "kill", "notify"] = "notify"
    rpm: int = Field(10, ge=1, description="throttle: the key's requests per minute from now on (at most)")

    @model_validator(mode="after")
    def _needs_a_key(self) -> ActionRule:
        if self.scope == "all" and self.action in ("escalate", "throttle"):
            raise ValueError(f"{self.action} acts on one key: a rule for scope all can kill or notify")
        return self

    def matches(self, alarm: Alarm) -> bool:
        """Whether this rule is for ``alarm``."""
        scope = "all" if alarm.scope == "all" else "key"
        return scope == self.scope and any(fnmatch.fnmatchcase(alarm.signal, p) for p in self.signals)


class WatchConfig(Config):
    """``tether serve --monitor DIR``: the monitor a gateway runs beside it and what its alarms do."""

    actions: list[ActionRule] = Field(default_factory=list, description="rules, first match per alarm")
    webhook: str | None = Field(None, description="URL each alarm is POSTed to as JSON (after it is stored)")
    webhook_retries: int = Field(3, ge=0, description="retries of a failed webhook call")
    webhook_backoff_s: float = Field(1.0, ge=0, description="the wait before the first retry, doubled each time")
    webhook_timeout_s: float = Field(5.0, gt=0)
    queue: int = Field(10_000, ge=1, description="records waiting for the monitor at most (then dropped, counted)")
    batch: int = Field(256, ge=1, description="records the monitor takes at once")
    flush_s: float = Field(0.2, gt=0, description="longest a record waits for a batch to fill")


class Watch:
    """A monitor's thread beside a gateway (see the module)."""

    def __init__(self, monitor: Monitor, writer: Writer, audit: AuditLog, config: WatchConfig | None = None) -> None:
        self.monitor = monitor
        self.config = config or WatchConfig()
        self.recorder = Recorder(writer, audit, self.config)
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(self.config.queue)
        self.dropped = self.seen = 0
        self._thread: threading.Thread | None = None

    def start(self) -> Watch:
        """Start the monitor's thread (and the webhook's); returns self."""
        if self._thread is None:
            self.recorder.start()
            self._thread = threading.Thread(target=self._run, name="tether-monitor", daemon=True)
            self._thread.start()
        return self

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue one request's record for the monitor, never waiting; False if it was dropped (queue full)."""
        taken = _offer(self.queue, record)
        self.dropped += not taken
        return taken

    def stop(self, timeout: float = 10.0) -> None:
        """Let the thread finish what is queued, then stop it (and the webhook's, after its last call)."""
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        self.recorder.stop(timeout)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every record queued so far has been processed (tests, and a clean shutdown)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        for batch, done in _batches(self.queue, self.config):
            try:
                if batch:
                    self.process(batch)
            except Exception:  # the monitor must never take the gateway down; what failed is logged
                log.exception("the monitor failed on a batch of %d records", len(batch))
            finally:
                for _ in range(len(batch) + (1 if done else 0)):
                    self.queue.task_done()

    def process(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run the monitor over ``records`` and store what it found (see the module); the alarms stored."""
        self.seen += len(records)
        alarms, closed = self.monitor.observe(records)
        return self.recorder.record(alarms, closed)

    def record(self, alarms: list[Alarm], closed: list[WindowClosed]) -> list[dict[str, Any]]:
        """Store what a monitor found (:meth:`Recorder.record`)."""
        return self.recorder.record(alarms, closed)


def _offer(inbox: Any, record: dict[str, Any]) -> bool:
    """Put ``record`` on ``inbox`` unless it is full; whether it went."""
    try:
        inbox.put_nowait(record)
        return True
    except queue.Full:
        return False


def _batches(inbox: Any, config: WatchConfig) -> Any:
    """``(batch, done)`` pairs from ``inbox`` (records, then None at the end): a batch is what arrived within
    ``flush_s`` of its first record, ``batch`` records at most; ``done`` on the last."""
    while True:
        first = inbox.get()
        batch, done = ([] if first is None else [first]), first is None
        deadline = time.monotonic() + config.flush_s
        while not done and len(batch) < config.batch:
            try:
                item = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                done = True
            else:
                batch.append(item)
        yield batch, done
        if done:
            return


class Recorder:
    """Stores what a monitor found and acts on it (see the module); calls the webhook from a thread of its own."""

    def __init__(self, writer: Writer, audit: AuditLog, config: WatchConfig) -> None:
        self.writer, self.audit, self.config = writer, audit, config
        self.alarms = self.webhook_failures = 0
        self._hooks: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._hook_thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the webhook's thread, if there is a webhook."""
        if self.config.webhook and self._hook_thread is None:
            self._hook_thread = threading.Thread(target=self._post_all, name="tether-webhook", daemon=True)
            self._hook_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the webhook's thread after its last call."""
        if self._hook_thread is not None:
            self._hooks.put(None)
            self._hook_thread.join(timeout)
            self._hook_thread = None

    def record(self, alarms: list[Alarm], closed: list[WindowClosed]) -> list[dict[str, Any]]:
        """Store ``closed`` windows and ``alarms`` (acting on each, one transaction), then queue the webhook's
        calls; the alarms' rows."""
        if not alarms and not closed:
            return []
        stored: list[dict[str, Any]] = self.writer(lambda conn: self._store(conn, alarms, closed))
        self.alarms += len(stored)
        if self.config.webhook:
            for row in stored:
                self._hooks.put(row)
        return stored

    def _store(self, conn: sa.Connection, alarms: list[Alarm], closed: list[WindowClosed]) -> list[dict[str, Any]]:
        now = time.time()
        if closed:
            conn.execute(MONITOR_WINDOWS.insert(), [{"at": now, "scope": w.scope, "window": w.window,
                                                     "requests": w.requests, "means": w.means} for w in closed])
        stored = []
        for alarm in alarms:
            actions = self._act(conn, alarm)
            row: dict[str, Any] = {"at": now, "scope": alarm.scope, "signal": alarm.signal, "window": alarm.window,
                   "requests": alarm.requests, "z": alarm.z, "mean": alarm.mean, "reference": alarm.reference,
                   "actions": actions, "examples": [dict(e) for e in alarm.examples]}
            inserted = conn.execute(MONITOR_ALARMS.insert().values(**row)).inserted_primary_key
            row["id"] = None if inserted is None else inserted[0]
            key = alarm.scope[4:] if alarm.scope.startswith("key:") else None
            self.audit.append_in(conn, {"decision": "monitor_alarm", "key": key, "scope": alarm.scope,
                                        "signal": alarm.signal, "z": round(alarm.z, 3), "window": alarm.window,
                                        "alarm": row["id"], "actions": actions})
            stored.append(row)
        return stored

    def _act(self, conn: sa.Connection, alarm: Alarm) -> list[dict[str, Any]]:
        rule = next((r for r in self.config.actions if r.matches(alarm)), None)
        if rule is None or rule.action == "notify":
            return []
        why = f"monitor: {alarm.signal} shifted (z = {alarm.z:+.1f}) in window {alarm.window} of {alarm.scope}"
        if alarm.scope == "all":
            kill_in(conn, "all", why)
            return [{"action": "kill", "target": "all"}]
        key = alarm.scope[4:]
        if rule.action == "kill":
            kill_in(conn, f"key:{key}", why)
            return [{"action": "kill", "target": f"key:{key}"}]
        if rule.action == "escalate":
            done = update_scopes_in(conn, key, lambda _: {"review": True})
            return [{"action": "escalate", "target": f"key:{key}", "applied": done is not None}]
        done = update_scopes_in(conn, key, lambda s: {"rpm": rule.rpm if s.rpm is None else min(s.rpm, rule.rpm)})
        return [{"action": "throttle", "target": f"key:{key}", "rpm": None if done is None else done.rpm,
                 "applied": done is not None}]

    def _post_all(self) -> None:
        while True:
            row = self._hooks.get()
            if row is None:
                return
            self.post(row)

    def post(self, row: dict[str, Any]) -> bool:
        """POST one alarm to the webhook, retrying with backoff; whether it was delivered."""
        assert self.config.webhook is not None
        body = json.dumps({"type": "tether.monitor.alarm", "alarm": row}, default=str).encode()
        for attempt in range(self.config.webhook_retries + 1):
            request = urllib.request.Request(self.config.webhook, data=body, method="POST",
                                             headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.config.webhook_timeout_s) as response:
                    if 200 <= response.status < 300:
                        return True
            except Exception as exc:  # any failure is retried, then counted
                log.warning("webhook %s failed (attempt %d): %s", self.config.webhook, attempt + 1, exc)
            if attempt < self.config.webhook_retries:
                time.sleep(self.config.webhook_backoff_s * 2.0 ** attempt)
        self.webhook_failures += 1
        return False


class WatchProcess:
    """The monitor in a child process (see the module): loaded there from ``monitor_dir``; what it finds comes
    back through a second queue to a thread here, which records it with ``writer`` (the gateway's group
    commit). ``submit`` never waits; a full queue drops and counts."""

    def __init__(self, monitor_dir: str, writer: Writer, audit: AuditLog, config: WatchConfig | None = None) -> None:
        import multiprocessing

        self.monitor_dir = monitor_dir
        self.config = config or WatchConfig()
        self.recorder = Recorder(writer, audit, self.config)
        self._context = multiprocessing.get_context("spawn")  # no copy of the server's threads or model
        self.queue: Any = self._context.Queue(self.config.queue)
        self._found: Any = self._context.Queue()
        self.dropped = 0
        self._process: Any = None
        self._reader: threading.Thread | None = None

    def start(self) -> WatchProcess:
        """Start the child (it loads the monitor itself) and the thread that records what it finds."""
        if self._process is None:
            self.recorder.start()
            self._process = self._context.Process(
                target=_watch_child, args=(self.monitor_dir, self.config.model_dump(), self.queue, self._found),
                name="tether-monitor", daemon=True)
            self._process.start()
            self._reader = threading.Thread(target=self._read, name="tether-monitor-results", daemon=True)
            self._reader.start()
        return self

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue one request's record for the monitor, never waiting; False if it was dropped (queue full)."""
        taken = _offer(self.queue, record)
        self.dropped += not taken
        return taken

    def stop(self, timeout: float = 10.0) -> None:
        """Let the child finish what is queued and stop; record what it found last."""
        if self._process is not None:
            try:
                self.queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()
                self._found.put(None)
            self._process = None
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None
        self.recorder.stop(timeout)

    def _read(self) -> None:
        while True:
            found = self._found.get()
            if found is None:
                return
            try:
                self.recorder.record(*found)
            except Exception:  # a store that failed now: logged; the monitor goes on
                log.exception("the monitor's findings could not be stored")


def _watch_child(monitor_dir: str, config: dict[str, Any], inbox: Any, found: Any) -> None:
    """The child of :class:`WatchProcess`: batches from ``inbox`` through the monitor; ``(alarms, windows)``
    onto ``found`` whenever there are any, None at the end."""
    try:  # one BLAS thread: OpenBLAS's idle threads spin, taking a core from the gateway on a small machine
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    monitor = Monitor.load(monitor_dir)
    settings = WatchConfig.model_validate(config)
    try:
        for batch, _ in _batches(inbox, settings):
            try:
                alarms, closed = monitor.observe(batch) if batch else ([], [])
            except Exception:
                log.exception("the monitor failed on a batch of %d records", len(batch))
                continue
            if alarms or closed:
                found.put((alarms, closed))
    finally:
        found.put(None)
