"""The store's schema comes from Alembic migrations: a new store is at the newest revision, its tables are
exactly what the code describes (on SQLite and on PostgreSQL), a store made before migrations is adopted,
and servers opening a new PostgreSQL store at once migrate it once."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from tests.serve.conftest import postgres_database

from tether.serve.store import METADATA, connect, migrate


@pytest.fixture
def pg_url():
    with postgres_database("tether_migrate") as url:
        yield url


def _revision(engine):
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _differences(engine):
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), METADATA)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_new_store_is_migrated_to_exactly_the_tables_the_code_describes(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'g.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = connect(url)
    assert _revision(engine) == "0004"
    assert _differences(engine) == []
    assert migrate(engine) == "0004"  # a second time: nothing to do
    engine.dispose()


def test_a_store_made_before_migrations_is_adopted(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = sa.create_engine(url)
    later = ("review_", "studio_", "monitor_", "rollout")  # tables of revisions 0002 onwards
    first = [t for name, t in METADATA.tables.items() if not name.startswith(later)]
    METADATA.create_all(old, tables=first)  # how the store was made before it had migrations (revision 0001's)
    with old.begin() as conn:
        conn.execute(METADATA.tables["kill_switches"].insert().values(target="all", reason="kept", at=1.0))
    old.dispose()
    engine = connect(url)
    assert _revision(engine) == "0004" and _differences(engine) == []  # adopted as 0001, then upgraded
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT reason FROM kill_switches")).scalar() == "kept"


def test_servers_opening_a_new_postgres_store_at_once_migrate_it_once(pg_url):
    with ThreadPoolExecutor(4) as pool:
        engines = list(pool.map(lambda _: connect(pg_url), range(4)))
    assert {_revision(e) for e in engines} == {"0004"}
    with engines[0].connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for engine in engines:
        engine.dispose()


def test_the_migrate_command_reports_the_revision(tmp_path, capsys):
    from tether.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["serve", "migrate", "--db", f"sqlite:///{tmp_path / 'm.db'}"])
    assert done.value.code in (0, None) and "store at revision 0004" in capsys.readouterr().out
