"""Shared by the gateway's tests: a throwaway database on the machine's PostgreSQL."""

import contextlib
import secrets

import sqlalchemy as sa

PG = "postgresql+pg8000://postgres@127.0.0.1:5432"


@contextlib.contextmanager
def postgres_database(prefix):
    """A new, empty database on the local PostgreSQL: its URL; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def clear_of_a_minute_boundary(seconds: float = 10.0) -> None:
    """Wait, if need be, until at least ``seconds`` remain before the next whole minute: limits count in fixed
    one-minute windows, so a burst that crossed into the next window could rightly be allowed N more."""
    import time

    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(proc, url, *, timeout=60.0):
    """Wait until ``url`` answers 200 while the server process ``proc`` runs; its stderr's end if it dies or
    never answers."""
    import time

    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"{url} did not come up: {proc.stderr.read().decode()[-2000:]}")
