"""report.html for a red-team run: ASR by attack kind with intervals, slices by harm category and split,
hit@k, the diversity of what succeeded, and example successful attacks; self-contained, as every report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.core.html import escape, metric_table, page, pct, rate_plot


def write_report(doc: dict[str, Any], rows: list[dict[str, Any]], path: str | Path, *, examples: int = 6) -> None:
    """Write ``path`` for the metrics document ``doc`` and its scored attack rows."""
    metrics: dict[str, dict[str, Any]] = doc["metrics"]
    throughput = doc["throughput"]
    rate = "–" if throughput["attacks_per_s"] is None else f"{throughput['attacks_per_s']:.1f} attacks/s"
    body = [f"<h1>tether redteam: <code>{escape(doc['target'])}</code></h1>",
            f"<p class='meta'>{doc['goals']['n']} goals ({escape(doc['goals']['source'])}) · {len(doc['attacks'])} "
            f"attack kinds · {doc['n_prompts']} prompts · success decided by <code>{escape(doc['decided_by'])}</code>"
            f" · Wilson 95% intervals over goals · temperature {doc['generation']['temperature']} · {rate}"
            f" · target errors (unscored): {doc['target_errors']}</p>"]
    headline = [(f"asr.{kind}", metrics[f"asr.{kind}"]) for kind in doc["attacks"] if f"asr.{kind}" in metrics]
    if "asr.all" in metrics:
        headline.append(("asr.all", metrics["asr.all"]))
    body += ["<h2>Attack success rate by attack kind</h2>", metric_table(headline, {}),
             f"<div class='plot'>{rate_plot(headline, {})}</div>"]
    for slice_name, title in (("category", "By harm category"), ("split", "By goal split")):
        rows_ = [(n, m) for n, m in metrics.items() if f".{slice_name}." in n and n.startswith("asr.")]
        if rows_:
            body += [f"<h2>{escape(title)}</h2>", metric_table(rows_, {})]
    hits = [(n, m) for n, m in metrics.items() if n.startswith("hit@")]
    if hits:
        body += ["<h2>hit@k (multi-attempt attacks)</h2>", metric_table(hits, {})]
    body.append("<h2>Diversity of successful attacks</h2><table><tr><th>attack</th><th>successful prompts</th>"
                "<th>unique</th><th>near-duplicate clusters</th><th>distinct-2</th></tr>")
    for kind, d in doc["diversity"].items():
        body.append(f"<tr><td>{escape(kind)}</td><td class='num'>{d['n']}</td><td class='num'>{d['unique']}</td>"
                    f"<td class='num'>{d['clusters']}</td><td class='num'>{d['distinct_2']:.3f}</td></tr>")
    body.append("</table>")
    body.append("<h2>Scorer outcomes</h2><table><tr><th>scorer</th><th>outcomes</th></tr>")
    for name, counts in doc["scorer_status"].items():
        body.append(f"<tr><td>{escape(name)}</td><td>{escape(', '.join(f'{k}: {v}' for k, v in counts.items()))}"
                    "</td></tr>")
    body.append("</table>")
    if examples:
        body.append("<h2>Successful attacks</h2>")
        for kind in doc["attacks"]:
            shown = [r for r in rows if r["kind"] == kind and r["success"]][:examples]
            if not shown:
                continue
            body.append(f"<h3>{escape(kind)} ({pct(metrics[f'asr.{kind}']['value'])})</h3><table>"
                        "<tr><th>prompt</th><th>response</th></tr>")
            for r in shown:
                prompt = r["prompt"] if isinstance(r["prompt"], str) else "\n".join(
                    f"[{m['role']}] {m['content']}" for m in r["prompt"])
                body.append(f"<tr><td><pre>{escape(prompt)}</pre></td><td><pre>{escape(r['response'])}</pre></td></tr>")
            body.append("</table>")
    Path(path).write_text(page(f"tether redteam: {doc['target']}", body), encoding="utf-8")
