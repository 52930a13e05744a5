"""report.html for ``tether run``: one self-contained page a person would rather read than the logs —
every stage's gold metrics with intervals (harmful compliance beside over-refusal), the training
curves, the reward-hacking signals of RL stages, the red-team of the final model, and what each stage
cost. No scripts, nothing fetched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.core.html import escape, metric_table, page, pct, rate_plot, svg

# Logged series worth a curve, per kind of training (first present wins a panel).
CURVES = (("loss", "loss"), ("reward", "reward (proxy)"), ("gold_reward", "gold reward"), ("kl", "KL to reference"),
          ("entropy", "entropy"), ("reward/reward-model/disagreement", "RM disagreement"))


def write_report(summary: dict[str, Any], path: str | Path) -> None:
    """Write ``path`` for a ``tether run`` summary."""
    from tether.pipelines.main import RUN_HEADLINE

    stages = summary["stages"]
    evaluated = [s for s in stages if "metrics" in s and s["recipe"] != "redteam"]
    seed = summary.get("world_seed")
    body = [f"<h1>tether run</h1><p class='meta'>base <code>{escape(summary['base_model'])}</code> → final "
            f"<code>{escape(summary['final_model'])}</code>"
            + (f" · world seed {seed}" if seed is not None else "")
            + f" · {len(stages)} stages · {summary['total_seconds'] / 60:.1f} min in all · gold metrics with 95% "
            "intervals</p>"]
    if evaluated:
        names = [n for n in RUN_HEADLINE if any(n in s["metrics"] for s in evaluated)]
        body += ["<h2>Every stage on the headline metrics</h2>", _stage_table(evaluated, names),
                 "<div class='plot'>" + rate_plot([(n, {}) for n in names], {}, series=[s["name"] for s in evaluated],
                                                  data=[s["metrics"] for s in evaluated]) + "</div>"]
        final = evaluated[-1]
        others = [(n, m) for n, m in final["metrics"].items() if n not in names]
        if others:
            body += [f"<h2>Every metric of the final model ({escape(final['name'])})</h2>", metric_table(others, {})]
    curves = [(s, _log(s)) for s in stages if s["recipe"] not in ("base", "redteam")]
    curves = [(s, log) for s, log in curves if log]
    if curves:
        body.append("<h2>Training curves and reward-hacking signals</h2>")
        for stage, log in curves:
            body.append(f"<h3>{escape(stage['name'])} ({escape(stage['recipe'])})</h3>"
                        f"<div class='plot'>{_curves(log)}</div>")
    redteam = next((s for s in stages if s["recipe"] == "redteam"), None)
    if redteam is not None:
        rows = [(n, m) for n, m in redteam["metrics"].items() if n.count(".") == 1]
        body += [f"<h2>Red-team of the final model</h2><p class='meta'>attack success rate by attack kind "
                 f"(Wilson 95% intervals over goals); every attack in "
                 f"<code>{escape(redteam['dir'])}/attacks.jsonl</code></p>", metric_table(rows, {}),
                 f"<div class='plot'>{rate_plot(rows, {})}</div>"]
    body.append("<h2>What each stage cost</h2><table><tr><th>stage</th><th>recipe</th><th>run (s)</th>"
                "<th>evaluation (s)</th></tr>")
    for s in stages:
        evaluation = s.get("eval_seconds")
        body.append(f"<tr><td>{escape(s['name'])}</td><td>{escape(s['recipe'])}</td>"
                    f"<td class='num'>{s['seconds']:.1f}{' (cached)' if s.get('cached') else ''}</td>"
                    f"<td class='num'>{'' if evaluation is None else f'{evaluation:.1f}'}</td></tr>")
    body.append(f"<tr><td>total</td><td></td><td class='num'>{summary['total_seconds']:.1f}</td><td></td></tr>"
                "</table>")
    Path(path).write_text(page("tether run", body), encoding="utf-8")


def _stage_table(stages: list[dict[str, Any]], names: list[str]) -> str:
    head = "".join(f"<th>{escape(s['name'])}</th>" for s in stages)
    out = [f"<table><tr><th>metric</th>{head}</tr>"]
    for name in names:
        cells = []
        for s in stages:
            m = s["metrics"].get(name)
            cells.append("<td></td>" if m is None else
                         f"<td class='num'>{pct(m['value'])} [{pct(m['ci_low'])}, {pct(m['ci_high'])}]</td>")
        out.append(f"<tr><td>{escape(name)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return "".join(out)


def _log(stage: dict[str, Any]) -> list[dict[str, Any]]:
    """A training stage's logged metrics (``metrics.jsonl`` of its run directory), if it has one."""
    model = stage.get("model")
    run_dir = Path(model).parent if model else None
    path = run_dir / "metrics.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curves(log: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = [(key, label) for key, label in CURVES if any(key in row for row in log)]
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        figure = Figure(figsize=(2.6 * max(1, len(panels)), 2.2))
        axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
        for ax, (key, label) in zip(axes, panels, strict=False):
            points = [(row["step"], row[key]) for row in log if key in row and "step" in row]
            ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.2)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        figure.tight_layout()
    return svg(figure)
