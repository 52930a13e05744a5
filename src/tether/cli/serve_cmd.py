"""``tether serve`` (an OpenAI-compatible gateway in front of a model; ``kill`` / ``revive`` its switches),
``tether keys`` (its API keys) and ``tether audit`` (its hash-chained audit trail)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tether.serve.store import DEFAULT_DB

DbOpt = Annotated[str, typer.Option("--db", help="the gateway's store (keys, audit trail, kill switches, "
                                                 "throttle counters): a SQLAlchemy URL, a SQLite file by default, "
                                                 "postgresql+pg8000://USER@HOST/DB to share it between servers")]

keys_app = typer.Typer(help="API keys of tether serve: created with scopes, shown once, stored hashed.",
                       no_args_is_help=True)
serve_app = typer.Typer(invoke_without_command=True)
rollout_app = typer.Typer(help="Staged rollouts of a new model version behind tether serve: a canary on a share of "
                          "the traffic, promoted step by step while its offline and online gates pass, rolled back "
                          "when one fails.", no_args_is_help=True)
audit_app = typer.Typer(help="The gateway's audit trail: verify its hash chain, export it as JSONL, report a period.",
                        no_args_is_help=True)


@serve_app.callback()
def serve(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model directory, hub id, world:base, "
                                                                   "tiny:ARCH, or an OpenAI-compatible URL (.../v1) "
                                                                   "to stand in front of")] = None,
    upstream_model: Annotated[str, typer.Option("--upstream-model", help="with a URL: the model name the "
                                                "upstream serves")] = "default",
    name: Annotated[str | None, typer.Option("--name", help="the model's name in the API (default: --model)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    db: DbOpt = DEFAULT_DB,
    redis: Annotated[str | None, typer.Option("--redis", help="redis://HOST:PORT/DB: count requests and tokens per "
                                              "minute there, shared by every replica (budgets and in-flight "
                                              "limits stay in --db)")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="tokens per reply when a request names none")] = 256,
    max_batch: Annotated[int, typer.Option("--max-batch", help="requests generated together at most")] = 32,
    max_tokens_limit: Annotated[int, typer.Option("--max-tokens-limit", help="tokens any request may ask for at "
                                                  "most, whatever its key allows")] = 4096,
    fail_open: Annotated[bool, typer.Option("--fail-open", help="serve when the store cannot be read (default: "
                                                                "refuse every request)")] = False,
    guards: Annotated[str | None, typer.Option("--guards", help="YAML file: a list of guards ({kind: regex, "
                                               "output: [...], ...}; tether plugins list guard)")] = None,
    block_input: Annotated[list[str] | None, typer.Option("--block-input", help="a regex that blocks a request "
                                                          "(repeatable)")] = None,
    block_output: Annotated[list[str] | None, typer.Option("--block-output", help="a regex that cuts a reply "
                                                           "(repeatable)")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="server processes on this port, each with its "
                                         "own copy of the model; they share the store")] = 1,
    code_tool: Annotated[bool, typer.Option("--code-tool", help="serve /v1/tools/code: Python run in a bubblewrap "
                                            "sandbox (no network; bounded CPU, memory, processes, time) for keys "
                                            "created with --tools code")] = False,
    code_time_s: Annotated[float, typer.Option("--code-time-s", help="the code tool's wall-clock limit per run")
                           ] = 10.0,
    code_memory_mb: Annotated[int, typer.Option("--code-memory-mb", help="the code tool's memory per process, MiB")
                              ] = 512,
    studio: Annotated[bool, typer.Option("--studio", help="mount the studio at /studio: the review queue where "
                                         "people decide what guards in escalate mode hold, and labelling "
                                         "(tether studio users add ...)")] = False,
    review_timeout_s: Annotated[float, typer.Option("--review-timeout-s", min=0.001, help="how long an escalated "
                                                    "request waits for a reviewer")] = 300.0,
    review_default: Annotated[str, typer.Option("--review-default", help="what an escalated request gets when no "
                                                "reviewer decided in time: reject or approve")] = "reject",
    monitor: Annotated[str | None, typer.Option("--monitor", help="a calibrated monitor's directory (tether monitor "
                                                "calibrate): watch the traffic off the request path; its windows "
                                                "and alarms go to the store (the studio's /monitor page)")] = None,
    monitor_config: Annotated[str | None, typer.Option("--monitor-config", help="YAML: what alarms do (actions: "
                                                       "[{scope: key, signals: ['*'], action: escalate|throttle|"
                                                       "kill|notify}], webhook: URL)")] = None,
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, streamed or not, /v1/completions,
    /v1/models) with keys, throttles, kill switches and an audit trail; every request needs an API key (tether
    keys create). tether serve kill|revive set and clear the switches.

    Example: tether keys create me && tether serve --model world:base --port 8000
    """
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        from tether.core.errors import UserError

        raise UserError("tether serve needs --model (a model directory, hub id, world:base or tiny:ARCH)")
    if review_default not in ("reject", "approve"):
        from tether.core.errors import UserError

        raise UserError(f"--review-default {review_default!r}: expected reject or approve")
    import os

    import uvicorn

    from tether.core.sandbox import SandboxConfig
    from tether.serve.keys import KeyStore
    from tether.serve.server import ENV, ServeConfig
    from tether.studio.server import build_gateway, gateway_from_env

    cfg = ServeConfig(model=model, upstream_model=upstream_model, name=name, db=db, redis=redis, max_tokens=max_tokens,
                      max_tokens_limit=max_tokens_limit, max_batch=max_batch, fail_open=fail_open, guards=guards,
                      block_input=block_input or [], block_output=block_output or [], code_tool=code_tool,
                      sandbox=SandboxConfig(time_s=code_time_s, memory_mb=code_memory_mb), studio=studio,
                      review_timeout_s=review_timeout_s, monitor=monitor, monitor_config=monitor_config,
                      review_default=review_default)  # type: ignore[arg-type]  # checked above
    if not any(k.state() == "active" for k in KeyStore(db).list()):
        typer.echo(f"no active API key in {db}: every request will be refused (tether keys create NAME --db {db})")
    typer.echo(f"serving {cfg.name or model} on http://{host}:{port}/v1 ({workers} worker"
               f"{'s' if workers > 1 else ''})   store: {db}"
               + (f"   studio: http://{host}:{port}/studio/" if studio else ""))
    if workers > 1:  # each worker rebuilds the application from the environment and loads its own model
        os.environ[ENV] = cfg.model_dump_json()
        uvicorn.run(f"{gateway_from_env.__module__}:{gateway_from_env.__name__}", factory=True, workers=workers,
                    host=host, port=port, log_level="warning")
        return
    app, generator = build_gateway(cfg)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        generator.close()


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="who or what the key is for")],
    models: Annotated[str | None, typer.Option("--models", help="comma-separated models the key may call ('*': "
                                               "any, the default)")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="most tokens a request may ask for")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="requests per minute, across every server")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="tokens per minute, across every server")] = None,
    budget: Annotated[int | None, typer.Option("--budget-tokens", help="tokens the key may use in all")] = None,
    concurrent: Annotated[int | None, typer.Option("--concurrent", help="requests in flight at once")] = None,
    guards: Annotated[str | None, typer.Option("--guards", help="comma-separated names of the server's guards that "
                                               "check this key (default: every guard)")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="may set and clear kill switches through the admin API")
                     ] = False,
    tools: Annotated[str | None, typer.Option("--tools", help="comma-separated tools the key may call: code (a "
                                              "server started with --code-tool runs its Python in the sandbox); "
                                              "none by default")] = None,
    tier: Annotated[str | None, typer.Option("--tier", help="start from this capability tier's scopes (from "
                                             "--tiers); the other options given override them")] = None,
    tiers: Annotated[str | None, typer.Option("--tiers", help="YAML file of capability tiers: {TIER: {models: [...], "
                                              "max_tokens: N, rpm: N, tools: [...], guards: [...], ...}}")] = None,
    expires_days: Annotated[float | None, typer.Option("--expires-days", help="expire after this many days")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Create a key and print its secret, this once (only its hash is stored).

    Example: tether keys create ci-bot --models world:base --max-tokens 128 --expires-days 30
    Example: tether keys create intern --tier basic --tiers tiers.yaml
    """
    from tether.core.config import validate_config
    from tether.core.errors import UserError
    from tether.serve.keys import KeyStore, Scopes, load_tiers

    def listed(text: str | None) -> list[str] | None:
        return None if text is None else [part.strip() for part in text.split(",") if part.strip()]

    base: dict[str, object] = {}
    if tier is not None:
        if tiers is None:
            raise UserError("--tier needs --tiers FILE (the YAML file that defines the tiers)")
        known = load_tiers(tiers)
        if tier not in known:
            raise UserError(f"{tiers}: no tier {tier!r} (tiers: {', '.join(sorted(known)) or 'none'})")
        base = {**known[tier], "tier": tier}
    given = {"models": listed(models), "max_tokens": max_tokens, "rpm": rpm, "tpm": tpm, "budget_tokens": budget,
             "concurrent": concurrent, "tools": listed(tools), "admin": admin or None}
    scopes = validate_config(Scopes, {**base, **{k: v for k, v in given.items() if v is not None},
                                      **({"guards": listed(guards)} if guards is not None else {})}, where="options")
    key, secret = KeyStore(db).create(name, scopes, expires_in=None if expires_days is None else expires_days * 86400)
    typer.echo(f"{key.id}  {name}  {json.dumps(scopes.model_dump())}")
    typer.echo(f"secret (shown once): {secret}")


@keys_app.command("list")
def list_keys(db: DbOpt = DEFAULT_DB) -> None:
    """Every key: id, name, state (active, revoked, expired) and scopes; never a secret.

    Example: tether keys list --db postgresql+pg8000://postgres@127.0.0.1/gateway
    """
    from tether.serve.keys import KeyStore

    for key in KeyStore(db).list():
        typer.echo(f"{key.id}  {key.name}  {key.state()}  {json.dumps(key.scopes.model_dump())}")


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="the key's id (tether keys list)")],
               db: DbOpt = DEFAULT_DB) -> None:
    """Revoke a key: its next request is refused.

    Example: tether keys revoke key_3f2a9c1b7d4e
    """
    from tether.serve.keys import KeyStore

    key = KeyStore(db).revoke(key_id)
    typer.echo(f"{key.id}  {key.name}  {key.state()}")


@keys_app.command("update")
def update_key(key_id: Annotated[str, typer.Argument(help="the key's id (tether keys list)")],
               set_: Annotated[list[str], typer.Option("--set", help="a scope to change: FIELD=VALUE (YAML value), "
                                                       "e.g. review=false, rpm=60, guards=[pii]")],
               db: DbOpt = DEFAULT_DB) -> None:
    """Change a key's scopes; every server sees the change from the key's next request. What a monitor's
    alarm did to a key (review=true, a lower rpm) is undone here.

    Example: tether keys update key_3f2a9c1b7d4e --set review=false --set rpm=600
    """
    import yaml
    from pydantic import ValidationError

    from tether.core.errors import UserError
    from tether.serve.keys import KeyStore, Scopes, update_scopes_in
    from tether.serve.store import write_transaction

    changes = {}
    for item in set_:
        field, sep, value = item.partition("=")
        if not sep or field not in Scopes.model_fields:
            raise UserError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(Scopes.model_fields)}")
        changes[field] = yaml.safe_load(value)
    store = KeyStore(db)
    try:
        with write_transaction(store.engine) as conn:  # read and written under the store's write lock
            scopes = update_scopes_in(conn, key_id, lambda _: changes)
            if scopes is not None:  # the change and its audit row commit together
                store.audit.append_in(conn, {"decision": "key_updated", "key": key_id, "changes": changes})
    except ValidationError as exc:
        raise UserError(f"--set: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    if scopes is None:
        raise UserError(f"no key {key_id!r} (tether keys list shows them)")
    typer.echo(f"{key_id}  {json.dumps(scopes.model_dump(exclude_defaults=True))}")


def _target(model: str | None, key: str | None) -> str:
    if model and key:
        from tether.core.errors import UserError

        raise UserError("name a model or a key, not both (neither: everything)")
    return f"model:{model}" if model else f"key:{key}" if key else "all"


@serve_app.command("kill")
def kill(
    model: Annotated[str | None, typer.Option("--model", help="stop serving this model")] = None,
    key: Annotated[str | None, typer.Option("--key", help="stop serving this key (its id)")] = None,
    reason: Annotated[str, typer.Option("--reason", help="said to every refused client")] = "killed by an operator",
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Stop serving everything, a model or a key, on every server sharing --db, within a second (replies not yet
    sent included).

    Example: tether serve kill --model world:base --reason "under review"
    """
    from tether.serve.audit import AuditLog
    from tether.serve.kill import kill_in
    from tether.serve.store import connect, write_transaction

    target = _target(model, key)
    engine = connect(db)
    log = AuditLog(engine)
    with write_transaction(engine) as conn:  # the switch and its audit row commit together
        kill_in(conn, target, reason)
        log.append_in(conn, {"decision": "killed", "target": target, "reason": reason, "by": "cli"})
    typer.echo(f"killed: {target} ({reason})")


@serve_app.command("migrate")
def migrate_store(db: DbOpt = DEFAULT_DB) -> None:
    """Bring the store's schema to the newest migration (every server does it when it starts; run it first to
    upgrade a shared database before rolling out new replicas).

    Example: tether serve migrate --db postgresql+pg8000://postgres@127.0.0.1/gateway
    """
    from tether.serve.store import connect, migrate

    typer.echo(f"store at revision {migrate(connect(db))}")


@serve_app.command("revive")
def revive(
    model: Annotated[str | None, typer.Option("--model", help="serve this model again")] = None,
    key: Annotated[str | None, typer.Option("--key", help="serve this key again")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Clear a kill switch.

    Example: tether serve revive --model world:base
    """
    from tether.serve.audit import AuditLog
    from tether.serve.kill import revive_in
    from tether.serve.store import connect, write_transaction

    target = _target(model, key)
    engine = connect(db)
    log = AuditLog(engine)
    with write_transaction(engine) as conn:
        was = revive_in(conn, target)
        if was:
            log.append_in(conn, {"decision": "revived", "target": target, "by": "cli"})
    typer.echo(f"revived: {target}" if was else f"{target} was not killed")


@audit_app.command("verify")
def verify_audit(db: DbOpt = DEFAULT_DB) -> None:
    """Check the hash chain: exit 0 when intact, 1 naming the first row that was edited, removed or reordered.

    Example: tether audit verify --db sqlite:///tether-serve.db
    """
    from tether.serve.audit import AuditLog, verify
    from tether.serve.store import connect

    verdict = verify(AuditLog(connect(db)))
    if verdict.ok:
        typer.echo(f"intact: {verdict.rows} rows")
        return
    typer.echo(f"broken at row {verdict.broken_at}: {verdict.reason}")
    raise typer.Exit(1)


@audit_app.command("export")
def export_audit(out: Annotated[str, typer.Option("--out", help="JSONL file to write")],
                 db: DbOpt = DEFAULT_DB) -> None:
    """Write every audit row as JSONL (seq, the record, its hashes).

    Example: tether audit export --out audit.jsonl
    """
    from pathlib import Path

    from tether.serve.audit import AuditLog
    from tether.serve.store import connect

    path = Path(out)
    if path.exists():
        from tether.core.errors import UserError

        raise UserError(f"{path} exists; choose another --out")
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for seq, record, prev_hash, digest in AuditLog(connect(db)).rows():
            fh.write(json.dumps({"seq": seq, "record": json.loads(record), "prev_hash": prev_hash, "hash": digest})
                     + "\n")
            n += 1
    typer.echo(f"{n} rows -> {path}")


@audit_app.command("report")
def report_audit(
    since: Annotated[str | None, typer.Option("--since", help="the period's start: an ISO 8601 date or time (UTC "
                                              "unless it says) or seconds since the epoch (default: the first row)")
                     ] = None,
    until: Annotated[str | None, typer.Option("--until", help="the period's end, not included (default: now)")
                     ] = None,
    out: Annotated[str | None, typer.Option("--out", help="a new directory for the auditor's bundle: report.json, "
                                            "report.md, the period's rows with their hashes, a standalone "
                                            "verify.py and a manifest of hashes")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON (default: Markdown)")] = False,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """What the gateway served, blocked and escalated in a period, how reviewers decided, what the monitor raised
    and what changed (keys, kill switches, rollouts): counted from the audit chain after the whole chain
    verified. A broken chain gives no report and exits 1, naming the first bad row.

    Example: tether audit report --since 2026-11-01 --until 2026-12-01 --out audit-2026-11
    """
    from tether.serve.audit import AuditLog
    from tether.serve.audit_report import TamperedLogError, parse_time, render_markdown, report, write_bundle
    from tether.serve.store import connect

    start, end = parse_time(since, option="--since"), parse_time(until, option="--until")
    if start is not None and end is not None and end <= start:
        from tether.core.errors import UserError

        raise UserError(f"--until {until} is not after --since {since}")
    try:
        doc, rows = report(AuditLog(connect(db)), since=start, until=end)
    except TamperedLogError as exc:
        typer.echo(f"tampered: {exc}", err=True)
        raise typer.Exit(1) from None
    if out is not None:
        path = write_bundle(out, doc, rows)
        typer.echo(f"{doc['requests']['total']} requests in {len(rows)} audit rows -> {path} "
                   f"(check it anywhere: python {path}/verify.py)")
        return
    typer.echo(json.dumps(doc, indent=2) if as_json else render_markdown(doc))


def _show_rollout(rollout: Any) -> str:
    steps = [s.share for s in rollout.config.steps]
    where = f"step {rollout.step + 1}/{len(steps)} at share {rollout.share}" if rollout.state == "running" else ""
    return (f"{rollout.id}  {rollout.model}  canary {rollout.canary}  {rollout.state}  {where}".rstrip()
            + (f"\n  {rollout.reason}" if rollout.reason else ""))


@rollout_app.command("start")
def start_rollout(
    config: Annotated[str, typer.Argument(help="YAML: model, canary, steps [{share, min_requests, min_seconds}], "
                                          "offline {baseline, candidate, max_increase, max_decrease, redteam, "
                                          "max_asr}, online {max_error_rate, max_flag_rate, max_refusal_increase, "
                                          "max_alarms}, capabilities [{metric, above, safeguards}]")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: KEY=VALUE")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Check a canary's offline gate, then start its rollout on every gateway sharing --db: exit 0 when it
    started, 1 when the gate rolled it back before it served anything (the failed checks printed).

    Example: tether rollout start rollout.yaml --db sqlite:///tether-serve.db
    """
    from tether.core.config import load_config
    from tether.pipelines.rollout_gate import offline_gate
    from tether.serve.rollout import RolloutConfig, Rollouts
    from tether.serve.store import connect

    cfg = load_config(RolloutConfig, config, set_ or [])
    gate, safeguards = offline_gate(cfg)
    for check in gate.checks:
        typer.echo(f"  {'pass' if check.passed else 'FAIL'}  {check.name}: {check.value} (limit {check.limit})"
                   + (f"  {check.detail}" if check.detail else ""))
    rollout = Rollouts(connect(db)).start(cfg, gate, safeguards)
    typer.echo(_show_rollout(rollout))
    if rollout.state != "running":
        raise typer.Exit(1)


@rollout_app.command("status")
def rollout_status(
    rollout_id: Annotated[str | None, typer.Argument(help="a rollout's id (default: every rollout)")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Rollouts with their state, step and share; with an id, also the current step's counts by version.

    Example: tether rollout status ro_3f2a9c1b7d4e
    """
    from tether.core.errors import UserError
    from tether.serve.rollout import Rollouts
    from tether.serve.store import connect

    rollouts = Rollouts(connect(db))
    if rollout_id is None:
        for rollout in rollouts.history():
            typer.echo(_show_rollout(rollout))
        return
    found = rollouts.get(rollout_id)
    if found is None:
        raise UserError(f"no rollout {rollout_id!r} (tether rollout status lists them)")
    typer.echo(_show_rollout(found))
    for version, counts in sorted(rollouts.counts(found.id, found.step).items()):
        typer.echo(f"  {version}: {counts.requests} requests, {counts.errors} errors, {counts.flagged} flagged, "
                   f"{counts.refusals} refusals")


@rollout_app.command("abort")
def abort_rollout(
    rollout_id: Annotated[str, typer.Argument(help="the running rollout's id")],
    reason: Annotated[str, typer.Option("--reason", help="why, for the audit trail")] = "no reason given",
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Roll a running rollout back now: every gateway sends its traffic to the current version again.

    Example: tether rollout abort ro_3f2a9c1b7d4e --reason "customer reports"
    """
    from tether.serve.rollout import Rollouts
    from tether.serve.store import connect

    typer.echo(_show_rollout(Rollouts(connect(db)).abort(rollout_id, reason)))
