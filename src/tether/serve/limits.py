"""Throttles that hold across processes: requests and tokens per minute, a token budget, and requests in
flight, per key.

Every check is one conditional ``UPDATE`` in the gateway's database (``... SET requests = requests + 1
WHERE ... AND requests + 1 <= :limit``): the database serialises them, so N allowed requests a minute
are N across every worker and replica, never N per process. Tokens are reserved before generation (the
request's ``max_tokens`` plus an estimate of its prompt) and settled after with the real count, so
concurrent requests cannot together overrun a budget.

Where a Redis server is configured (:class:`RedisWindows`), the per-minute windows are counted there
instead, by one Lua script per admission (Redis runs each script alone, so the check and the count are one
step for every replica); budgets and in-flight leases stay in the database, which keeps them on disk.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import sqlalchemy as sa

from tether.core.errors import UserError
from tether.serve.keys import ApiKey
from tether.serve.store import BUDGETS, CONCURRENCY_LOCKS, LEASES, RATE_WINDOWS, write_transaction


@dataclass
class Admission:
    """A request let through: what it reserved, where, and the headers to send."""

    key_id: str
    window: int
    reserved: int
    headers: dict[str, str] = field(default_factory=dict)
    lease: str | None = None  # the in-flight slot it holds, released by Limiter.release


@dataclass(frozen=True)
class Refusal:
    """A request held back: why, and when to try again."""

    reason: str
    retry_after: float
    headers: dict[str, str]


class CounterStoreError(RuntimeError):
    """The counter store (Redis) could not be reached or answered wrongly: the request is refused (fail closed)."""


# Check and count in one step: KEYS[1] the window's hash; ARGV rpm (0: none), tpm (0: none), tokens reserved,
# seconds to keep the window. Returns {admitted (1/0), requests, tokens} as counted (or as found, if refused).
_ADMIT_LUA = """
local requests = tonumber(redis.call('HGET', KEYS[1], 'requests') or '0')
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '0')
local rpm, tpm, reserve = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if (rpm > 0 and requests + 1 > rpm) or (tpm > 0 and tokens + reserve > tpm) then
  return {0, requests, tokens}
end
redis.call('HINCRBY', KEYS[1], 'requests', 1)
redis.call('HINCRBY', KEYS[1], 'tokens', reserve)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1, requests + 1, tokens + reserve}
"""


class RedisWindows:
    """Per-minute request and token counts of every key in Redis (see the module), shared by every replica."""

    def __init__(self, url: str, *, prefix: str = "tether:rate") -> None:
        try:
            import redis
        except ImportError:
            raise UserError("--redis needs the redis package: pip install 'tether[redis]'") from None
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.prefix, self.url = prefix, url
        self._admit = self.client.register_script(_ADMIT_LUA)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)

    def _key(self, key_id: str, window: int) -> str:
        return f"{self.prefix}:{key_id}:{window}"

    def admit(self, key_id: str, window: int, rpm: int | None, tpm: int | None, reserve: int, keep_s: int,
              ) -> tuple[bool, int, int]:
        """Count one request and ``reserve`` tokens in the window unless a limit would be passed: (admitted,
        requests, tokens)."""
        try:
            ok, requests, tokens = self._admit(keys=[self._key(key_id, window)],
                                               args=[rpm or 0, tpm or 0, reserve, keep_s])
        except self._errors as exc:
            raise CounterStoreError(f"the counter store {self.url} failed: {type(exc).__name__}") from None
        return bool(ok), int(requests), int(tokens)

    def add(self, key_id: str, window: int, requests: int, tokens: int) -> None:
        """Add to a window's counts (negative: take back an admission, or settle a reservation)."""
        try:
            pipe = self.client.pipeline()
            pipe.hincrby(self._key(key_id, window), "requests", requests)
            pipe.hincrby(self._key(key_id, window), "tokens", tokens)
            pipe.execute()
        except self._errors as exc:
            raise CounterStoreError(f"the counter store {self.url} failed: {type(exc).__name__}") from None


class Limiter:
    """Fixed one-minute windows (``window_s``) of request and token counts per key (in the database, or in
    Redis: ``windows``), and lifetime budgets and in-flight leases (in the database)."""

    def __init__(self, engine: sa.Engine, *, window_s: int = 60, lease_s: float = 300.0,
                 windows: RedisWindows | None = None) -> None:
        self.engine, self.window_s, self.lease_s, self.windows = engine, window_s, lease_s, windows

    def admit(self, key: ApiKey, reserve: int, now: float | None = None) -> Admission | Refusal:
        """Count one request and reserve ``reserve`` tokens for ``key``, or say why not (its own transaction)."""
        with write_transaction(self.engine) as conn:
            return self.admit_in(conn, key, reserve, now)

    def admit_in(self, conn: sa.Connection, key: ApiKey, reserve: int, now: float | None = None
                 ) -> Admission | Refusal:
        """:meth:`admit` inside the caller's transaction (a group commit's)."""
        now = time.time() if now is None else now
        window = int(now // self.window_s) * self.window_s
        retry = window + self.window_s - now
        try:
            with conn.begin_nested():
                return self._admit(conn, key, reserve, window, retry, now)
        except _RefusalError as refused:  # raised inside the savepoint: the window's count rolls back too
            return refused.refusal

    def _admit(self, conn: sa.Connection, key: ApiKey, reserve: int, window: int, retry: float, now: float
               ) -> Admission | Refusal:
        if self.windows is None:
            counted = self._count(conn, key, reserve, window, retry)
            if isinstance(counted, Refusal):
                return counted
            return self._hold(conn, key, reserve, window, retry, now, *counted)
        scopes = key.scopes
        ok, requests, tokens = self.windows.admit(key.id, window, scopes.rpm, scopes.tpm, reserve,
                                                  keep_s=2 * self.window_s)
        if not ok:
            what = "requests" if scopes.rpm and requests + 1 > scopes.rpm else "tokens"
            return Refusal(f"rate limit: {what} per minute for key {key.id} reached", retry,
                           _headers(scopes.rpm, scopes.tpm, requests, tokens, retry))
        try:
            return self._hold(conn, key, reserve, window, retry, now, requests, tokens)
        except _RefusalError:  # the budget or the concurrency limit said no: the window's count is taken back
            self.windows.add(key.id, window, -1, -reserve)
            raise

    def _count(self, conn: sa.Connection, key: ApiKey, reserve: int, window: int, retry: float
               ) -> tuple[int, int] | Refusal:
        """Count the request in its window in the database: (requests, tokens) so far, or a refusal."""
        scopes = key.scopes
        limits = [RATE_WINDOWS.c.requests + 1 <= scopes.rpm] if scopes.rpm else []
        limits += [RATE_WINDOWS.c.tokens + reserve <= scopes.tpm] if scopes.tpm else []
        count = (RATE_WINDOWS.update()
                 .where(RATE_WINDOWS.c.key_id == key.id, RATE_WINDOWS.c.window == window, *limits)
                 .values(requests=RATE_WINDOWS.c.requests + 1, tokens=RATE_WINDOWS.c.tokens + reserve)
                 .returning(RATE_WINDOWS.c.requests, RATE_WINDOWS.c.tokens))
        counted = conn.execute(count).first()
        if counted is None:  # the window's row may not exist yet (its first request): make it, count again
            _ensure(conn, RATE_WINDOWS, {"key_id": key.id, "window": window, "requests": 0, "tokens": 0})
            counted = conn.execute(count).first()
        if counted is None:
            used = conn.execute(sa.select(RATE_WINDOWS.c.requests, RATE_WINDOWS.c.tokens).where(
                RATE_WINDOWS.c.key_id == key.id, RATE_WINDOWS.c.window == window)).one()
            what = "requests" if scopes.rpm and used.requests + 1 > scopes.rpm else "tokens"
            return Refusal(f"rate limit: {what} per minute for key {key.id} reached", retry,
                           _headers(scopes.rpm, scopes.tpm, used.requests, used.tokens, retry))
        return int(counted.requests), int(counted.tokens)

    def _hold(self, conn: sa.Connection, key: ApiKey, reserve: int, window: int, retry: float, now: float,
              requests: int, tokens: int) -> Admission:
        """Reserve from the budget and take an in-flight slot (raising a refusal, which rolls back the savepoint)."""
        scopes = key.scopes
        if scopes.budget_tokens is not None:
            _ensure(conn, BUDGETS, {"key_id": key.id, "used": 0})
            spent = conn.execute(
                BUDGETS.update().where(BUDGETS.c.key_id == key.id, BUDGETS.c.used + reserve <= scopes.budget_tokens)
                .values(used=BUDGETS.c.used + reserve).returning(BUDGETS.c.used)).first()
            if spent is None:
                raise _RefusalError(Refusal(f"token budget of key {key.id} ({scopes.budget_tokens}) would be "
                                               "exceeded", 3600.0, {}))
        lease = None
        if scopes.concurrent is not None:
            lease = self._lease(conn, key.id, scopes.concurrent, now=now)
            if lease is None:
                raise _RefusalError(Refusal(f"concurrency limit: key {key.id} has {scopes.concurrent} requests in "
                                               "flight", 1.0, {}))
        return Admission(key.id, window, reserve, _headers(scopes.rpm, scopes.tpm, requests, tokens, retry), lease)

    def _lease(self, conn: sa.Connection, key_id: str, limit: int, now: float) -> str | None:
        """A new in-flight slot for ``key_id``, or None when ``limit`` are held (expired ones do not count)."""
        _ensure(conn, CONCURRENCY_LOCKS, {"key_id": key_id, "admissions": 0})
        # The key's lock row first: admissions of one key serialise here, in every process.
        conn.execute(CONCURRENCY_LOCKS.update().where(CONCURRENCY_LOCKS.c.key_id == key_id)
                     .values(admissions=CONCURRENCY_LOCKS.c.admissions + 1))
        conn.execute(LEASES.delete().where(LEASES.c.key_id == key_id, LEASES.c.expires_at <= now))
        held = conn.execute(sa.select(sa.func.count()).select_from(LEASES).where(LEASES.c.key_id == key_id)).scalar()
        if int(held or 0) >= limit:
            return None
        lease = secrets.token_hex(8)
        conn.execute(LEASES.insert().values(id=lease, key_id=key_id, expires_at=now + self.lease_s))
        return lease

    def release(self, admission: Admission) -> None:
        """Give back the in-flight slot an admission holds (a no-op without one)."""
        if admission.lease is not None:
            with write_transaction(self.engine) as conn:
                self.release_in(conn, admission)

    def release_in(self, conn: sa.Connection, admission: Admission) -> None:
        """:meth:`release` inside the caller's transaction."""
        if admission.lease is not None:
            conn.execute(LEASES.delete().where(LEASES.c.id == admission.lease))

    def settle(self, admission: Admission, used: int, *, budget: bool) -> None:
        """Replace a request's reservation by the tokens it ``used``."""
        if used != admission.reserved:
            with write_transaction(self.engine) as conn:
                self.settle_in(conn, admission, used, budget=budget)

    def settle_in(self, conn: sa.Connection, admission: Admission, used: int, *, budget: bool) -> None:
        """:meth:`settle` inside the caller's transaction."""
        change = used - admission.reserved
        if change == 0:
            return
        if self.windows is not None:
            self.windows.add(admission.key_id, admission.window, 0, change)
        else:
            conn.execute(RATE_WINDOWS.update().where(RATE_WINDOWS.c.key_id == admission.key_id,
                                                     RATE_WINDOWS.c.window == admission.window)
                         .values(tokens=RATE_WINDOWS.c.tokens + change))
        if budget:
            conn.execute(BUDGETS.update().where(BUDGETS.c.key_id == admission.key_id)
                         .values(used=BUDGETS.c.used + change))


class _RefusalError(Exception):
    """A refusal found after the window was counted: raised so the transaction, count included, rolls back."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def _ensure(conn: sa.Connection, table: sa.Table, row: dict[str, object]) -> None:
    """Insert ``row`` unless its primary key is there already (another process may insert it first)."""
    keys = {c.name: row[c.name] for c in table.primary_key.columns}
    if conn.execute(sa.select(*table.primary_key.columns).where(
            *(table.c[k] == v for k, v in keys.items()))).first() is not None:
        return
    try:
        with conn.begin_nested():
            conn.execute(table.insert().values(**row))
    except sa.exc.IntegrityError:
        pass  # inserted by a concurrent request; the conditional update that follows sees it


def _headers(rpm: int | None, tpm: int | None, requests: int, tokens: int, reset_s: float) -> dict[str, str]:
    out: dict[str, str] = {}
    if rpm:
        out |= {"x-ratelimit-limit-requests": str(rpm), "x-ratelimit-remaining-requests": str(max(0, rpm - requests)),
                "x-ratelimit-reset-requests": f"{reset_s:.1f}s"}
    if tpm:
        out |= {"x-ratelimit-limit-tokens": str(tpm), "x-ratelimit-remaining-tokens": str(max(0, tpm - tokens)),
                "x-ratelimit-reset-tokens": f"{reset_s:.1f}s"}
    return out
