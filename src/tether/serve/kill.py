"""Kill switches: stop serving everything, one model, or one key, on every server process at once.

A switch is a row in the gateway's database (``all``, ``model:NAME`` or ``key:ID``); each process reads
the set at most ``refresh_s`` old (0.25 s by default), so a switch takes effect everywhere well within a
second, for new requests and for replies not yet sent. When the database cannot be read, the gateway
fails closed (every request refused) unless configured to fail open.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from tether.serve.store import KILL_SWITCHES

UNREACHABLE = "the gateway's store is unreachable (failing closed)"


class KillSwitches:
    """Read and set the switches."""

    def __init__(self, engine: sa.Engine, *, refresh_s: float = 0.25, fail_closed: bool = True) -> None:
        self.engine, self.refresh_s, self.fail_closed = engine, refresh_s, fail_closed
        self._lock = threading.Lock()
        self._active: dict[str, str] | None = None
        self._read_at = 0.0

    def kill(self, target: str, reason: str = "") -> None:
        """Set the switch ``target`` (``all``, ``model:NAME`` or ``key:ID``)."""
        with self.engine.begin() as conn:
            kill_in(conn, target, reason)

    def revive(self, target: str) -> bool:
        """Clear the switch ``target``; whether it was set."""
        with self.engine.begin() as conn:
            return revive_in(conn, target)

    def active(self) -> dict[str, str] | None:
        """``{target: reason}`` as read at most ``refresh_s`` ago; None when the store could not be read."""
        with self._lock:
            now = time.monotonic()
            if self._active is None or now - self._read_at >= self.refresh_s:
                try:
                    with self.engine.connect() as conn:
                        self._active = {r.target: r.reason for r in conn.execute(sa.select(KILL_SWITCHES))}
                except sa.exc.DBAPIError:
                    self._active = None
                self._read_at = now
            return self._active

    def blocked(self, model: str, key_id: str | None) -> str | None:
        """Why a request for ``model`` with key ``key_id`` may not be served now (None: it may)."""
        active = self.active()
        if active is None:
            return UNREACHABLE if self.fail_closed else None
        for target in ("all", f"model:{model}", *([f"key:{key_id}"] if key_id else [])):
            if target in active:
                return f"{target} is killed: {active[target]}"
        return None


def kill_in(conn: sa.Connection, target: str, reason: str = "") -> None:
    """Set the switch ``target`` inside the caller's transaction."""
    conn.execute(KILL_SWITCHES.delete().where(KILL_SWITCHES.c.target == target))
    conn.execute(KILL_SWITCHES.insert().values(target=target, reason=reason or "killed", at=time.time()))


def revive_in(conn: sa.Connection, target: str) -> bool:
    """Clear the switch ``target`` inside the caller's transaction; whether it was set."""
    return bool(conn.execute(KILL_SWITCHES.delete().where(KILL_SWITCHES.c.target == target)).rowcount > 0)
