"""Per-minute windows counted in the machine's Redis (tether serve --redis), by two gateways that share
nothing else in memory: a limit holds exactly across them under 200 concurrent clients, token
reservations are settled in Redis, and the database holds no window of its own."""

import concurrent.futures
import secrets

import httpx
import redis
import sqlalchemy as sa
from tests.serve.conftest import clear_of_a_minute_boundary
from tests.serve.test_gateway import _FixedGenerator, _Server

from tether.serve.app import Gateway, create_app
from tether.serve.batching import BatchingGenerator
from tether.serve.keys import Scopes

REDIS = "redis://127.0.0.1:6379/0"


def test_two_gateways_hold_a_limit_together_through_redis(tmp_path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    prefix = f"tether-test-{secrets.token_hex(4)}"
    gateways = [Gateway.open(db, redis=REDIS) for _ in range(2)]
    for gateway in gateways:
        gateway.limiter.windows.prefix = prefix  # this test's keys only
    generators = [BatchingGenerator(_FixedGenerator()) for _ in gateways]
    servers = [_Server(create_app(g, gw, "fixed")) for g, gw in zip(generators, gateways, strict=True)]
    client = redis.Redis.from_url(REDIS)
    try:
        ask = {"model": "fixed", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12}

        http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=400, max_keepalive_connections=400))

        def post(i, secret):  # one pool for all: a client per request would cost 50 ms of CPU each
            return http.post(f"http://127.0.0.1:{servers[i % 2].port}/v1/chat/completions", json=ask,
                             headers={"Authorization": f"Bearer {secret}"})

        key, secret = gateways[0].keys.create("limited in redis", Scopes(rpm=20))
        clear_of_a_minute_boundary()
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(lambda i: post(i, secret).status_code, range(200)))
        assert statuses.count(200) == 20 and statuses.count(429) == 180
        windows = client.keys(f"{prefix}:{key.id}:*")
        assert [int(client.hget(w, "requests")) for w in windows] == [20]
        with gateways[0].engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM rate_windows")).scalar() == 0

        key, secret = gateways[1].keys.create("tokens in redis", Scopes(tpm=200))
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            replies = list(pool.map(lambda i: post(i, secret), range(40)))
        answered = [r for r in replies if r.status_code == 200]
        assert answered and len(answered) < 40
        used = sum(r.json()["usage"]["total_tokens"] for r in answered)
        (window,) = client.keys(f"{prefix}:{key.id}:*")
        assert int(client.hget(window, "tokens")) == used <= 200  # settled to what was used, never past the limit
    finally:
        for server, generator in zip(servers, generators, strict=True):
            server.stop()
            generator.close()
        for key in client.keys(f"{prefix}:*"):
            client.delete(key)
