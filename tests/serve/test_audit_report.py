"""tether audit report: traffic of a known make-up sent through a running gateway with the openai client, one
reviewer's decision, key and switch changes from the CLI; the report counts exactly that, its bundle checks
itself with nothing but Python, and a tampered log or bundle fails loudly."""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.serve.test_gateway import _FixedGenerator, _serving

from tether.cli.main import main
from tether.guard.patterns import RegexGuardConfig
from tether.serve.audit_report import parse_time
from tether.serve.keys import Scopes
from tether.studio.accounts import Accounts
from tether.studio.app import create_studio


def _cli(*args):
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return done.value.code or 0


def test_the_report_reproduces_the_traffic_sent_and_refuses_a_tampered_log(tmp_path, capsys):
    guards = [RegexGuardConfig(name="words", input=["forbidden"]).build(),
              RegexGuardConfig(name="secrets", output=[r"SECRET-\d+"]).build(),
              RegexGuardConfig(name="hold", mode="escalate", input=["ask a person"]).build()]
    db_file = tmp_path / "g.db"
    db = f"sqlite:///{db_file}"
    with _serving(_FixedGenerator(), "fixed", db_file, guards=guards, review_timeout_s=10, review_poll_s=0.05,
                  kill_refresh_s=0.05) as (server, gateway):
        before = time.time()
        _, plain = gateway.keys.create("plain", Scopes(guards=["words"]))
        _, cut = gateway.keys.create("cut", Scopes(guards=["secrets"]))
        limited, slow = gateway.keys.create("limited", Scopes(rpm=2, guards=[]))
        _, held = gateway.keys.create("held", Scopes(guards=["hold"]))
        ask = {"model": "fixed", "max_tokens": 8}
        for _ in range(3):  # answered
            server.client(plain).chat.completions.create(**ask, messages=[{"role": "user", "content": "hi"}])
        list(server.client(plain).chat.completions.create(**ask, messages=[{"role": "user", "content": "hi"}],
                                                          stream=True))  # answered, streamed: one request
        for _ in range(2):  # blocked before the model
            with pytest.raises(openai.BadRequestError):
                server.client(plain).chat.completions.create(**ask, messages=[{"role": "user", "content": "forbidden"}])
        server.client(cut).chat.completions.create(**ask, messages=[{"role": "user", "content": "code?"}])  # cut
        for expected in (None, None, openai.RateLimitError):  # rpm 2: the third is throttled
            if expected is None:
                server.client(slow).completions.create(**ask, prompt="x")
            else:
                with pytest.raises(expected):
                    server.client(slow).completions.create(**ask, prompt="x")
        with pytest.raises(openai.AuthenticationError):
            server.client("tk-nobody").chat.completions.create(**ask, messages=[{"role": "user", "content": "x"}])
        # One held request, decided by a reviewer through the studio on the same store.
        Accounts(gateway.engine).create("rita", "reviewer password", "reviewer")
        with ThreadPoolExecutor(1) as pool, TestClient(create_studio(gateway.engine)) as studio:
            token = studio.post("/api/login", json={"name": "rita", "password": "reviewer password"}).json()["token"]
            studio.headers["authorization"] = f"Bearer {token}"
            waiting = pool.submit(server.client(held).chat.completions.create, **ask,
                                  messages=[{"role": "user", "content": "please ask a person"}])
            deadline = time.time() + 10
            while (claimed := studio.post("/api/review/claim")).status_code != 200 and time.time() < deadline:
                time.sleep(0.05)
            item = claimed.json()
            assert studio.post(f"/api/review/{item['id']}/decide", json={"decision": "approved"}).status_code == 200
            assert waiting.result(timeout=20).choices
        assert _cli("keys", "revoke", limited.id, "--db", db) == 0
        assert _cli("serve", "kill", "--model", "fixed", "--reason", "drill", "--db", db) == 0
        time.sleep(0.2)
        with pytest.raises(openai.InternalServerError):  # killed
            server.client(plain).chat.completions.create(**ask, messages=[{"role": "user", "content": "hi"}])
        assert _cli("serve", "revive", "--model", "fixed", "--db", db) == 0
        after = time.time() + 1
    capsys.readouterr()

    assert _cli("audit", "report", "--json", "--since", str(before), "--until", str(after), "--db", db) == 0
    doc = json.loads(capsys.readouterr().out)
    requests = doc["requests"]
    assert requests["total"] == 3 + 1 + 2 + 1 + 3 + 1 + 1 + 1
    assert requests["by_decision"] == {"answered": 3 + 1 + 1 + 2 + 1, "content_filter": 2, "rate_limited": 1,
                                       "invalid_api_key": 1, "killed": 1}
    assert requests["served"] == 8 and doc["blocked"] == {"requests": 2, "replies_cut": 1,
                                                          "flagged_by_guard": {"hold": 1, "secrets": 1, "words": 2}}
    assert requests["by_endpoint"] == {"/v1/chat/completions": 10, "/v1/completions": 3}
    assert doc["escalated"]["total"] == 1 and doc["escalated"]["by_guard"] == {"hold": 1}
    assert doc["reviews"]["decisions"] == {"approved": 1} and doc["reviews"]["by_reviewer"] == {"rita": 1}
    changes = [c["decision"] for c in doc["changes"]]
    assert changes == ["key_created"] * 4 + ["key_revoked", "killed", "revived"]
    assert doc["chain"]["verified"] and doc["period"]["rows"] == doc["chain"]["rows"]

    # A period that starts later holds none of it.
    assert _cli("audit", "report", "--json", "--since", str(after), "--db", db) == 0
    assert json.loads(capsys.readouterr().out)["requests"]["total"] == 0

    # The bundle checks itself with the standard library alone; an edit to any file of it is found.
    bundle = tmp_path / "bundle"
    assert _cli("audit", "report", "--out", str(bundle), "--db", db) == 0
    assert {p.name for p in bundle.iterdir()} == {"report.json", "report.md", "audit.jsonl", "verify.py",
                                                  "MANIFEST.json"}
    checked = subprocess.run([sys.executable, "-I", str(bundle / "verify.py")], capture_output=True, text=True)
    assert checked.returncode == 0 and "intact" in checked.stdout
    assert "| rate_limited | 1 |" in (bundle / "report.md").read_text()
    lines = (bundle / "audit.jsonl").read_text().splitlines()
    row = json.loads(lines[5])
    row["record"]["status"] = 200 if row["record"].get("status") != 200 else 201
    lines[5] = json.dumps(row)
    (bundle / "audit.jsonl").write_text("\n".join(lines) + "\n")
    broken = subprocess.run([sys.executable, "-I", str(bundle / "verify.py")], capture_output=True, text=True)
    assert broken.returncode == 1 and "audit.jsonl" in broken.stderr
    assert _cli("audit", "report", "--out", str(bundle), "--db", db) == 2  # never overwritten

    # A quietly edited row in the store: no report, exit 1, the row named.
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET record = replace(record, '\"rate_limited\"', '\"answered\"')"))
    capsys.readouterr()
    assert _cli("audit", "report", "--db", db) == 1
    err = capsys.readouterr().err
    assert "tampered" in err and "broken at row" in err
    assert _cli("audit", "report", "--until", "yesterday", "--db", db) == 2  # a period it cannot read: a user error


def test_periods_are_read_as_iso_dates_or_epoch_seconds():
    assert parse_time("2026-12-01", option="--since") == 1796083200.0
    assert parse_time("2026-12-01T01:00:00+01:00", option="--since") == 1796083200.0
    assert parse_time("1796083200.5", option="--since") == 1796083200.5
    assert parse_time(None, option="--since") is None
