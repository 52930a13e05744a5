"""``report.html`` of ``tether guard eval``: every guard's rates with their intervals, cost, and tiers, then
each guard's rates per category and per split. Self-contained (no scripts, nothing fetched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.core.html import escape, page, pct


def _rate(r: dict[str, Any] | None) -> str:
    return "–" if not r else f"{pct(r['value'])} <span class='meta'>[{pct(r['ci_low'])}–{pct(r['ci_high'])}]</span>"


def _rows_table(entries: dict[str, dict[str, Any]], first: str) -> list[str]:
    out = ["<table>", f"<tr><th>{escape(first)}</th><th>n</th><th>unsafe</th><th>TPR</th><th>FPR</th>"
           "<th>precision</th><th>F1</th></tr>"]
    for name, e in entries.items():
        out.append(f"<tr><td>{escape(name)}</td><td>{e['n']}</td><td>{e['positives']}</td><td>{_rate(e['tpr'])}</td>"
                   f"<td>{_rate(e['fpr'])}</td><td>{_rate(e['precision'])}</td>"
                   f"<td>{'–' if e['f1'] is None else e['f1']}</td></tr>")
    return [*out, "</table>"]


def write_report(report: dict[str, Any], path: str | Path, *, data: list[str]) -> None:
    """Write the page for ``report`` (what :func:`tether.guard.evaluate.evaluate_guards` returns)."""
    body = ["<h1>tether guard eval</h1>",
            f"<p class='meta'>{report['rows']} rows ({report['positives']} unsafe) from "
            f"{', '.join(escape(d) for d in data)} · rates with 95% Wilson intervals</p>",
            "<table><tr><th>guard</th><th>TPR</th><th>FPR</th><th>precision</th><th>F1</th><th>AUROC</th>"
            "<th>TPR at 1% FPR</th><th>p50 / p99 per check</th><th>traffic reaching each tier (p50 / p99)</th>"
            "<th>parse failures</th></tr>"]
    for name, e in report["guards"].items():
        tier_ms = e.get("tier_latency_ms", {})
        tiers = ", ".join(f"{escape(t)} {pct(s)} ({tier_ms[t]['p50']} / {tier_ms[t]['p99']} ms)"
                          for t, s in e.get("tiers", {}).items()) or "–"
        f1 = "–" if e["f1"] is None else str(e["f1"])
        if e.get("f1_interval"):
            f1 += f" <span class='meta'>[{e['f1_interval']['ci_low']}–{e['f1_interval']['ci_high']}]</span>"
        at = e.get("tpr_at_fpr", {}).get("1%")
        body.append(f"<tr><td>{escape(name)}</td><td>{_rate(e['tpr'])}</td><td>{_rate(e['fpr'])}</td>"
                    f"<td>{_rate(e['precision'])}</td><td>{f1}</td><td>{e.get('auroc', '–')}</td>"
                    f"<td>{pct(at) if at is not None else '–'}</td>"
                    f"<td>{e['latency_ms']['p50']} / {e['latency_ms']['p99']} ms</td>"
                    f"<td>{tiers}</td><td>{e.get('parse_failures', '–')}</td></tr>")
    body.append("</table>")
    for name, e in report["guards"].items():
        for field in ("category", "split"):
            if f"by_{field}" in e:
                body += [f"<h2>{escape(name)} by {field}</h2>", *_rows_table(e[f"by_{field}"], field)]
    Path(path).write_text(page("tether guard eval", body), encoding="utf-8")
