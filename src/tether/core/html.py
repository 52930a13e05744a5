"""Self-contained HTML pages for reports: tables and inline SVG plots, no scripts, nothing fetched.

The parts every report is built from (evaluations, red-teaming, pipelines): :func:`page`, :func:`metric_table`,
:func:`rate_plot`, :func:`svg`, :func:`escape` and :func:`pct`.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem} th,td{border:1px solid #ddd;padding:.3rem .6rem;
text-align:left} th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555;font-size:.9rem} .bad{color:#b00020} .good{color:#0a7a2f} .plot svg{max-width:100%;height:auto}
pre{white-space:pre-wrap;background:#f8f8f8;padding:.4rem;margin:0;font-size:.8rem}
.headline{display:flex;gap:1.5rem;flex-wrap:wrap} .card{border:1px solid #ddd;border-radius:6px;padding:.8rem 1.2rem}
.card .v{font-size:1.6rem;font-weight:600}
"""


def escape(value: Any) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value))


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal; a dash when there is none."""
    return "–" if value is None or value != value else f"{100 * value:.1f}%"


def svg(figure: Any) -> str:
    """A matplotlib figure as inline SVG (no script, no date: the same figure gives the same bytes)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def rate_plot(rows: list[tuple[str, dict[str, Any]]], reference: dict[str, float],
               series: Sequence[str] | None = None, data: list[dict[str, dict[str, Any]]] | None = None) -> str:
    """Horizontal bars with 95% intervals (one series per run when comparing); reference rates as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = [name for name, _ in rows]
    runs = data if data is not None else [{name: m for name, m in rows}]
    labels = list(series) if series is not None else [""]
    height = max(1.6, 0.32 * len(names) * max(1, len(runs)) + 0.8)
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        figure = Figure(figsize=(8, height))
        ax = figure.subplots()
        width = 0.8 / len(runs)
        for r, run in enumerate(runs):
            ys, values, lows, highs = [], [], [], []
            for i, name in enumerate(names):
                metric = run.get(name)
                if metric is None or metric["value"] != metric["value"]:
                    continue
                ys.append(len(names) - 1 - i + (len(runs) - 1 - 2 * r) * width / 2)
                values.append(metric["value"])
                lows.append(max(0.0, metric["value"] - metric["ci_low"]))
                highs.append(max(0.0, metric["ci_high"] - metric["value"]))
            ax.barh(ys, values, height=width * 0.9, xerr=[lows, highs], capsize=2, label=labels[r] or None,
                    alpha=0.85, error_kw={"elinewidth": 0.8})
        ref = [(len(names) - 1 - i, reference[n]) for i, n in enumerate(names) if n in reference]
        if ref:
            ax.scatter([v for _, v in ref], [y for y, _ in ref], marker="|", s=300, color="black", zorder=3,
                       label="reference rate")
        ax.set_yticks(range(len(names)), [n.split(".", 1)[-1] for n in reversed(names)])
        ax.set_xlim(0, 1)
        ax.set_xlabel("rate (95% interval)")
        if ref or series:
            ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    return svg(figure)


def page(title: str, body: list[str]) -> str:
    """A whole HTML document: ``title`` and the ``body`` fragments, with the shared stylesheet inline."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def metric_table(rows: list[tuple[str, dict[str, Any]]], reference: dict[str, float]) -> str:
    """A table of rates with their intervals and n; with ``reference`` rates, whether each lies inside."""
    has_ref = any(n in reference for n, _ in rows)
    head = "<tr><th>metric</th><th>value</th><th>95% interval</th><th>n</th>"
    head += "<th>reference rate</th><th>within interval</th></tr>" if has_ref else "</tr>"
    out = ["<table>", head]
    for name, m in rows:
        cells = (f"<td>{escape(name)}</td><td class='num'>{pct(m['value'])}</td>"
                 f"<td class='num'>[{pct(m['ci_low'])}, {pct(m['ci_high'])}]</td><td class='num'>{m['n']}</td>")
        if has_ref:
            ref = reference.get(name)
            inside = "" if ref is None else ("yes" if m["ci_low"] <= ref <= m["ci_high"] else "no")
            klass = "good" if inside == "yes" else "bad"
            cells += f"<td class='num'>{pct(ref)}</td><td class='{klass}'>{inside}</td>"
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "".join(out)
