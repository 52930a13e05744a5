"""Group commit: writes queued while the writer is busy share one transaction; a write that raises is rolled
back alone; a transaction that cannot commit fails every write in it; nothing is reported before it commits."""

import threading

import pytest
import sqlalchemy as sa

from tether.serve.commits import GroupCommit
from tether.serve.store import connect, write_transaction

NOTES = sa.Table("notes", sa.MetaData(), sa.Column("n", sa.Integer, primary_key=True))


@pytest.fixture
def engine(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'g.db'}")
    NOTES.create(engine)
    yield engine
    engine.dispose()


def _insert(n):
    return lambda conn: conn.execute(NOTES.insert().values(n=n)).rowcount


def _stored(engine):
    with engine.connect() as conn:
        return sorted(r.n for r in conn.execute(sa.select(NOTES)))


def test_writes_that_queue_while_the_writer_is_busy_share_one_commit(engine):
    commits = GroupCommit(engine)
    held, release = threading.Event(), threading.Event()

    def blocker(conn):
        held.set()
        release.wait(10)
        return conn.execute(NOTES.insert().values(n=0)).rowcount

    first = commits.submit(blocker)
    held.wait(10)
    later = [commits.submit(_insert(n)) for n in range(1, 21)]
    assert not any(f.done() for f in later)  # nothing reported before its transaction commits
    release.set()
    assert [f.result(10) for f in [first, *later]] == [1] * 21
    assert (commits.batches, commits.writes) == (2, 21)
    assert _stored(engine) == list(range(21))
    commits.close()


def test_a_write_that_raises_is_rolled_back_alone(engine):
    commits = GroupCommit(engine)
    held, release = threading.Event(), threading.Event()
    commits.submit(lambda conn: (held.set(), release.wait(10)))
    held.wait(10)

    def half_then_fail(conn):
        conn.execute(NOTES.insert().values(n=100))
        raise ValueError("no")

    good, bad, also_good = commits.submit(_insert(1)), commits.submit(half_then_fail), commits.submit(_insert(2))
    release.set()
    assert good.result(10) == 1 and also_good.result(10) == 1
    with pytest.raises(ValueError, match="no"):
        bad.result(10)
    assert _stored(engine) == [1, 2]  # 100 went with its savepoint
    commits.close()


def test_a_transaction_that_cannot_commit_fails_every_write_in_it(engine):
    commits = GroupCommit(engine)
    commits.submit(_insert(1)).result(10)
    with pytest.raises(sa.exc.IntegrityError):  # the same key again: this write fails, in its savepoint
        commits.submit(_insert(1)).result(10)
    broken = GroupCommit(sa.create_engine("sqlite:////nonexistent-dir/x.db"))
    with pytest.raises(sa.exc.OperationalError):
        broken.submit(_insert(5)).result(10)
    commits.close()


def test_a_savepoint_that_comes_first_does_not_commit_on_its_own(engine):
    # SQLite's driver begins a transaction only before a write, so a SAVEPOINT issued first would commit at
    # its release; the store begins transactions itself so that the outer rollback takes it back.
    with pytest.raises(RuntimeError):
        with write_transaction(engine) as conn:
            with conn.begin_nested():
                conn.execute(NOTES.insert().values(n=7))
            raise RuntimeError("roll the whole transaction back")
    assert _stored(engine) == []
