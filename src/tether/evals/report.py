"""Self-contained HTML reports: tables and inline SVG plots, no scripts, nothing fetched.

``write_report`` renders one eval (one section per metric family, the scorer-vs-gold
agreement table, scorer failure counts, example responses); ``write_compare_report`` puts
several runs side by side with paired-test significance marks. The parts are :mod:`tether.core.html`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.core.html import escape, metric_table, page, pct, rate_plot
from tether.evals.suites import SECTIONS


def _ordered(names: list[str]) -> list[str]:
    """Headline metrics first (``harmless.harmful_compliance`` beside ``harmless.over_refusal``), then slices."""
    return sorted(names, key=lambda n: (n.count("."), n))


def _section_of(name: str) -> str:
    head = name.split(".", 1)[0]
    return head if head in SECTIONS else "other"


def write_report(doc: dict[str, Any], samples: list[dict[str, Any]], path: str | Path, *, examples: int = 12) -> None:
    """report.html for one eval run."""
    metrics: dict[str, dict[str, Any]] = doc["metrics"]
    reference: dict[str, float] = doc.get("reference", {})
    body = [f"<h1>tether eval: {escape(doc['suite'])}</h1>",
            f"<p class='meta'>model <code>{escape(doc['model'])}</code> · {doc['n_prompts']} prompts · "
            f"{doc['n_samples']} samples ({doc['samples_per_prompt']} per prompt) · "
            f"intervals: {escape(doc['interval'])}, "
            f"95% · temperature {doc['generation']['temperature']}, max {doc['generation']['max_new_tokens']} "
            "new tokens</p>"]
    body += _headline(metrics)
    for section, title in [*SECTIONS.items(), ("other", "Other metrics")]:
        rows = [(n, metrics[n]) for n in _ordered(list(metrics)) if _section_of(n) == section]
        if not rows:
            continue
        body.append(f"<section id='{section}'><h2>{escape(title)}</h2>")
        body.append(metric_table(rows, reference))
        body.append(f"<div class='plot'>{rate_plot(rows, reference)}</div></section>")
    body += _agreement(doc.get("agreement", []), doc.get("scorer_status", {}))
    body += _examples(samples, examples)
    Path(path).write_text(page(f"tether eval: {doc['suite']}", body), encoding="utf-8")


def _headline(metrics: dict[str, dict[str, Any]]) -> list[str]:
    cards = []
    for name, title in (("harmless.harmful_compliance", "harmful compliance"),
                        ("harmless.over_refusal", "over-refusal"), ("helpful.task_accuracy", "task accuracy"),
                        ("helpful.accuracy", "accuracy"), ("honest.sycophancy", "sycophancy"),
                        ("honest.hallucination", "hallucination"), ("corrigible.resistance", "resistance")):
        if name in metrics:
            m = metrics[name]
            cards.append(f"<div class='card'><div>{escape(title)}</div><div class='v'>{pct(m['value'])}</div>"
                         f"<div class='meta'>[{pct(m['ci_low'])}, {pct(m['ci_high'])}] n={m['n']}</div></div>")
    return ["<section id='headline'><h2>Headline</h2><div class='headline'>" + "".join(cards) + "</div></section>"]


def _agreement(table: list[dict[str, Any]], status: dict[str, dict[str, int]]) -> list[str]:
    out = ["<section id='scorers-vs-gold'><h2>Scorers against gold labels</h2>"]
    if table:
        out.append("<table><tr><th>scorer</th><th>question</th><th>n</th><th>accuracy</th><th>Cohen's κ</th>"
                   "<th>false-positive rate</th><th>false-negative rate</th><th>gold yes</th>"
                   "<th>parse failures</th><th>judge refusals</th><th>errors</th></tr>")
        for row in table:
            kappa = "–" if row["kappa"] is None else f"{row['kappa']:.3f}"
            out.append(f"<tr><td>{escape(row['scorer'])}</td><td>{escape(row['question'])}</td>"
                       f"<td class='num'>{row['n']}</td>"
                       f"<td class='num'>{pct(row['accuracy'])}</td>"
                       f"<td class='num'>{kappa}</td>"
                       f"<td class='num'>{pct(row['false_positive_rate'])}</td>"
                       f"<td class='num'>{pct(row['false_negative_rate'])}</td>"
                       f"<td class='num'>{row['gold_positive']}</td><td class='num'>{row['parse_failures']}</td>"
                       f"<td class='num'>{row['judge_refusals']}</td><td class='num'>{row['errors']}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>No gold labels for these samples: agreement cannot be measured.</p>")
    out.append("<h3>Scorer outcomes</h3><table><tr><th>scorer</th><th>ok</th><th>parse failures</th>"
               "<th>judge refusals</th><th>errors</th><th>not applicable</th></tr>")
    for name, counts in status.items():
        out.append(f"<tr><td>{escape(name)}</td>" + "".join(
            f"<td class='num'>{counts.get(k, 0)}</td>"
            for k in ("ok", "parse-failure", "judge-refusal", "error", "not-applicable"))
            + "</tr>")
    out.append("</table></section>")
    return out


def _examples(samples: list[dict[str, Any]], per_group: int) -> list[str]:
    if per_group == 0:
        return []
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in samples:
        group = str(row["meta"].get("family") or row["meta"].get("label") or "all")
        if len(groups.setdefault(group, [])) < per_group:
            groups[group].append(row)
    out = ["<section id='examples'><h2>Example responses</h2>"]
    for group, rows in groups.items():
        out.append(f"<h3>{escape(group)}</h3><table><tr><th>prompt</th><th>response</th><th>scores</th></tr>")
        for row in rows:
            prompt = row["prompt"] if isinstance(row["prompt"], str) else "\n".join(
                f"[{m['role']}] {m['content']}" for m in row["prompt"])
            scores = "<br>".join(f"{escape(n)}: {escape(s['label'])}" for n, s in row["scores"].items())
            out.append(f"<tr><td><pre>{escape(prompt)}</pre></td><td><pre>{escape(row['response'])}</pre></td>"
                       f"<td>{scores}</td></tr>")
        out.append("</table>")
    out.append("</section>")
    return out


def write_compare_report(comparison: dict[str, Any], path: str | Path) -> None:
    """report.html for ``tether eval compare``: every run's metrics side by side, paired tests against the first."""
    runs: list[dict[str, Any]] = comparison["runs"]
    labels = [r["label"] for r in runs]
    body = ["<h1>tether eval compare</h1>",
            "<p class='meta'>Baseline: <code>" + escape(labels[0]) + "</code>. Differences are later run minus "
            "baseline, "
            "paired on the same prompts; p-values from exact McNemar (one 0/1 sample per prompt) or a sign-flip "
            "permutation test, Holm-adjusted across all comparisons; * marks adjusted p &lt; 0.05.</p>",
            "<table><tr><th>run</th><th>model</th><th>suite</th><th>samples</th></tr>"]
    body += [f"<tr><td>{escape(r['label'])}</td><td><code>{escape(r['model'])}</code></td><td>{escape(r['suite'])}</td>"
             f"<td class='num'>{r['n_samples']}</td></tr>" for r in runs]
    body.append("</table>")
    names = comparison["metrics"]
    for section, title in [*SECTIONS.items(), ("other", "Other metrics")]:
        rows = [n for n in _ordered(names) if _section_of(n) == section]
        if not rows:
            continue
        body.append(f"<section id='{section}'><h2>{escape(title)}</h2><table><tr><th>metric</th>")
        body.append("".join(f"<th>{escape(label)}</th>" for label in labels))
        body.append("".join(f"<th>Δ {escape(label)}</th>" for label in labels[1:]) + "</tr>")
        for name in rows:
            cells = [f"<td>{escape(name)}</td>"]
            for run in runs:
                m = run["metrics"].get(name)
                cells.append("<td class='num'>–</td>" if m is None else
                             f"<td class='num'>{pct(m['value'])} [{pct(m['ci_low'])}, {pct(m['ci_high'])}]</td>")
            for run in runs[1:]:
                test = run["tests"].get(name)
                if test is None:
                    cells.append("<td class='num'>–</td>")
                    continue
                mark = "*" if test["significant"] else ""
                cells.append(f"<td class='num'>{100 * test['diff']:+.1f} pts{mark} "
                             f"<span class='meta'>p={test['p_adjusted']:.3g}, n={test['n']}</span></td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        body.append("</table>")
        data = [run["metrics"] for run in runs]
        body.append(f"<div class='plot'>{rate_plot([(n, {}) for n in rows], {}, labels, data)}</div></section>")
    Path(path).write_text(page("tether eval compare", body), encoding="utf-8")
