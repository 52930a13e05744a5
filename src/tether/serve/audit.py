"""The audit trail: one row per request, append-only and hash-chained.

Each row holds a canonical JSON record (time, key, model, endpoint, decision, status, latency, token
counts, guard verdicts) and ``hash = sha256(prev_hash + record)``; editing, deleting or reordering a row
breaks every hash after it, which :func:`verify` finds. An append locks the chain's head row first (a
conditional ``UPDATE`` that both SQLite and PostgreSQL serialise), so appends from many server processes
form one chain. The server appends a request's row, committed, before it answers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tether.serve.store import AUDIT, AUDIT_HEAD, write_transaction

GENESIS = "0" * 64


def chain_hash(prev_hash: str, record: str) -> str:
    """The hash a row with ``record`` after ``prev_hash`` carries."""
    return hashlib.sha256((prev_hash + record).encode()).hexdigest()


def canonical(record: dict[str, Any]) -> str:
    """The one JSON text a record hashes as (sorted keys, no spaces)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AuditLog:
    """Append and read the chain in the gateway's database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:  # the head row exists once; a second process finds it there
            if conn.execute(sa.select(AUDIT_HEAD.c.id)).first() is None:
                try:
                    with conn.begin_nested():
                        conn.execute(AUDIT_HEAD.insert().values(id=1, seq=0, hash=GENESIS))
                except sa.exc.IntegrityError:
                    pass  # another process created it first

    def append(self, record: dict[str, Any]) -> int:
        """Commit ``record`` (with its time) as the chain's next row; its sequence number."""
        with write_transaction(self.engine) as conn:
            return self.append_in(conn, record)

    def append_in(self, conn: sa.Connection, record: dict[str, Any]) -> int:
        """:meth:`append` inside the caller's transaction (a group commit's): the row is there once it commits."""
        text = canonical({"ts": round(time.time(), 6), **record})
        # Taking the head row's lock first: appends from every process serialise here.
        head = conn.execute(AUDIT_HEAD.update().where(AUDIT_HEAD.c.id == 1).values(seq=AUDIT_HEAD.c.seq + 1)
                            .returning(AUDIT_HEAD.c.seq, AUDIT_HEAD.c.hash)).one()
        digest = chain_hash(head.hash, text)
        conn.execute(AUDIT.insert().values(seq=head.seq, record=text, prev_hash=head.hash, hash=digest))
        conn.execute(AUDIT_HEAD.update().where(AUDIT_HEAD.c.id == 1).values(hash=digest))
        return int(head.seq)

    def rows(self) -> Iterator[tuple[int, str, str, str]]:
        """``(seq, record, prev_hash, hash)`` in order."""
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(AUDIT).order_by(AUDIT.c.seq)):
                yield int(row.seq), row.record, row.prev_hash, row.hash


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: rows checked, and the first broken row with why (None: intact)."""

    rows: int
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the chain is intact."""
        return self.broken_at is None


def verify(log: AuditLog) -> Verdict:
    """Walk the chain: every row's ``prev_hash`` is the row before's hash, every hash is its content's,
    the sequence has no gap, and the head names the last row."""
    prev, expected, count = GENESIS, 1, 0
    for seq, record, prev_hash, digest in log.rows():
        count += 1
        if seq != expected:
            return Verdict(count, seq, f"row {expected} is missing (next is {seq})")
        if prev_hash != prev:
            return Verdict(count, seq, "its prev_hash is not the previous row's hash")
        if chain_hash(prev_hash, record) != digest:
            return Verdict(count, seq, "its content does not match its hash (edited)")
        prev, expected = digest, expected + 1
    with log.engine.connect() as conn:
        head = conn.execute(sa.select(AUDIT_HEAD)).one()
    if head.seq != count or head.hash != prev:
        return Verdict(count, count + 1, f"the head says {head.seq} rows; {count} are there (rows deleted at the end)")
    return Verdict(count)
