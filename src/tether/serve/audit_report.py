"""``tether audit report``: what the gateway did in a period, from its audit chain, verified first.

The report is counted from the audit rows alone (never from counters the server kept beside them), after
:func:`tether.serve.audit.verify` found the whole chain intact; a chain that fails verification gives no
report. It says what was served, blocked and escalated, how reviewers decided, what the monitor raised,
and what changed (keys created, revoked and changed; kill switches; rollouts). A streamed request is
audited twice (its opening row, and a row saying how it ended, joined by ``request_id``) and is counted
once, by how it ended.

:func:`write_bundle` writes the report with the period's rows as an auditor's bundle that stands alone:
``report.json``, ``report.md``, ``audit.jsonl`` (each row with its hashes), ``verify.py`` (the chain
check in the standard library only) and ``MANIFEST.json`` (every file's SHA-256).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.core.errors import UserError
from tether.serve.audit import GENESIS, AuditLog, verify

# Decisions that are not a request's outcome but a change to what the gateway does.
CHANGES = ("key_created", "key_revoked", "key_updated", "killed", "revived")
REVIEW_PREFIX = "review_"


class TamperedLogError(Exception):
    """The audit chain failed verification: no report is made from it."""


@dataclass(frozen=True)
class Row:
    """One audit row: its sequence number, record and hashes."""

    seq: int
    record: dict[str, Any]
    prev_hash: str
    hash: str


def parse_time(text: str | None, *, option: str) -> float | None:
    """Seconds since the epoch from an ISO 8601 date or time (UTC when it names no zone) or a number.

    Raises:
        UserError: ``text`` is neither.
    """
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option} {text!r}: expected an ISO 8601 date or time (2026-12-01, "
                        "2026-12-01T09:30:00+00:00) or seconds since the epoch") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def verified_rows(log: AuditLog) -> list[Row]:
    """Every row, after the whole chain verified.

    Raises:
        TamperedLogError: a row was edited, removed or reordered (which, and why).
    """
    verdict = verify(log)
    if not verdict.ok:
        raise TamperedLogError(f"the audit chain is broken at row {verdict.broken_at}: {verdict.reason}; "
                               "no report is made from a chain that does not verify")
    return [Row(seq, json.loads(record), prev, digest) for seq, record, prev, digest in log.rows()]


def in_period(rows: Iterable[Row], since: float | None, until: float | None) -> list[Row]:
    """The rows whose time is in ``[since, until)``."""
    return [r for r in rows if (since is None or r.record.get("ts", 0.0) >= since)
            and (until is None or r.record.get("ts", 0.0) < until)]


def _is_request(record: dict[str, Any]) -> bool:
    # A held request's "escalated" row is an event on its way; its own row, written when it ends, counts it.
    return ((str(record.get("endpoint", "")).startswith("/v1/") and record.get("decision") != "escalated")
            or record.get("decision") == "invalid_request")


def _blocked_by(record: dict[str, Any]) -> list[str]:
    """The guards that objected to a request or its reply: blocked, cut, redacted or escalated it (shadow guards
    only watch)."""
    return [str(g.get("guard")) for g in record.get("guards") or []
            if not g.get("allowed", True) and not g.get("shadow")]


def summarise(rows: list[Row], *, since: float | None = None, until: float | None = None,
              chain_rows: int | None = None, head: str | None = None) -> dict[str, Any]:
    """The report document for ``rows`` (a period's rows of a verified chain)."""
    records = [r.record for r in rows]
    ends = {rec["request_id"]: rec for rec in records
            if rec.get("request_id") and rec.get("decision") != "streaming"}
    outcomes: list[dict[str, Any]] = []  # one per request: its final record
    for rec in records:
        if not _is_request(rec) or (rec.get("request_id") and rec.get("decision") != "streaming"):
            continue  # a stream's closing row is counted through its opening row
        if rec.get("decision") == "streaming":
            end = ends.get(rec["request_id"])
            outcomes.append({**rec, **end} if end else {**rec, "decision": "stream_unfinished"})
        else:
            outcomes.append(rec)

    decisions = Counter(str(o.get("decision")) for o in outcomes)
    served = [o for o in outcomes if o.get("decision") in ("answered", "answered_by_reviewer")]
    cut = [o for o in served if o.get("finish_reason") == "content_filter"]
    input_blocked = [o for o in outcomes if o.get("decision") == "content_filter"]
    by_guard = Counter(g for o in outcomes for g in set(_blocked_by(o)))
    escalations = [r for r in records if r.get("decision") == "escalated"]
    reviews = [r for r in records if str(r.get("decision", "")).startswith(REVIEW_PREFIX)]
    expired = sum(1 for o in outcomes for rv in o.get("reviews") or [] if rv.get("state") == "expired")
    alarms = [r for r in records if r.get("decision") == "monitor_alarm"]
    # A request a switch refused is also decided "killed": a change is a row that is not a request's.
    changes = [r for r in records if not _is_request(r)
               and (r.get("decision") in CHANGES or str(r.get("decision", "")).startswith("rollout_"))]

    def tally(key: str, among: list[dict[str, Any]]) -> dict[str, int]:
        return dict(sorted(Counter(str(o.get(key)) for o in among).items()))

    return {
        "period": {"since": since, "until": until,
                   "first_seq": rows[0].seq if rows else None, "last_seq": rows[-1].seq if rows else None,
                   "rows": len(rows)},
        "chain": {"verified": True, "rows": chain_rows, "head": head},
        "requests": {
            "total": len(outcomes),
            "by_decision": dict(sorted(decisions.items())),
            "by_status": tally("status", outcomes),
            "by_model": tally("model", outcomes),
            "by_key": tally("key", outcomes),
            "by_endpoint": tally("endpoint", outcomes),
            "served": len(served),
            "served_by_version": tally("version", served),
            "prompt_tokens": sum(int(o.get("prompt_tokens") or 0) for o in served),
            "completion_tokens": sum(int(o.get("completion_tokens") or 0) for o in served),
        },
        "blocked": {"requests": len(input_blocked), "replies_cut": len(cut),
                    "flagged_by_guard": dict(sorted(by_guard.items()))},
        "not_served": {name: decisions[name] for name in sorted(decisions)
                    if name not in ("answered", "answered_by_reviewer", "content_filter", "streaming")},
        "escalated": {"total": len(escalations), "by_stage": tally("stage", escalations),
                      "by_guard": tally("guard", escalations)},
        "reviews": {"decisions": dict(sorted(Counter(str(r["decision"])[len(REVIEW_PREFIX):] for r in reviews)
                                             .items())),
                    "by_reviewer": tally("reviewer", reviews), "expired_to_default": expired},
        "monitor": {"alarms": len(alarms), "by_signal": tally("signal", alarms),
                    "actions": sum(len(a.get("actions") or []) for a in alarms)},
        "changes": [{k: v for k, v in c.items() if k in ("ts", "decision", "key", "name", "target", "reason",
                                                           "changes", "scopes", "by", "model", "rollout", "step",
                                                           "share", "why")} for c in changes],
    }


def report(log: AuditLog, *, since: float | None = None, until: float | None = None
           ) -> tuple[dict[str, Any], list[Row]]:
    """The report for ``[since, until)`` and the period's rows, from a chain verified whole first.

    Raises:
        TamperedLogError: the chain does not verify.
    """
    rows = verified_rows(log)
    period = in_period(rows, since, until)
    return summarise(period, since=since, until=until, chain_rows=len(rows),
                     head=rows[-1].hash if rows else GENESIS), period


def render_markdown(doc: dict[str, Any]) -> str:
    """The report for people."""
    def when(ts: float | None) -> str:
        return "—" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")

    def table(title: str, counts: dict[str, int]) -> list[str]:
        if not counts:
            return [f"{title}: none", ""]
        return [f"| {title} | n |", "|---|---|", *(f"| {k} | {v} |" for k, v in counts.items()), ""]

    p, q = doc["period"], doc["requests"]
    lines = [
        "# Gateway audit report", "",
        f"Period: {when(p['since'])} to {when(p['until'])}; audit rows {p['first_seq']}–{p['last_seq']} "
        f"({p['rows']} rows).", "",
        f"The whole chain ({doc['chain']['rows']} rows, head `{doc['chain']['head']}`) verified before this report "
        "was counted.", "",
        "## Requests", "",
        f"{q['total']} requests; {q['served']} served ({q['prompt_tokens']} prompt and {q['completion_tokens']} "
        f"completion tokens); {doc['blocked']['requests']} blocked before the model; "
        f"{doc['blocked']['replies_cut']} replies cut by a guard.", "",
        *table("decision", q["by_decision"]), *table("model", q["by_model"]), *table("key", q["by_key"]),
        *table("guard that objected (blocked, cut, redacted or escalated)", doc["blocked"]["flagged_by_guard"]),
        "## Escalations and reviews", "",
        f"{doc['escalated']['total']} escalated to people; {doc['reviews']['expired_to_default']} expired to the "
        "default.", "",
        *table("reviewer's decision", doc["reviews"]["decisions"]), *table("reviewer", doc["reviews"]["by_reviewer"]),
        "## Monitor", "",
        f"{doc['monitor']['alarms']} alarms, {doc['monitor']['actions']} actions taken.", "",
        *table("signal", doc["monitor"]["by_signal"]),
        "## Changes", "",
    ]
    if not doc["changes"]:
        lines.append("None.")
    for change in doc["changes"]:
        rest = ", ".join(f"{k}={json.dumps(v)}" for k, v in change.items() if k not in ("ts", "decision"))
        lines.append(f"- {when(change.get('ts'))} **{change['decision']}** {rest}")
    return "\n".join(lines) + "\n"


# The bundle's own checker: the standard library only, so an auditor runs it without tether.
VERIFY_SCRIPT = '''"""Check this bundle: every file's SHA-256 against MANIFEST.json, and audit.jsonl's hash chain (each
row's hash is sha256(prev_hash + record), each prev_hash the row before's hash, sequence numbers without a gap).
Exit 0 when all hold; 1 naming the first failure."""
import hashlib
import json
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
manifest = json.loads((here / "MANIFEST.json").read_text())
for name, digest in manifest["files"].items():
    if hashlib.sha256((here / name).read_bytes()).hexdigest() != digest:
        sys.exit(f"{name}: its SHA-256 is not the manifest's (changed after export)")
prev, seq = manifest["anchor"], None
for n, line in enumerate((here / "audit.jsonl").read_text(encoding="utf-8").splitlines(), 1):
    row = json.loads(line)
    text = json.dumps(row["record"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if seq is not None and row["seq"] != seq + 1:
        sys.exit(f"audit.jsonl line {n}: row {seq + 1} is missing")
    if row["prev_hash"] != prev:
        sys.exit(f"audit.jsonl line {n}: its prev_hash is not the previous row's hash")
    if hashlib.sha256((prev + text).encode()).hexdigest() != row["hash"]:
        sys.exit(f"audit.jsonl line {n}: its content does not match its hash")
    prev, seq = row["hash"], row["seq"]
if prev != manifest["last_hash"]:
    sys.exit("audit.jsonl ends before the manifest's last row (rows removed at the end)")
print(f"intact: {len(manifest['files'])} files, chain of {manifest['rows']} rows")
'''


def write_bundle(out: str | Path, doc: dict[str, Any], rows: list[Row]) -> Path:
    """Write the auditor's bundle to the new directory ``out``.

    Raises:
        UserError: ``out`` exists (nothing is overwritten).
    """
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists; choose another --out (a bundle is never overwritten)")
    out.mkdir(parents=True)
    files = {
        "report.json": json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
        "report.md": render_markdown(doc),
        "audit.jsonl": "".join(json.dumps({"seq": r.seq, "record": r.record, "prev_hash": r.prev_hash,
                                           "hash": r.hash}, ensure_ascii=False) + "\n" for r in rows),
        "verify.py": VERIFY_SCRIPT,
    }
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    manifest = {"files": {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in files},
                "anchor": rows[0].prev_hash if rows else GENESIS,
                "last_hash": rows[-1].hash if rows else GENESIS, "rows": len(rows)}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out
