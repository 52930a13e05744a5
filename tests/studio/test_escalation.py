"""Guards in escalate mode hold requests for people: through the official openai client against a running
gateway, a reviewer's approve, reject and edit reach the held requests, a deadline applies the default, a
held reply waits with its request, every step is in the audit chain, and decisions become training rows."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from tests.serve.test_gateway import _Server

from tether.guard.patterns import RegexGuardConfig
from tether.models.targets import target_generator
from tether.serve.app import Gateway, create_app
from tether.serve.audit import verify
from tether.serve.batching import BatchingGenerator
from tether.serve.keys import Scopes
from tether.serve.review import guard_rows
from tether.studio.accounts import Accounts
from tether.studio.app import create_studio

MODEL = "tiny:llama"


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    gateway = Gateway.open(f"sqlite:///{tmp_path_factory.mktemp('esc') / 'g.db'}")
    generator = BatchingGenerator(target_generator(MODEL), window_s=0.01)
    guards = [RegexGuardConfig(name="hold-in", mode="escalate", input=["forbidden"]).build(),
              RegexGuardConfig(name="hold-out", mode="escalate", output=["."]).build()]
    app = create_app(generator, gateway, MODEL, default_max_tokens=6, guards=guards, review_timeout_s=1.5,
                     review_poll_s=0.05)
    app.mount("/studio", create_studio(gateway.engine))
    server = _Server(app)
    Accounts(gateway.engine).create("rita", "reviewer password", "reviewer")
    studio = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/studio")
    token = studio.post("/api/login", json={"name": "rita", "password": "reviewer password"}).json()["token"]
    studio.headers["authorization"] = f"Bearer {token}"
    yield server, gateway, studio
    studio.close()
    server.stop()
    generator.close()


def _ask(server, key_secret, text):
    return server.client(key_secret).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                                             max_tokens=6, temperature=0)


def _claim_when_waiting(studio, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = studio.post("/api/review/claim")
        if got.status_code == 200:
            return got.json()
        time.sleep(0.05)
    raise AssertionError("nothing was escalated")


def test_approve_reject_and_edit_reach_the_held_requests(held):
    server, gateway, studio = held
    _, secret = gateway.keys.create("in-only", Scopes(guards=["hold-in"]))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_ask, server, secret, "a forbidden request, approved")
        item = _claim_when_waiting(studio)
        assert item["stage"] == "input" and item["conversation"][-1]["content"] == "a forbidden request, approved"
        assert not waiting.done()  # held until the reviewer decides
        assert studio.post(f"/api/review/{item['id']}/decide", json={"decision": "approved"}).status_code == 200
        reply = waiting.result(timeout=20)
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens > 0

        waiting = pool.submit(_ask, server, secret, "a forbidden request, rejected")
        item = _claim_when_waiting(studio)
        studio.post(f"/api/review/{item['id']}/decide", json={"decision": "rejected"})
        with pytest.raises(openai.BadRequestError, match="rejected by reviewer") as refused:
            waiting.result(timeout=20)
        assert refused.value.code == "content_filter"

        waiting = pool.submit(_ask, server, secret, "a forbidden request, answered by a person")
        item = _claim_when_waiting(studio)
        studio.post(f"/api/review/{item['id']}/decide", json={"decision": "edited", "text": "A person's answer."})
        reply = waiting.result(timeout=20)
        assert reply.choices[0].message.content == "A person's answer." and reply.usage.total_tokens == 0

    # Nobody decides: the deadline (1.5 s here) gives the default, reject.
    start = time.time()
    with pytest.raises(openai.BadRequestError, match="deadline"):
        _ask(server, secret, "a forbidden request nobody reviews")
    assert 1.4 < time.time() - start < 6
    # Every step is in the audit chain, which still verifies: each escalation, each decision, each answer.
    assert verify(gateway.audit).ok
    decisions = [json.loads(record)["decision"] for _, record, _, _ in gateway.audit.rows()]
    assert decisions.count("escalated") == 4
    assert {"review_approved", "review_rejected", "review_edited", "answered_by_reviewer"} <= set(decisions)
    rows = guard_rows(gateway.review.items(states=("approved", "rejected", "edited", "expired")))
    assert [(r["label"], r["text"]) for r in rows] == [("safe", "a forbidden request, approved"),
                                                      ("unsafe", "a forbidden request, rejected")]


def test_a_held_reply_waits_with_its_request_and_an_edit_replaces_it(held):
    server, gateway, studio = held
    _, secret = gateway.keys.create("out-only", Scopes(guards=["hold-out"]))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_ask, server, secret, "hello")
        item = _claim_when_waiting(studio)
        assert item["stage"] == "output" and item["reply"]
        studio.post(f"/api/review/{item['id']}/decide", json={"decision": "edited", "text": "Edited reply."})
        assert waiting.result(timeout=20).choices[0].message.content == "Edited reply."


def test_two_reviewers_claiming_at_once_get_different_held_requests(held):
    server, gateway, studio = held
    Accounts(gateway.engine).create("sam", "reviewer password", "reviewer")
    other = httpx.Client(base_url=studio.base_url)
    other.headers["authorization"] = "Bearer " + other.post(
        "/api/login", json={"name": "sam", "password": "reviewer password"}).json()["token"]
    _, secret = gateway.keys.create("in-only-2", Scopes(guards=["hold-in"]))
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(_ask, server, secret, f"forbidden {i}") for i in range(2)]
        deadline = time.time() + 10
        while gateway.review.counts().get("pending", 0) < 2 and time.time() < deadline:
            time.sleep(0.05)
        barrier = threading.Barrier(2)

        def claim(client):
            barrier.wait()
            return client.post("/api/review/claim").json()

        a, b = pool.map(claim, [studio, other])
        assert a["id"] != b["id"] and {a["claimed_by"], b["claimed_by"]} == {
            Accounts(gateway.engine).by_name("rita").id, Accounts(gateway.engine).by_name("sam").id}
        # Neither may decide the other's item.
        assert other.post(f"/api/review/{a['id']}/decide", json={"decision": "approved"}).status_code == 409
        for client, item in ((studio, a), (other, b)):
            assert client.post(f"/api/review/{item['id']}/decide", json={"decision": "approved"}).status_code == 200
        assert all(w.result(timeout=20).choices for w in waiting)
    other.close()
