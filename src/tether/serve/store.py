"""The gateway's state in one SQLAlchemy database: keys, the audit chain, kill switches, rate counters, the
review queue, and the labelling studio's people, projects and labels.

SQLite by default (a file beside the server, in WAL mode so the server and the ``tether keys`` /
``tether audit`` commands share it); PostgreSQL by URL (``postgresql+pg8000://...``) when several server
processes or replicas must see one state. Every operation that must hold across processes is one atomic
statement or one transaction that takes a row lock first (a conditional ``UPDATE``), which both
databases serialise. The schema is Alembic's (``tether/serve/migrations``), brought up to date when a
store is opened; :data:`METADATA` describes the newest revision, and a test holds the two equal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tether.core.errors import UserError

DEFAULT_DB = "sqlite:///tether-serve.db"

METADATA = sa.MetaData()

KEYS = sa.Table(
    "api_keys", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),  # public: listed, revoked by
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

# One row per answered or refused request, each holding the hash of the one before (tether audit verify).
AUDIT = sa.Table(
    "audit_log", METADATA,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("record", sa.Text, nullable=False),  # canonical JSON of what happened
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
# The chain's head: the last seq and hash, locked by every append so appends from many processes serialise.
AUDIT_HEAD = sa.Table(
    "audit_head", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

KILL_SWITCHES = sa.Table(
    "kill_switches", METADATA,
    sa.Column("target", sa.String(300), primary_key=True),  # "all", "model:NAME" or "key:ID"
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

# Fixed-window counters per key: requests and tokens in the window that starts at ``window``.
RATE_WINDOWS = sa.Table(
    "rate_windows", METADATA,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("window", sa.BigInteger, primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
)
# Tokens each key has used of its budget (reserved before generation, settled after).
BUDGETS = sa.Table(
    "token_budgets", METADATA,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("used", sa.BigInteger, nullable=False),
)


# Requests in flight per key: one lease row each, expiring so a crashed server cannot hold slots forever;
# admissions for a key serialise on its row in CONCURRENCY_LOCKS.
LEASES = sa.Table(
    "in_flight", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False, index=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)
CONCURRENCY_LOCKS = sa.Table(
    "in_flight_locks", METADATA,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("admissions", sa.BigInteger, nullable=False),
)


# Requests and replies a guard escalated to people (tether.serve.review): written before the held request
# waits, claimed by one reviewer at a time under a lease, decided once (a conditional UPDATE), or expired to
# the policy's default at the deadline.
REVIEW_ITEMS = sa.Table(
    "review_items", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("deadline", sa.Float, nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),  # input (the request) or output (the model's reply)
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("guard", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("conversation", sa.JSON, nullable=False),
    sa.Column("reply", sa.Text, nullable=True),
    sa.Column("default_action", sa.String(16), nullable=False),  # what the deadline decides: reject or approve
    sa.Column("state", sa.String(16), nullable=False, index=True),  # pending claimed approved rejected edited expired
    sa.Column("claimed_by", sa.String(32), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("decided_by", sa.String(32), nullable=True),
    sa.Column("decided_at", sa.Float, nullable=True),
    sa.Column("text", sa.Text, nullable=True),  # an edit: the reply the client gets
    sa.Column("note", sa.Text, nullable=True),
)

# The labelling studio (tether.studio): people, their sessions, projects, members, items and labels.
STUDIO_USERS = sa.Table(
    "studio_users", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(300), nullable=False),  # scrypt, salted (tether.studio.accounts)
    sa.Column("role", sa.String(16), nullable=False),  # annotator, reviewer or admin
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled_at", sa.Float, nullable=True),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),  # since the last success
    sa.Column("locked_until", sa.Float, nullable=True),  # too many failures: no login before then
)
STUDIO_SESSIONS = sa.Table(
    "studio_sessions", METADATA,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(32), nullable=False, index=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
STUDIO_PROJECTS = sa.Table(
    "studio_projects", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("spec", sa.JSON, nullable=False),  # kind, overlap, scale, flags, gold threshold, instructions
    sa.Column("created_at", sa.Float, nullable=False),
)
STUDIO_MEMBERS = sa.Table(
    "studio_members", METADATA,
    sa.Column("project_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), primary_key=True),
)
STUDIO_ITEMS = sa.Table(
    "studio_items", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("project_id", sa.String(32), nullable=False, index=True),
    sa.Column("payload", sa.JSON, nullable=False),  # prompt and response(s), and the source row's other fields
    sa.Column("gold", sa.JSON(none_as_null=True), nullable=True),  # a gold question's right answer (quality control)
    sa.Column("created_at", sa.Float, nullable=False),
)
# One row per (item, annotator): taken under a lease while the annotator works on it, the label once given.
STUDIO_LABELS = sa.Table(
    "studio_labels", METADATA,
    sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("project_id", sa.String(32), nullable=False, index=True),
    sa.Column("lease_until", sa.Float, nullable=False),
    sa.Column("value", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("labelled_at", sa.Float, nullable=True),
    sa.Column("seconds", sa.Float, nullable=True),
)

# The monitor's output (tether.serve.watch): each closed window's signal means (the dashboard's time series)
# and each alarm with the action taken and the requests nearest it.
MONITOR_WINDOWS = sa.Table(
    "monitor_windows", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("scope", sa.String(64), nullable=False, index=True),  # "all" or "key:ID"
    sa.Column("window", sa.BigInteger, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("means", sa.JSON, nullable=False),
)
MONITOR_ALARMS = sa.Table(
    "monitor_alarms", METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("scope", sa.String(64), nullable=False, index=True),
    sa.Column("signal", sa.String(200), nullable=False),
    sa.Column("window", sa.BigInteger, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("z", sa.Float, nullable=False),
    sa.Column("mean", sa.Float, nullable=False),
    sa.Column("reference", sa.Float, nullable=False),
    sa.Column("actions", sa.JSON, nullable=False),  # what was done: [{"action", "target", ...}]
    sa.Column("examples", sa.JSON, nullable=False),
)

# Staged rollouts (tether.serve.rollout): one row per rollout (its config, state, step and traffic share), and
# per step and version the counts its online gate judges, incremented in each request's own transaction.
ROLLOUTS = sa.Table(
    "rollouts", METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(300), nullable=False, index=True),  # the name clients call
    sa.Column("canary", sa.String(1000), nullable=False),  # the new version's source (directory, hub id, URL)
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),  # running promoted rolled_back
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("share", sa.Float, nullable=False),  # the canary's share of the model's traffic now
    sa.Column("safeguards", sa.JSON, nullable=False),  # guards a crossed capability threshold requires
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("step_started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)
ROLLOUT_COUNTS = sa.Table(
    "rollout_counts", METADATA,
    sa.Column("rollout_id", sa.String(32), primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("version", sa.String(16), primary_key=True),  # canary or stable
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),  # the model failed (5xx)
    sa.Column("flagged", sa.BigInteger, nullable=False),  # a guard blocked, cut or redacted the reply
    sa.Column("refusals", sa.BigInteger, nullable=False),  # the reply refused (the phrase detector)
)


def connect(url: str = DEFAULT_DB) -> sa.Engine:
    """An engine on ``url`` with every table created (a one-line error for a URL that does not work)."""
    try:
        if url.startswith("sqlite"):
            # A file needs no liveness ping, and a pool as large as the server's thread pool keeps connections
            # (each set up with its pragmas) instead of opening and dropping them under load.
            engine = sa.create_engine(url, pool_size=48, max_overflow=16)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # a malformed URL or a missing driver
        raise UserError(f"store {url!r}: {exc}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
    try:
        migrate(engine)
    except sa.exc.DBAPIError as exc:
        raise UserError(f"store {url!r}: {str(exc.orig).splitlines()[0]}") from None
    return engine


MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(engine: sa.Engine) -> str:
    """Bring the store's schema to the newest migration (Alembic, ``tether/serve/migrations``); its revision.

    Servers starting together take turns (PostgreSQL: an advisory lock; SQLite: the write lock), so each
    migration runs once. A store made before migrations existed, with the first revision's tables and no
    revision recorded, is recorded as that revision and upgraded from there.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7310453)"))  # one migrating process at a time
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return str(head)
        cfg.attributes["connection"] = conn
        if current is None and sa.inspect(conn).has_table("api_keys"):
            command.stamp(cfg, "0001")
        command.upgrade(cfg, "head")
    return str(head)


@contextlib.contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that will write: on SQLite it takes the write lock at its start (``BEGIN IMMEDIATE``), so
    it waits its turn instead of failing when another writer commits between its reads and its writes."""
    with engine.connect() as conn:
        conn.execution_options(tether_immediate=True)
        with conn.begin():
            yield conn


def _sqlite_begin(conn: sa.Connection) -> None:
    # Transactions are begun here, not by the sqlite3 module (whose implicit BEGIN comes only before a write,
    # which makes a SAVEPOINT issued first commit on its own release).
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("tether_immediate") else "BEGIN")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver's own transaction handling off: see _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
    cursor.close()
