"""The gateway's code tool: allowed per key scope, throttled and killed like a model call, audited; the
sandbox's own limits are tested in tests/unit/test_sandbox.py."""

import json
import os
import shutil

import httpx
import pytest
from tests.serve.test_gateway import _FixedGenerator, _serving

from tether.cli.main import main
from tether.core.sandbox import Sandbox, SandboxConfig
from tether.serve.keys import KeyStore, Scopes

if shutil.which("bwrap") is None and not os.environ.get("TETHER_REQUIRE_SANDBOX"):
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)


def _run(server, secret, body):
    return httpx.post(f"http://127.0.0.1:{server.port}/v1/tools/code", json=body,
                      headers={"Authorization": f"Bearer {secret}"} if secret else {}, timeout=30)


def test_the_code_tool_runs_for_keys_allowed_it_and_is_throttled_killed_and_audited(tmp_path):
    sandbox = Sandbox(SandboxConfig(time_s=5, cpu_s=2))
    with _serving(_FixedGenerator(), "fixed", tmp_path / "g.db", kill_refresh_s=0.0, sandbox=sandbox) as (
            server, gateway):
        _, coder = gateway.keys.create("coder", Scopes(tools=["code"], rpm=3))
        _, chatter = gateway.keys.create("chat only")
        program = {"code": "import sys\nprint(sum(map(int, sys.stdin.read().split())))", "stdin": "1 2 3"}
        assert _run(server, None, program).status_code == 401
        refused = _run(server, chatter, program)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "tool_not_allowed"
        ran = _run(server, coder, program)
        assert ran.status_code == 200, ran.text
        assert ran.json() | {"seconds": 0} == {"object": "tool.result", "tool": "code", "exit_code": 0,
                                                "signal": None, "timed_out": False, "stdout": "6\n", "stderr": "",
                                                "seconds": 0, "truncated": False}
        looped = _run(server, coder, {"code": "while True:\n    pass"}).json()
        assert looped["signal"] == "SIGXCPU" and looped["exit_code"] == 152
        escape = _run(server, coder, {"code": "pass", "files": {"../x": "y"}})
        assert escape.status_code == 400 and escape.json()["error"]["code"] == "invalid_file"
        # The third request of the minute was the refused file name: the fourth is over the key's rpm.
        limited = _run(server, coder, program)
        assert limited.status_code == 429 and "Retry-After" in limited.headers
        gateway.kills.kill(f"key:{gateway.keys.list()[0].id}", "tool drill")
        killed = _run(server, coder, program)
        assert killed.status_code == 503 and killed.json()["error"]["code"] == "killed"
        rows = [json.loads(r) for _, r, _, _ in gateway.audit.rows()]
        tool_rows = [r for r in rows if r.get("tool") == "code"]
        assert [r["decision"] for r in tool_rows] == ["invalid_api_key", "tool_not_allowed", "ran", "ran",
                                                     "invalid_file", "rate_limited", "killed"]
        assert tool_rows[2]["exit_code"] == 0 and len(tool_rows[2]["code_sha256"]) == 64


def test_a_server_without_the_tool_says_so(tmp_path):
    with _serving(_FixedGenerator(), "fixed", tmp_path / "g.db") as (server, gateway):
        _, coder = gateway.keys.create("coder", Scopes(tools=["code"]))
        off = _run(server, coder, {"code": "print(1)"})
        assert off.status_code == 404 and off.json()["error"]["code"] == "tool_not_enabled"


def test_keys_create_grants_tools_and_refuses_unknown_ones(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    with pytest.raises(SystemExit) as done:
        main(["keys", "create", "coder", "--tools", "code", "--db", db])
    assert done.value.code in (0, None) and KeyStore(db).list()[0].scopes.tools == ["code"]
    with pytest.raises(SystemExit) as done:
        main(["keys", "create", "x", "--tools", "browser", "--db", db])
    assert done.value.code == 2 and "browser" in capsys.readouterr().err
    assert len(KeyStore(db).list()) == 1
