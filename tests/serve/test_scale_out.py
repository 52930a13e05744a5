"""Two tether serve processes sharing one PostgreSQL database (the machine's local service), driven by 200
concurrent clients: limits hold across processes, a budget is never exceeded, a kill switch stops both
within a second, and kill -9 under load loses no audit row of an answered request."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from tests.serve.conftest import clear_of_a_minute_boundary, free_port, postgres_database, wait_until_up

from tether.serve.app import Gateway
from tether.serve.audit import verify
from tether.serve.keys import Scopes

# Two real server processes on PostgreSQL (10 s to start, 25 s in all): the slow tier
# (python -m pytest -m slow tests/serve/test_scale_out.py). Limits shared by two gateways through Redis, and
# kill switches, budgets and throttles in one process, stay in every run (test_redis.py, test_gateway.py).
pytestmark = pytest.mark.slow

TETHER = str(Path(sys.executable).parent / "tether")
ASK = {"model": "tiny:llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def database():
    with postgres_database("tether_serve") as url:
        yield url


def _launch(db, port, *extra):
    env = {**os.environ, "TETHER_DEBUG": ""}
    return subprocess.Popen([TETHER, "serve", "--model", "tiny:llama", "--db", db, "--port", str(port),
                             "--max-tokens", "2", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _ready(proc, port):
    return wait_until_up(proc, f"http://127.0.0.1:{port}/health")


@pytest.fixture(scope="module")
def servers(database):
    gateway = Gateway.open(database)
    ports = [free_port(), free_port()]
    procs = [_ready(proc, p) for proc, p in [(_launch(database, p), p) for p in ports]]  # started together
    yield gateway, ports, procs, database
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
    gateway.engine.dispose()


# One connection pool for every request of these tests (each of 200 threads gets a connection of its own): a new
# httpx client per request costs 50 ms of CPU for its TLS context, which was most of these tests' time.
_HTTP = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=400, max_keepalive_connections=400))


def _post(port, secret, body=ASK):
    return _HTTP.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {secret}"})


def test_a_limit_holds_across_two_servers_under_200_concurrent_clients(servers):
    gateway, ports, _, _ = servers
    _, secret = gateway.keys.create("limited", Scopes(rpm=20))
    clear_of_a_minute_boundary()
    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(lambda i: _post(ports[i % 2], secret).status_code, range(200)))
    assert statuses.count(200) == 20 and statuses.count(429) == 180  # exactly N in the minute, not N per server



def test_a_budget_is_never_exceeded_under_concurrency(servers):
    gateway, ports, _, _ = servers
    key, secret = gateway.keys.create("budgeted", Scopes(budget_tokens=300))
    with ThreadPoolExecutor(100) as pool:
        replies = list(pool.map(lambda i: _post(ports[i % 2], secret), range(100)))
    used = sum(r.json()["usage"]["total_tokens"] for r in replies if r.status_code == 200)
    assert 0 < used <= 300 and {r.status_code for r in replies} == {200, 429}
    with gateway.engine.connect() as conn:
        settled = conn.execute(sa.text("SELECT used FROM token_budgets WHERE key_id = :k"), {"k": key.id}).scalar()
    assert settled == used  # reservations were settled to what was used


def test_a_kill_switch_stops_both_servers_within_a_second(servers):
    gateway, ports, _, database = servers
    _, secret = gateway.keys.create("killable")
    assert all(_post(p, secret).status_code == 200 for p in ports)
    subprocess.run([TETHER, "serve", "kill", "--reason", "drill", "--db", database], check=True, capture_output=True)
    killed_at = time.monotonic()
    stopped = {}
    while len(stopped) < 2 and time.monotonic() - killed_at < 3:
        for p in ports:
            if p not in stopped and _post(p, secret).status_code == 503:
                stopped[p] = time.monotonic() - killed_at
        time.sleep(0.02)
    gateway.kills.revive("all")
    assert len(stopped) == 2 and max(stopped.values()) < 1.0, stopped
    time.sleep(0.5)
    assert all(_post(p, secret).status_code == 200 for p in ports)


def test_a_kill_switch_ends_in_flight_streams_on_both_servers_within_a_second(servers):
    gateway, ports, _, database = servers
    key, secret = gateway.keys.create("streaming")
    # Greedy decoding of the tiny random model never reaches its end-of-text token: 2,500 tokens keep each
    # stream in flight for seconds, long enough to pull the switch in the middle of both.
    ask = {**ASK, "max_tokens": 2500, "temperature": 0, "stream": True}
    started, ended = {}, {}

    def stream(port):
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=ask, timeout=60,
                          headers={"Authorization": f"Bearer {secret}"}) as reply:
            for line in reply.iter_lines():
                if '"content"' in line and port not in started:
                    started[port] = time.monotonic()
                if '"error"' in line:
                    ended[port] = (time.monotonic(), json.loads(line[len("data: "):])["error"]["code"])
                    return
                if line == "data: [DONE]":
                    return

    with ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(stream, p) for p in ports]
        deadline = time.monotonic() + 30
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(started) == 2, "the streams did not start"
        subprocess.run([TETHER, "serve", "kill", "--reason", "stream drill", "--db", database], check=True,
                       capture_output=True)
        killed_at = time.monotonic()
        for future in streams:
            future.result(timeout=30)
    gateway.kills.revive("all")
    assert {p: code for p, (_, code) in ended.items()} == {ports[0]: "killed", ports[1]: "killed"}
    assert max(at for at, _ in ended.values()) - killed_at < 1.0, ended
    # The switch also stopped the models: each stream's closing row counts the tokens made before it, not 2,500.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        closing = [r for r in (json.loads(r) for _, r, _, _ in gateway.audit.rows()) if r.get("decision") == "killed"
                   and r.get("key") == key.id]
        if len(closing) == 2:
            break
        time.sleep(0.1)
    assert len(closing) == 2 and all(0 < r["completion_tokens"] < 2500 for r in closing), closing


def test_kill_9_under_load_loses_no_audit_row_of_an_answered_request(servers):
    gateway, ports, procs, _ = servers
    _, secret = gateway.keys.create("load")
    victim = procs[0]
    answered = []

    def hammer(i):
        try:
            reply = _post(ports[0], secret)
        except httpx.HTTPError:
            return  # the server died under this request: it was never answered
        if reply.status_code == 200:
            answered.append(int(reply.headers["x-tether-audit-seq"]))

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(hammer, i) for i in range(400)]
        time.sleep(1.5)
        victim.send_signal(signal.SIGKILL)
        for f in futures:
            f.result()
    victim.wait(timeout=10)
    assert answered, "no request was answered before the kill"
    rows = {seq: json.loads(record) for seq, record, _, _ in gateway.audit.rows()}
    assert all(seq in rows and rows[seq]["status"] == 200 for seq in answered)
    assert verify(gateway.audit).ok


def test_workers_of_one_server_share_a_sqlite_store(tmp_path):
    # tether serve --workers 2: two processes on one port and one SQLite file (WAL); a limit holds across them.
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    gateway = Gateway.open(db)
    _, secret = gateway.keys.create("two workers", Scopes(rpm=10))
    port = free_port()
    proc = subprocess.Popen([TETHER, "serve", "--model", "tiny:llama", "--db", db, "--port", str(port), "--workers",
                             "2", "--max-tokens", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        clear_of_a_minute_boundary()
        with ThreadPoolExecutor(60) as pool:
            statuses = list(pool.map(lambda i: _post(port, secret).status_code, range(60)))
        assert statuses.count(200) == 10 and statuses.count(429) == 50
        assert verify(gateway.audit).ok and len(list(gateway.audit.rows())) == 60
    finally:
        proc.terminate()
        proc.wait(timeout=30)

