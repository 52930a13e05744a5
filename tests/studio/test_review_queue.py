"""The review queue: one reviewer per item at a time (leases), decisions taken once, deadlines applying the
policy's default, and decisions turned into training rows; under real concurrency on SQLite and PostgreSQL."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.serve.conftest import postgres_database

from tether.core.errors import UserError
from tether.serve.review import DecisionError, ReviewQueue, guard_rows, preference_rows
from tether.serve.store import connect, write_transaction


def _submit(queue, n=1, *, stage="input", timeout_s=300.0, default="reject", now=None):
    ids = []
    with write_transaction(queue.engine) as conn:
        for i in range(n):
            ids.append(queue.submit_in(conn, stage=stage, guard="regex", reason=f"matched {i}",
                                       conversation=[{"role": "user", "content": f"request {i}"}],
                                       reply="model reply" if stage == "output" else None, key_id="k1",
                                       timeout_s=timeout_s, default_action=default,
                                       now=(now + i * 1e-3) if now is not None else None))
    return ids


@pytest.fixture
def queue(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'q.db'}")
    yield ReviewQueue(engine, lease_s=30)
    engine.dispose()


def test_claims_go_oldest_first_one_reviewer_each_and_a_reviewer_keeps_theirs(queue):
    first, second = _submit(queue, 2, now=1000.0)
    a = queue.claim("alice", now=1001.0)
    assert a.id == first and a.state == "claimed" and a.claimed_by == "alice" and a.lease_until == 1031.0
    assert queue.claim("alice", now=1002.0).id == first  # the page reloaded: the same item, not another
    assert queue.claim("bob", now=1002.0).id == second
    assert queue.claim("carol", now=1002.0) is None


def test_a_lease_that_runs_out_frees_the_item_and_the_late_decision_is_refused(queue):
    (item,) = _submit(queue, 1, now=1000.0)
    queue.claim("alice", now=1000.0)
    with pytest.raises(DecisionError, match="ran out"):
        queue.decide(item, "alice", "approved", now=1030.5)  # alice's lease ran to 1030
    assert queue.claim("bob", now=1020.0) is None
    assert queue.claim("bob", now=1031.0).id == item
    with pytest.raises(DecisionError, match="another reviewer holds it"):
        queue.decide(item, "alice", "approved", now=1032.0)
    assert queue.decide(item, "bob", "rejected", now=1032.0).state == "rejected"
    with pytest.raises(DecisionError, match="already decided"):
        queue.decide(item, "bob", "approved", now=1033.0)
    assert queue.get(item).decided_by == "bob"


def test_the_deadline_applies_the_default_and_expired_items_are_never_handed_out(queue):
    reject, approve = _submit(queue, 1, timeout_s=10, now=1000.0) + _submit(queue, 1, timeout_s=10, default="approve",
                                                                           now=1000.0)
    queue.claim("alice", now=1001.0)
    assert queue.claim("bob", now=1011.0) is None  # both past the deadline: expired, not claimable
    assert queue.get(reject).state == "expired" and queue.get(reject).outcome == "rejected"
    assert queue.get(approve).outcome == "approved"
    with pytest.raises(DecisionError):
        queue.decide(reject, "alice", "approved", now=1012.0)
    assert not queue.expire(reject)  # decided already: nothing changes


def test_edits_need_text_and_decisions_become_guard_and_preference_rows(queue):
    ids = _submit(queue, 3, stage="output", now=time.time())
    for item_id, decision in zip(ids, ("approved", "rejected", "edited"), strict=True):
        assert queue.claim("alice").id == item_id
        if decision == "edited":
            with pytest.raises(UserError, match="needs the text"):
                queue.decide(item_id, "alice", "edited", text="  ")
        queue.decide(item_id, "alice", decision, text="a better reply")
    items = queue.items(states=("approved", "rejected", "edited"))
    assert [(r["label"], r["text"]) for r in guard_rows(items)] == [("safe", "model reply"), ("unsafe", "model reply")]
    assert preference_rows(items) == [{"prompt": "request 2", "chosen": "a better reply", "rejected": "model reply",
                                       "source": f"review:{ids[2]}"}]
    assert queue.counts() == {"approved": 1, "rejected": 1, "edited": 1}


def _race(queue, reviewers, rounds):
    """Reviewers claiming at once, each decides what they got: every item decided once, never held by two."""
    held, barrier, seen = {}, threading.Barrier(len(reviewers)), []
    lock = threading.Lock()

    def work(name):
        barrier.wait()
        for _ in range(rounds):
            item = queue.claim(name)
            if item is None:
                return
            with lock:
                assert item.id not in held, f"{item.id} handed to {name} while {held.get(item.id)} holds it"
                held[item.id] = name
                seen.append(item.id)
            queue.decide(item.id, name, "approved")
            with lock:
                del held[item.id]

    with ThreadPoolExecutor(len(reviewers)) as pool:
        list(pool.map(work, reviewers))
    return seen


def test_two_reviewers_never_hold_the_same_item_sqlite(queue):
    ids = _submit(queue, 40)
    seen = _race(queue, [f"r{i}" for i in range(6)], rounds=40)
    assert sorted(seen) == sorted(ids)  # each once
    assert queue.counts() == {"approved": 40}


def test_two_reviewers_never_hold_the_same_item_postgres():
    with postgres_database("tether_review") as url:
        engine = connect(url)
        queue = ReviewQueue(engine, lease_s=30)
        ids = _submit(queue, 40)
        seen = _race(queue, [f"r{i}" for i in range(8)], rounds=40)
        assert sorted(seen) == sorted(ids)
        assert queue.counts() == {"approved": 40}
        engine.dispose()
