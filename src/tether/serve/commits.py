"""Group commit: the writes of many concurrent requests share one transaction and one flush to disk.

Every write a request must see committed before it is answered (its admission by the throttles, its
settlement and its audit row) is handed to one writer thread per process as a function of a connection.
The writer takes every write waiting, runs each in a savepoint of one transaction (a write that raises
rolls back alone), commits once, and only then tells each waiting request its result. While it waits for
the disk the next requests' writes queue up, so the busier the server, the more writes each flush
carries: durability per request at the cost of one flush per batch instead of one per write.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from tether.serve.batching import gather
from tether.serve.store import write_transaction

T = TypeVar("T")


@dataclass
class _Write:
    fn: Callable[[sa.Connection], Any]
    future: Future[Any] = field(default_factory=Future)


class GroupCommit:
    """The writer of one engine (see the module); ``max_batch`` writes per transaction at most."""

    def __init__(self, engine: sa.Engine, *, max_batch: int = 256) -> None:
        self.engine, self.max_batch = engine, max_batch
        self.batches = 0  # transactions committed
        self.writes = 0   # writes they carried
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[sa.Connection], T]) -> Future[T]:
        """A future of ``fn(connection)``, resolved once the transaction that ran it has committed."""
        write = _Write(fn)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tether-serve-commits", daemon=True)
                self._thread.start()
        self._queue.put(write)
        return write.future

    async def run(self, fn: Callable[[sa.Connection], T]) -> T:
        """``fn(connection)``'s result once committed (its exception, if it raised or the commit failed)."""
        return await asyncio.wrap_future(self.submit(fn))

    def close(self) -> None:
        """Stop the writer once the writes already queued are committed."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = gather(self._queue, first, self.max_batch)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Write]) -> None:
        outcomes: list[tuple[_Write, Any, BaseException | None]] = []
        try:
            with write_transaction(self.engine) as conn:
                for write in batch:
                    try:
                        with conn.begin_nested():
                            outcomes.append((write, write.fn(conn), None))
                    except Exception as exc:  # this write alone is rolled back; the others go on
                        outcomes.append((write, None, exc))
        except Exception as exc:  # the transaction itself failed (the store went away): every write with it
            for write in batch:
                write.future.set_exception(exc)
            return
        self.batches += 1
        self.writes += len(batch)
        for write, value, error in outcomes:
            if error is None:
                write.future.set_result(value)
            else:
                write.future.set_exception(error)
