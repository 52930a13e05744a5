"""``tether studio`` commands: accounts (a password shown once or read from stdin), projects made from a
tether output with gold questions and members, one-line errors with exit 2 for bad input (nothing made),
agreement and exports (never over an existing file)."""

import json

import pytest

from tether.cli.main import main
from tether.serve.store import connect
from tether.studio.accounts import Accounts
from tether.studio.projects import Projects


def _run(args, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


def test_accounts_projects_and_exports_from_the_command_line(tmp_path, capsys, monkeypatch):
    db = f"sqlite:///{tmp_path / 'studio.db'}"
    code, out, _ = _run(["studio", "users", "add", "ann", "--db", db], capsys)
    assert code == 0 and "password (shown once): " in out
    password = out.split("password (shown once): ")[1].strip()
    assert Accounts(connect(db)).verify("ann", password) is not None
    code, out, _ = _run(["studio", "users", "add", "boss", "--role", "admin", "--password-stdin", "--db", db], capsys,
                        stdin="the boss password\n", monkeypatch=monkeypatch)
    assert code == 0 and "shown once" not in out
    assert Accounts(connect(db)).verify("boss", "the boss password").role == "admin"

    # A red-team run's rows (prompt, response, and more) as items to flag; one is a gold question.
    attacks = tmp_path / "samples.jsonl"
    attacks.write_text("".join(json.dumps({"prompt": f"attack {i}", "response": f"reply {i}", "success": i % 2 == 0,
                                           **({"gold": ["harmful"]} if i == 0 else {})}) + "\n" for i in range(4)))
    code, out, _ = _run(["studio", "projects", "create", "flags", "--kind", "flags", "--data", str(attacks),
                         "--overlap", "1", "--members", "ann", "--set", "flags=[harmful,rude]", "--db", db], capsys)
    assert code == 0 and "4 items, 1 members" in out, out
    project = Projects(connect(db)).need("flags")
    assert project.spec.flags == ["harmful", "rude"] and Projects(connect(db)).progress(project)["gold"] == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"]}) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    code, _, err = _run(["studio", "projects", "create", "broken", "--data", str(bad), "--db", db], capsys)
    assert code == 2 and f"{bad}:2: no response" in err and "Traceback" not in err
    assert Projects(connect(db)).by_name("broken") is None  # nothing made
    code, _, err = _run(["studio", "projects", "create", "x", "--members", "nobody", "--db", db], capsys)
    assert code == 2 and "no account named 'nobody'" in err

    engine = connect(db)
    projects, ann = Projects(engine), Accounts(engine).by_name("ann")
    while (item := projects.next_item(project, ann.id)) is not None:
        projects.label(project, ann.id, item.id, {"flags": ["harmful"] if item.prompt == "attack 1" else []})
    out_file = tmp_path / "guard.jsonl"
    code, out, _ = _run(["studio", "projects", "export", "flags", "--format", "guard", "--out", str(out_file),
                         "--db", db], capsys)
    assert code == 0 and "3 rows" in out  # the gold question is left out
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [(r["text"], r["label"]) for r in rows] == [("reply 1", "unsafe"), ("reply 2", "safe"), ("reply 3", "safe")]
    code, _, err = _run(["studio", "projects", "export", "flags", "--format", "guard", "--out", str(out_file),
                         "--db", db], capsys)
    assert code == 2 and "exists already" in err
    code, _, err = _run(["studio", "projects", "export", "flags", "--format", "preference", "--out",
                         str(tmp_path / "p.jsonl"), "--db", db], capsys)
    assert code == 2 and "a flags project exports raw, guard" in err
    code, out, _ = _run(["studio", "projects", "agreement", "flags", "--db", db], capsys)
    assert code == 0 and json.loads(out)["annotators"]["ann"]["labels"] == 4
