"""``tether monitor``: calibrate a monitor on traffic known to be normal, run it over a JSONL log (a batch
job), or beside ``tether serve`` (``--monitor DIR``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Watch traffic for drift and anomalies: a CUSUM per signal, the false-alarm rate you set.",
                  no_args_is_help=True)


def _records(path: str) -> list[dict[str, Any]]:
    from tether.core.errors import UserError
    from tether.data.io import jsonl_objects

    try:
        return [row for _, row in jsonl_objects(path)]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None


@app.command("calibrate")
def calibrate(
    reference: Annotated[str, typer.Argument(help="JSONL of normal traffic: one request per line (prompt or "
                                             "messages, response, and any of prompt_tokens, completion_tokens, "
                                             "latency_ms, refused, status, guards, key, ...): a gateway's "
                                             "exported audit rows with texts, or an eval's samples")],
    out: Annotated[str, typer.Option("--out", "-o", help="the monitor's directory (new)")],
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML of MonitorConfig (window, arl_windows, "
                                               "k, categories, embedder, components, per_key)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config key: KEY=VALUE")] = None,
) -> None:
    """Calibrate a monitor on REFERENCE: each signal's reference statistics and CUSUM threshold, so false
    alarms on traffic like it come once every arl_windows windows (all signals together).

    Example: tether monitor calibrate normal.jsonl --out monitor/ --set window=100 --set arl_windows=10000
    """
    from tether.core.config import load_config
    from tether.core.errors import UserError
    from tether.monitor.watcher import Monitor, MonitorConfig

    cfg = load_config(MonitorConfig, config, set_ or [])
    if (Path(out) / "monitor.json").exists():
        raise UserError(f"{out} already holds a monitor; choose a new --out")
    records = _records(reference)
    try:
        monitor = Monitor.calibrate(records, cfg)
    except ValueError as exc:
        raise UserError(f"{reference}: {exc}") from None
    monitor.save(out)
    names = monitor.signal_names()
    typer.echo(f"calibrated on {len(records)} requests: {len(names)} signals ({', '.join(names)}); "
               f"windows of {cfg.window}, one false alarm per {cfg.arl_windows:g} windows -> {out}")


@app.command("run")
def run(
    log: Annotated[str, typer.Argument(help="JSONL of traffic to watch, in arrival order")],
    monitor_dir: Annotated[str, typer.Option("--monitor", "-m", help="a calibrated monitor's directory")],
    out: Annotated[str, typer.Option("--out", "-o", help="directory for alarms.jsonl and windows.jsonl (new)")],
    store: Annotated[str | None, typer.Option("--store", help="also write windows and alarms to this gateway store "
                                              "(a SQLAlchemy URL), for the studio's /monitor page")] = None,
) -> None:
    """Run a monitor over LOG as a batch job: every window's signal means and every alarm (with the requests
    nearest it) as JSONL. Exit 0 whether or not anything alarmed; the count is printed.

    Example: tether monitor run today.jsonl --monitor monitor/ --out watched/
    """
    from tether.core.errors import UserError
    from tether.monitor.watcher import Monitor, observe_all

    target = Path(out)
    for name in ("alarms.jsonl", "windows.jsonl"):
        if (target / name).exists():
            raise UserError(f"{target / name} exists; choose a new --out")
    try:
        monitor = Monitor.load(monitor_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    alarms, closed = observe_all(monitor, _records(log))
    target.mkdir(parents=True, exist_ok=True)
    (target / "alarms.jsonl").write_text("".join(json.dumps(a.as_dict()) + "\n" for a in alarms))
    (target / "windows.jsonl").write_text("".join(json.dumps(w.__dict__) + "\n" for w in closed))
    if store:
        from tether.serve.audit import AuditLog
        from tether.serve.store import connect, write_transaction
        from tether.serve.watch import Watch

        engine = connect(store)

        def writer(fn: Any) -> Any:
            with write_transaction(engine) as conn:
                return fn(conn)

        Watch(monitor, writer, AuditLog(engine)).record(alarms, closed)
    typer.echo(f"{monitor.stream.requests} requests, {len(closed)} windows, {len(alarms)} alarms -> {target}")
    for alarm in alarms[:20]:
        typer.echo(f"  {alarm.scope:>16} window {alarm.window:>6} (request {alarm.requests}): {alarm.signal} "
                   f"z = {alarm.z:+.1f} (mean {alarm.mean:.4g}, reference {alarm.reference:.4g})")
