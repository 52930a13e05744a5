"""Accounts: passwords stored as salted scrypt and checked in constant work, sessions that end, and online
guessing stopped by a lock that grows with each failure and is cleared by a success or a new password."""

import pytest

from tether.core.errors import UserError
from tether.serve.store import STUDIO_USERS, connect
from tether.studio.accounts import LOCK_AFTER, Accounts, check_password, hash_password


@pytest.fixture
def accounts(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'a.db'}")
    yield Accounts(engine)
    engine.dispose()


def test_passwords_are_salted_scrypt_and_never_stored_plain(accounts):
    first, second = hash_password("the same password"), hash_password("the same password")
    assert first != second and first.startswith("scrypt$16384$8$1$")  # a fresh salt each time
    assert check_password("the same password", first) and not check_password("another password", first)
    assert not check_password("x", "not a hash")
    accounts.create("ann", "a long password")
    with accounts.engine.connect() as conn:
        stored = conn.execute(STUDIO_USERS.select()).mappings().one()
    assert "a long password" not in str(dict(stored))
    with pytest.raises(UserError, match="shorter than 8"):
        accounts.create("bob", "short")
    with pytest.raises(UserError, match="exists already"):
        accounts.create("ann", "another long password")
    with pytest.raises(UserError, match="role 'boss'"):
        accounts.create("cy", "a long password", "boss")


def test_repeated_failures_lock_the_account_and_the_lock_grows(accounts):
    accounts.create("ann", "a long password")
    for _ in range(LOCK_AFTER):
        assert accounts.verify("ann", "wrong guess!", now=1000.0) is None
    assert accounts.verify("ann", "a long password", now=1001.0) is None  # locked: the right password too
    assert accounts.verify("ann", "a long password", now=1061.0).name == "ann"  # a minute later: in, and reset
    for _ in range(LOCK_AFTER):
        accounts.verify("ann", "wrong guess!", now=2000.0)
    accounts.verify("ann", "wrong guess!", now=2030.0)  # while locked: refused, and not even checked
    accounts.verify("ann", "wrong guess!", now=2061.0)  # the lock over, a sixth failure: two minutes
    assert accounts.verify("ann", "a long password", now=2180.0) is None
    assert accounts.verify("ann", "a long password", now=2182.0) is not None
    for _ in range(LOCK_AFTER):
        accounts.verify("ann", "wrong guess!", now=3000.0)
    accounts.set_password("ann", "a brand new password")  # an admin's reset unlocks it
    assert accounts.verify("ann", "a brand new password", now=3001.0) is not None
    assert accounts.verify("nobody", "a long password") is None


def test_sessions_end_on_logout_new_password_and_disable(accounts):
    user = accounts.create("ann", "a long password")
    token, session = accounts.open_session(user)
    assert accounts.session(token).user.name == "ann" and accounts.session(token).csrf == session.csrf
    assert accounts.session("st-forged") is None and accounts.session("not a token") is None
    accounts.close_session(token)
    assert accounts.session(token) is None
    token, _ = accounts.open_session(user)
    accounts.set_password("ann", "a brand new password")
    assert accounts.session(token) is None
    token, _ = accounts.open_session(user)
    accounts.disable("ann")
    assert accounts.session(token) is None and accounts.verify("ann", "a brand new password") is None
