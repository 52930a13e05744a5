"""Self-contained HTML for what :mod:`tether.interp.attribution` measures: a patching heatmap (layers ×
prompt positions, activation patching beside its first-order estimate) and token attributions (each token
shaded by its share, with a bar per token)."""

from __future__ import annotations

from typing import Any

from tether.core.html import escape, page, svg


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def patching_report(sweep: dict[str, Any], estimate: dict[str, Any] | None = None, *, title: str = "",
                    heads: dict[str, Any] | None = None) -> str:
    """The patching sweep (and attribution patching's estimate, when given) as heatmaps with the tokens; with
    ``heads`` (:func:`tether.interp.attribution.head_patching`), a layer × head heatmap below."""
    plt = _pyplot()
    maps = [("activation patching", sweep)] + ([("attribution patching (first-order estimate)", estimate)]
                                               if estimate is not None else [])
    tokens = sweep["tokens_clean"]
    labels = [a if a == b else f"{a}→{b}" for a, b in zip(sweep["tokens_corrupted"], tokens, strict=True)]
    size = (max(6, 0.45 * len(tokens)) * len(maps), 0.5 * len(sweep["layers"]) + 2.2)
    figure, axes = plt.subplots(1, len(maps), figsize=size, squeeze=False)
    for axis, (name, data) in zip(axes[0], maps, strict=True):
        image = axis.imshow(data["restored"], cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        axis.set_title(name)
        axis.set_yticks(range(len(data["layers"])), [f"{sweep['kind']}.{layer}" for layer in data["layers"]])
        axis.set_xticks(range(len(labels)), labels, rotation=90)
        figure.colorbar(image, ax=axis, label="share of the clean score restored")
    figure.tight_layout()
    plot = svg(figure)
    plt.close(figure)
    best = max(((v, i, j) for i, row in enumerate(sweep["restored"]) for j, v in enumerate(row)), default=None)
    where = "" if best is None else (f"<p>Most restored by one value: {best[0]:.3f} at "
                                     f"{escape(sweep['kind'])}.{sweep['layers'][best[1]]}, position {best[2]} "
                                     f"(<code>{escape(tokens[best[2]])}</code>).</p>")
    parts = [f"<h1>{escape(title or 'Activation patching')}</h1>",
             f"<p class='meta'>clean score {sweep['clean_score']:.4f}, corrupted {sweep['corrupted_score']:.4f}; each "
             "cell: the corrupted run with that one site value taken from the clean run, as a share of the gap (1: "
             "all of it restored)</p>", where, f"<div class='plot'>{plot}</div>"]
    if heads is not None:
        figure, axis = plt.subplots(figsize=(max(5, 0.5 * heads["heads"] + 2), 0.5 * len(heads["layers"]) + 2))
        image = axis.imshow(heads["restored"], cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        axis.set_title("one attention head patched (every position)")
        axis.set_yticks(range(len(heads["layers"])), [f"layer {layer}" for layer in heads["layers"]])
        axis.set_xticks(range(heads["heads"]), [f"head {h}" for h in range(heads["heads"])], rotation=90)
        figure.colorbar(image, ax=axis, label="share of the clean score restored")
        figure.tight_layout()
        parts += ["<h2>Attention heads</h2>", f"<div class='plot heads'>{svg(figure)}</div>"]
        plt.close(figure)
    return page(title or "Activation patching", parts)


def attribution_report(result: dict[str, Any], *, title: str = "") -> str:
    """Token attributions: the prompt with each token shaded (red: towards the target, blue: away), and bars."""
    plt = _pyplot()
    values = result["attributions"]
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    spans = []
    for token, value in zip(result["tokens"], values, strict=True):
        alpha = abs(value) / scale
        colour = f"rgba(200,30,30,{alpha:.2f})" if value > 0 else f"rgba(30,80,200,{alpha:.2f})"
        spans.append(f"<span class='tok' style='background:{colour}' title='{value:+.4f}'>{escape(token)}</span>")
    figure, axis = plt.subplots(figsize=(max(6, 0.4 * len(values)), 3))
    axis.bar(range(len(values)), values, color=["#c81e1e" if v > 0 else "#1e50c8" for v in values])
    axis.set_xticks(range(len(values)), result["tokens"], rotation=90)
    axis.set_ylabel("attribution")
    figure.tight_layout()
    plot = svg(figure)
    plt.close(figure)
    check = ""
    if "completeness_gap" in result:
        check = (f"<p class='meta'>the attributions sum to {result['sum']:.4f}; the score moved "
                 f"{result['score'] - result['baseline_score']:.4f} from the baseline to the prompt (gap "
                 f"{result['completeness_gap']:.4f})</p>")
    return page(title or "Token attributions", [
        f"<h1>{escape(title or 'Token attributions')}</h1>",
        f"<p class='meta'>method {escape(result['method'])}; score {result['score']:.4f}</p>", check,
        f"<p class='tokens'><code>{''.join(spans)}</code></p>", f"<div class='plot'>{plot}</div>"])
