"""People of the studio: accounts with a role, salted scrypt password hashes, and login sessions.

Roles: ``annotator`` (labels the projects they are a member of), ``reviewer`` (also decides the review
queue's escalated requests), ``admin`` (everything: every project, exports, agreement). A password is
stored as scrypt (the standard library's, N=2^14, r=8, p=1: about 50 ms and 16 MiB a try, which makes
guessing offline slow) with a random salt. A session is a random 256-bit token held in an HttpOnly,
SameSite=Strict cookie and stored only as its SHA-256 (a leaked table opens no session), with its own
CSRF token for forms; it expires. Five failed logins in a row lock an account for a minute, doubling with
each further failure (online guessing), until a success or a new password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from tether.core.errors import UserError
from tether.serve.store import STUDIO_SESSIONS, STUDIO_USERS, write_transaction

Role = Literal["annotator", "reviewer", "admin"]
ROLES: tuple[str, ...] = ("annotator", "reviewer", "admin")
MIN_PASSWORD = 8
LOCK_AFTER = 5  # failed logins in a row before an account is locked
LOCK_S = 60.0  # the first lock's length; each further failure doubles it
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class User:
    """An account (never its password hash)."""

    id: str
    name: str
    role: str
    created_at: float
    disabled_at: float | None = None

    @property
    def is_admin(self) -> bool:
        """Whether the account may do everything."""
        return self.role == "admin"

    @property
    def can_review(self) -> bool:
        """Whether the account may decide escalated requests."""
        return self.role in ("reviewer", "admin")


@dataclass(frozen=True)
class Session:
    """A logged-in account and the CSRF token its forms carry."""

    user: User
    csrf: str
    expires_at: float


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$SALT$HASH`` (base64) of ``password`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(got, expected)


_DUMMY = hash_password(secrets.token_hex(8))  # checked against when a name is unknown: timing tells nothing
_PUBLIC = [STUDIO_USERS.c[k] for k in ("id", "name", "role", "created_at", "disabled_at")]  # never the hash


class Accounts:
    """Accounts and sessions in the gateway's store."""

    def __init__(self, engine: sa.Engine, *, session_s: float = 12 * 3600) -> None:
        self.engine, self.session_s = engine, session_s

    def create(self, name: str, password: str, role: str = "annotator") -> User:
        """A new account.

        Raises:
            UserError: the name is taken or empty, the role unknown, the password shorter than 8 characters.
        """
        name = name.strip()
        if not name or len(name) > 200:
            raise UserError(f"account name {name!r}: 1 to 200 characters")
        if role not in ROLES:
            raise UserError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"the password for {name!r} is shorter than {MIN_PASSWORD} characters")
        user = User(uuid.uuid4().hex, name, role, time.time())
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(STUDIO_USERS.insert().values(id=user.id, name=name, role=role, created_at=user.created_at,
                                                          password_hash=hash_password(password)))
        except sa.exc.IntegrityError:
            raise UserError(f"account {name!r} exists already") from None
        return user

    def get(self, user_id: str) -> User | None:
        """The account with this id."""
        return self._one(STUDIO_USERS.c.id == user_id)

    def by_name(self, name: str) -> User | None:
        """The account with this name."""
        return self._one(STUDIO_USERS.c.name == name)

    def users(self) -> list[User]:
        """Every account, by name."""
        with self.engine.connect() as conn:
            return [User(**r) for r in conn.execute(sa.select(*_PUBLIC).order_by(STUDIO_USERS.c.name)).mappings()]

    def set_password(self, name: str, password: str) -> None:
        """Change an account's password (which also unlocks it) and end its sessions."""
        if len(password) < MIN_PASSWORD:
            raise UserError(f"the password for {name!r} is shorter than {MIN_PASSWORD} characters")
        user = self._need(name)
        with write_transaction(self.engine) as conn:
            conn.execute(STUDIO_USERS.update().where(STUDIO_USERS.c.id == user.id)
                         .values(password_hash=hash_password(password), failed_logins=0, locked_until=None))
            conn.execute(STUDIO_SESSIONS.delete().where(STUDIO_SESSIONS.c.user_id == user.id))

    def set_role(self, name: str, role: str) -> User:
        """Change an account's role."""
        if role not in ROLES:
            raise UserError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        user = self._need(name)
        with write_transaction(self.engine) as conn:
            conn.execute(STUDIO_USERS.update().where(STUDIO_USERS.c.id == user.id).values(role=role))
        return self._need(name)

    def disable(self, name: str) -> None:
        """Disable an account (it cannot log in; its sessions end; its labels stay)."""
        user = self._need(name)
        with write_transaction(self.engine) as conn:
            conn.execute(STUDIO_USERS.update().where(STUDIO_USERS.c.id == user.id).values(disabled_at=time.time()))
            conn.execute(STUDIO_SESSIONS.delete().where(STUDIO_SESSIONS.c.user_id == user.id))

    def verify(self, name: str, password: str, *, now: float | None = None) -> User | None:
        """The account if ``password`` is its password, it is enabled and not locked; None otherwise, with the
        same work either way (a wrong name, a wrong password and a locked account cannot be told apart by
        time or answer). ``LOCK_AFTER`` failures in a row lock the account for ``LOCK_S`` seconds, doubling
        with each further failure (at most a day); a success clears the count."""
        now = time.time() if now is None else now
        users = STUDIO_USERS.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(STUDIO_USERS).where(users.name == name)).mappings().first()
        locked = row is not None and row["locked_until"] is not None and row["locked_until"] > now
        ok = check_password(password, row["password_hash"] if row and not locked else _DUMMY)
        if row is None or locked or row["disabled_at"] is not None:
            return None
        if not ok:
            with write_transaction(self.engine) as conn:
                failures = conn.execute(STUDIO_USERS.update().where(users.id == row["id"])
                                        .values(failed_logins=users.failed_logins + 1)
                                        .returning(users.failed_logins)).scalar_one()
                if failures >= LOCK_AFTER:
                    delay = min(86400.0, LOCK_S * 2 ** (failures - LOCK_AFTER))
                    conn.execute(STUDIO_USERS.update().where(users.id == row["id"]).values(locked_until=now + delay))
            return None
        if row["failed_logins"] or row["locked_until"] is not None:
            with write_transaction(self.engine) as conn:
                conn.execute(STUDIO_USERS.update().where(users.id == row["id"])
                             .values(failed_logins=0, locked_until=None))
        return User(row["id"], row["name"], row["role"], row["created_at"], row["disabled_at"])

    def open_session(self, user: User) -> tuple[str, Session]:
        """A new session for ``user``: its token (shown to the client once) and the session."""
        token = "st-" + secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user, secrets.token_urlsafe(24), now + self.session_s)
        with write_transaction(self.engine) as conn:
            conn.execute(STUDIO_SESSIONS.insert().values(token_hash=_digest(token), user_id=user.id, csrf=session.csrf,
                                                         created_at=now, expires_at=session.expires_at))
            conn.execute(STUDIO_SESSIONS.delete().where(STUDIO_SESSIONS.c.expires_at < now))  # old ones go
        return token, session

    def session(self, token: str) -> Session | None:
        """The live session of ``token``, or None (unknown, expired, or its account disabled)."""
        if not token.startswith("st-"):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(STUDIO_SESSIONS).where(STUDIO_SESSIONS.c.token_hash == _digest(token))
                               ).mappings().first()
        if row is None or row["expires_at"] < time.time():
            return None
        user = self.get(row["user_id"])
        if user is None or user.disabled_at is not None:
            return None
        return Session(user, row["csrf"], row["expires_at"])

    def close_session(self, token: str) -> None:
        """End the session (log out)."""
        with write_transaction(self.engine) as conn:
            conn.execute(STUDIO_SESSIONS.delete().where(STUDIO_SESSIONS.c.token_hash == _digest(token)))

    def _one(self, where: sa.ColumnElement[bool]) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*_PUBLIC).where(where)).mappings().first()
        return None if row is None else User(**row)

    def _need(self, name: str) -> User:
        user = self.by_name(name)
        if user is None:
            raise UserError(f"no account named {name!r} (tether studio users list)")
        return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
