"""The review queue: requests and replies a guard escalated to people, held until a reviewer decides.

A guard in ``escalate`` mode that objects to a request (or to the model's whole reply) does not refuse it:
the gateway writes a :class:`ReviewItem` and holds the request until a reviewer approves, rejects or edits
it, or until its deadline, when the policy's default applies (``reject`` unless the server says
``approve``). The item is committed, with its audit row, before the request starts to wait, so nothing
held is lost to a crash of the gateway or of the studio: the queue is rows in the gateway's store.

Every change of state is one conditional ``UPDATE`` that names the state it leaves, so two writers can
never both win:

- :meth:`ReviewQueue.claim` takes the oldest open item for one reviewer under a lease (``pending``, or
  ``claimed`` with its lease run out); a reviewer who already holds one gets it back. Two reviewers
  never hold the same item at once.
- :meth:`ReviewQueue.decide` succeeds only for the reviewer whose lease is still running and before the
  deadline; :meth:`ReviewQueue.expire` applies the default only to an item still open. Whichever comes
  first is the answer the held request gets.

Decided items are labelled data: :func:`guard_rows` (the guards' training rows: the request or reply and
whether a person let it through) and :func:`preference_rows` (an edited reply preferred over the model's).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from tether.core.errors import UserError
from tether.serve.store import REVIEW_ITEMS, write_transaction

Stage = Literal["input", "output"]
Decision = Literal["approved", "rejected", "edited"]
OPEN = ("pending", "claimed")
DECIDED = ("approved", "rejected", "edited", "expired")


@dataclass(frozen=True)
class ReviewItem:
    """One escalated request (``stage`` input: the conversation) or reply (output: ``reply`` too), and where
    it stands: ``pending``, ``claimed`` (by ``claimed_by`` until ``lease_until``), ``approved``,
    ``rejected``, ``edited`` (``text``: what the client gets instead) or ``expired`` (the deadline came
    first; ``default_action`` applied)."""

    id: str
    created_at: float
    deadline: float
    stage: str
    key_id: str | None
    guard: str
    reason: str
    score: float | None
    conversation: list[dict[str, str]]
    reply: str | None
    default_action: str
    state: str
    claimed_by: str | None
    lease_until: float | None
    decided_by: str | None
    decided_at: float | None
    text: str | None
    note: str | None

    @property
    def outcome(self) -> str | None:
        """What the held request gets: ``approved``, ``rejected`` or ``edited``; None while it is open."""
        if self.state == "expired":
            return "approved" if self.default_action == "approve" else "rejected"
        return self.state if self.state in DECIDED else None

    def as_dict(self) -> dict[str, Any]:
        """The item as JSON."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"outcome": self.outcome}


class DecisionError(Exception):
    """A decision that did not take: the lease ran out, the deadline passed, or the item was decided."""


class ReviewQueue:
    """The queue in the gateway's store (any SQLAlchemy engine :func:`tether.serve.store.connect` made)."""

    def __init__(self, engine: sa.Engine, *, lease_s: float = 120.0) -> None:
        self.engine, self.lease_s = engine, lease_s

    def submit_in(self, conn: sa.Connection, *, stage: Stage, guard: str, reason: str,
                  conversation: Sequence[dict[str, str]], reply: str | None = None, key_id: str | None = None,
                  score: float | None = None, timeout_s: float = 300.0, default_action: str = "reject",
                  now: float | None = None) -> str:
        """Write a new pending item inside ``conn``'s transaction (the gateway commits it with its audit
        row); its id."""
        now = time.time() if now is None else now
        item_id = uuid.uuid4().hex
        conn.execute(REVIEW_ITEMS.insert().values(
            id=item_id, created_at=now, deadline=now + timeout_s, stage=stage, key_id=key_id, guard=guard,
            reason=reason[:2000], score=score, conversation=list(conversation), reply=reply,
            default_action=default_action, state="pending"))
        return item_id

    def get(self, item_id: str) -> ReviewItem | None:
        """The item, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(REVIEW_ITEMS).where(REVIEW_ITEMS.c.id == item_id)).mappings().first()
        return None if row is None else ReviewItem(**row)

    def items(self, *, states: Sequence[str] = (), limit: int = 200) -> list[ReviewItem]:
        """Items, oldest first, in ``states`` (every state when empty)."""
        query = sa.select(REVIEW_ITEMS).order_by(REVIEW_ITEMS.c.created_at).limit(limit)
        if states:
            query = query.where(REVIEW_ITEMS.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            return [ReviewItem(**row) for row in conn.execute(query).mappings()]

    def counts(self) -> dict[str, int]:
        """Items per state."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(REVIEW_ITEMS.c.state, sa.func.count()).group_by(REVIEW_ITEMS.c.state))
            return {state: int(n) for state, n in rows}

    def claim(self, reviewer: str, *, now: float | None = None) -> ReviewItem | None:
        """The item ``reviewer`` now holds under a lease of ``lease_s``: the one they already hold, else the
        oldest open item nobody holds (the lease of another reviewer that ran out counts as nobody's);
        None when there is none. Items past their deadline are expired first, never handed out."""
        now = time.time() if now is None else now
        self.expire_due(now=now)
        table = REVIEW_ITEMS.c
        free = sa.or_(table.state == "pending", sa.and_(table.state == "claimed", table.lease_until < now))
        for _ in range(20):  # another reviewer may take a candidate between the read and the update: next one
            with write_transaction(self.engine) as conn:
                held = conn.execute(sa.select(table.id).where(
                    table.state == "claimed", table.claimed_by == reviewer, table.lease_until >= now,
                    table.deadline > now).order_by(table.created_at).limit(1)).scalar()
                candidate = held or conn.execute(sa.select(table.id).where(free, table.deadline > now)
                                                 .order_by(table.created_at).limit(1)).scalar()
                if candidate is None:
                    return None
                # The conditional update is the claim: it takes the row only in the state the read saw.
                mine = sa.and_(table.state == "claimed", table.claimed_by == reviewer)
                taken = conn.execute(REVIEW_ITEMS.update().where(table.id == candidate, sa.or_(free, mine),
                                                                  table.deadline > now)
                                     .values(state="claimed", claimed_by=reviewer, lease_until=now + self.lease_s))
                if taken.rowcount == 1:
                    break
        else:
            return None
        return self.get(candidate)

    def release(self, item_id: str, reviewer: str) -> bool:
        """Give a claimed item back to the queue (the reviewer skips it)."""
        table = REVIEW_ITEMS.c
        with write_transaction(self.engine) as conn:
            done = conn.execute(REVIEW_ITEMS.update().where(table.id == item_id, table.state == "claimed",
                                                             table.claimed_by == reviewer)
                                .values(state="pending", claimed_by=None, lease_until=None))
        return done.rowcount == 1

    def decide(self, item_id: str, reviewer: str, decision: Decision, *, text: str | None = None,
               note: str | None = None, now: float | None = None, conn: sa.Connection | None = None) -> ReviewItem:
        """Record ``reviewer``'s decision on the item they hold: ``approved``, ``rejected``, or ``edited``
        (``text``: the reply the client gets). Inside ``conn``'s transaction where given (the studio
        commits it with its audit row).

        Raises:
            DecisionError: the reviewer's lease ran out, the deadline passed, or the item is decided.
            UserError: an edit without text, or an unknown decision.
        """
        if decision not in ("approved", "rejected", "edited"):
            raise UserError(f"decision {decision!r}: expected approved, rejected or edited")
        if decision == "edited" and not (text or "").strip():
            raise UserError("an edit needs the text the client gets")
        now = time.time() if now is None else now
        table = REVIEW_ITEMS.c
        update = REVIEW_ITEMS.update().where(
            table.id == item_id, table.state == "claimed", table.claimed_by == reviewer, table.lease_until >= now,
            table.deadline > now).values(state=decision, decided_by=reviewer, decided_at=now,
                                         text=text if decision == "edited" else None, note=note)
        if conn is None:
            with write_transaction(self.engine) as own:
                done = own.execute(update).rowcount
        else:
            done = conn.execute(update).rowcount
        item = self.get(item_id) if conn is None else _read(conn, item_id)
        if done != 1:
            if item is None:
                raise DecisionError(f"review item {item_id}: no such item")
            why = ("it was already decided" if item.state in DECIDED else "its deadline passed" if item.deadline <= now
                   else "your claim on it ran out; take it again" if item.claimed_by == reviewer
                   else "another reviewer holds it" if item.state == "claimed" else "claim it first")
            raise DecisionError(f"review item {item_id}: not decided: {why} (state {item.state})")
        assert item is not None
        return item

    def expire(self, item_id: str, *, now: float | None = None) -> bool:
        """Apply the default to an item still open (the held request's deadline came): whether it did."""
        table = REVIEW_ITEMS.c
        now = time.time() if now is None else now
        with write_transaction(self.engine) as conn:
            done = conn.execute(REVIEW_ITEMS.update().where(table.id == item_id, table.state.in_(OPEN))
                                .values(state="expired", decided_at=now))
        return done.rowcount == 1

    def expire_due(self, *, now: float | None = None) -> int:
        """Expire every open item past its deadline (its held request, if any, has had its answer); how many."""
        table = REVIEW_ITEMS.c
        now = time.time() if now is None else now
        with write_transaction(self.engine) as conn:
            return int(conn.execute(REVIEW_ITEMS.update().where(table.state.in_(OPEN), table.deadline <= now)
                                    .values(state="expired", decided_at=now)).rowcount)


def _read(conn: sa.Connection, item_id: str) -> ReviewItem | None:
    row = conn.execute(sa.select(REVIEW_ITEMS).where(REVIEW_ITEMS.c.id == item_id)).mappings().first()
    return None if row is None else ReviewItem(**row)


def reviewed_text(item: ReviewItem) -> str:
    """What the reviewer judged: the reply (output items) or the conversation's last user message."""
    if item.stage == "output":
        return item.reply or ""
    users = [m.get("content", "") for m in item.conversation if m.get("role") == "user"]
    return users[-1] if users else ""


def guard_rows(items: Sequence[ReviewItem]) -> list[dict[str, Any]]:
    """People's decisions as guard training rows (``tether guard train`` reads ``text``/``label``): rejected
    is ``unsafe``, approved ``safe``; edits and expired items are left out (nobody judged the text itself)."""
    rows = []
    for item in items:
        if item.state in ("approved", "rejected"):
            rows.append({"text": reviewed_text(item), "label": "unsafe" if item.state == "rejected" else "safe",
                         "category": item.guard, "stage": item.stage, "source": f"review:{item.id}",
                         "reviewer": item.decided_by})
    return rows


def preference_rows(items: Sequence[ReviewItem]) -> list[dict[str, Any]]:
    """Edited replies as preference rows (TRL's ``prompt``/``chosen``/``rejected``, the prompt being the last
    user message): the reviewer's text preferred over the model's reply (output items only)."""
    rows = []
    for item in items:
        if item.state == "edited" and item.stage == "output" and item.reply is not None and item.text:
            users = [m.get("content", "") for m in item.conversation if m.get("role") == "user"]
            rows.append({"prompt": users[-1] if users else "", "chosen": item.text, "rejected": item.reply,
                         "source": f"review:{item.id}"})
    return rows
