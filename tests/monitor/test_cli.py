"""``tether monitor``: calibrate on a JSONL of normal traffic, run over a log as a batch job (alarms and
windows as JSONL, and into a gateway store for the studio), one-line errors with exit 2 for bad input and
nothing overwritten; ``tether serve --monitor`` refuses a directory that holds no monitor."""

import json

import pytest
import sqlalchemy as sa
from tests.conftest import run_cli
from tests.monitor.test_watch import _normal, _odd

from tether.core.errors import UserError
from tether.serve.server import ServeConfig, build_watch
from tether.serve.store import MONITOR_ALARMS, connect


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_calibrate_then_run_over_a_log(tmp_path, capsys):
    reference = _write(tmp_path / "normal.jsonl", [{"prompt": _normal(i), "refused": i % 9 == 0, "key": "k"}
                                                   for i in range(400)])
    log = _write(tmp_path / "today.jsonl", [{"prompt": _normal(i), "refused": i % 9 == 0, "key": "k"}
                                            for i in range(100)]
                 + [{"prompt": _odd(i), "refused": False, "key": "k"} for i in range(60)])
    monitor = tmp_path / "monitor"
    code, out, _ = run_cli(["monitor", "calibrate", reference, "--out", str(monitor), "--set", "window=10",
                         "--set", "embedder=hash:64", "--set", "components=2", "--set", "arl_windows=500"], capsys)
    assert code == 0 and "calibrated on 400 requests" in out and "prompt:novel" in out
    code, _, err = run_cli(["monitor", "calibrate", reference, "--out", str(monitor)], capsys)
    assert code == 2 and "already holds a monitor" in err  # never overwritten

    db = f"sqlite:///{tmp_path / 'g.db'}"
    code, out, _ = run_cli(["monitor", "run", log, "--monitor", str(monitor), "--out", str(tmp_path / "w"),
                         "--store", db], capsys)
    assert code == 0 and "160 requests, 32 windows" in out  # 16 of all traffic, 16 of key k
    alarms = [json.loads(line) for line in (tmp_path / "w" / "alarms.jsonl").read_text().splitlines()]
    assert alarms and min(a["requests"] for a in alarms) > 100  # nothing before the shift at request 100
    windows = (tmp_path / "w" / "windows.jsonl").read_text().splitlines()
    assert len(windows) == 32
    with connect(db).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(MONITOR_ALARMS)).scalar() == len(alarms)
    code, _, err = run_cli(["monitor", "run", log, "--monitor", str(monitor), "--out", str(tmp_path / "w")], capsys)
    assert code == 2 and "alarms.jsonl exists" in err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["monitor", "calibrate", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "none.jsonl" in err and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    code, _, err = run_cli(["monitor", "calibrate", str(bad), "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "bad.jsonl:2" in err
    few = _write(tmp_path / "few.jsonl", [{"prompt": "a", "latency_ms": 3}] * 50)
    code, _, err = run_cli(["monitor", "calibrate", few, "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "needs at least 200" in err
    code, _, err = run_cli(["monitor", "calibrate", few, "--out", str(tmp_path / "m"), "--set", "window=1"], capsys)
    assert code == 2 and "window" in err
    code, _, err = run_cli(["monitor", "run", few, "--monitor", str(tmp_path / "nothing"), "--out",
                            str(tmp_path / "o")], capsys)
    assert code == 2 and "no monitor.json" in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="no monitor.json"):
        build_watch(ServeConfig(model="tiny:llama", monitor=str(tmp_path / "nothing")), None)


def test_what_an_alarm_did_to_a_key_is_undone_by_hand(tmp_path, capsys):
    from tether.serve.keys import KeyStore, Scopes

    db = f"sqlite:///{tmp_path / 'g.db'}"
    store = KeyStore(db)
    key, _ = store.create("watched", Scopes(review=True, rpm=10))
    code, out, _ = run_cli(["keys", "update", key.id, "--set", "review=false", "--set", "rpm=600", "--db", db], capsys)
    assert code == 0 and '"rpm": 600' in out
    scopes = next(k for k in store.list() if k.id == key.id).scopes
    assert not scopes.review and scopes.rpm == 600
    for args, message in (([key.id, "--set", "colour=red"], "FIELD=VALUE"), ([key.id, "--set", "rpm=0"], "rpm"),
                          (["key_missing", "--set", "rpm=5"], "no key")):
        code, _, err = run_cli(["keys", "update", *args, "--db", db], capsys)
        assert code == 2 and message in err, err
    assert next(k for k in store.list() if k.id == key.id).scopes.rpm == 600  # nothing changed by the bad ones
