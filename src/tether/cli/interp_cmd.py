"""``tether interp``: capture activations at named sites of any model, and fit probes on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Look inside a model: activations at named sites (resid_pre.L, resid_post.L, attn_out.L, "
                  "mlp_out.L) and linear probes on them.", no_args_is_help=True)


def _rows(path: str) -> list[dict[str, Any]]:
    from tether.core.errors import UserError
    from tether.data.io import jsonl_objects

    rows = []
    for where, row in jsonl_objects(path):
        text = row.get("text", row.get("prompt"))
        if not isinstance(text, str):
            raise UserError(f"{where}: expected a string 'text' (or 'prompt')")
        rows.append({"text": text, **({"label": row["label"]} if "label" in row else {})})
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


@app.command("capture")
def capture_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="model directory, hub id, world:base or tiny:ARCH")],
    data: Annotated[str, typer.Option("--data", help="JSONL: one text per line ('text' or 'prompt'), optionally a "
                                      "'label'")],
    site: Annotated[list[str], typer.Option("--site", help="a site to capture (repeatable): resid_pre.L, "
                                            "resid_post.L, attn_out.L, mlp_out.L; L < 0 counts from the end")],
    out: Annotated[str, typer.Option("--out", "-o", help="directory for the shards (new)")],
    positions: Annotated[str, typer.Option("--positions", help="last (each text's last token), mean, or all")
                         ] = "last",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    shard_rows: Annotated[int, typer.Option("--shard-rows", min=1, help="rows per shard")] = 4096,
) -> None:
    """Capture activations at SITEs for every text of DATA, streamed to safetensors shards with the rows'
    labels.

    Example: tether interp capture -m world:base --data prompts.jsonl --site resid_post.-1 --out acts/
    """
    from tether.core.errors import UserError
    from tether.interp.capture import capture_to_disk
    from tether.interp.sites import Site, resolve
    from tether.models.loading import ModelConfig, load_model_and_tokenizer

    if positions not in ("last", "mean", "all"):
        raise UserError(f"--positions {positions!r}: expected last, mean or all")
    if (Path(out) / "capture.json").exists():
        raise UserError(f"{out} already holds a capture; choose a new --out")
    try:
        [Site.parse(s) for s in site]  # a malformed name is refused before the model is loaded
    except ValueError as exc:
        raise UserError(str(exc)) from None
    rows = _rows(data)
    loaded, tokenizer = load_model_and_tokenizer(ModelConfig(path=model))
    loaded.eval()
    try:
        names = [resolve(loaded, s).site.name for s in site]  # negative layers written as the layer they are
    except ValueError as exc:
        raise UserError(str(exc)) from None
    path = capture_to_disk(loaded, tokenizer, rows, names, out, positions=positions,  # type: ignore[arg-type]
                           batch_size=batch_size, shard_rows=shard_rows)
    meta = json.loads((path / "capture.json").read_text())
    typer.echo(f"{meta['rows']} rows of {', '.join(names)} from {len(rows)} texts -> {path}")


@app.command("probe")
def probe_cmd(
    capture: Annotated[str, typer.Option("--capture", help="a directory tether interp capture wrote (with labels)")],
    site: Annotated[str, typer.Option("--site", help="the captured site to probe")],
    out: Annotated[str, typer.Option("--out", "-o", help="directory for the probes and their metrics (new)")],
    test_share: Annotated[float, typer.Option("--test-share", min=0.05, max=0.95, help="rows held out for the "
                                              "metrics")] = 0.3,
    resamples: Annotated[int, typer.Option("--resamples", min=10, help="bootstrap resamples for AUROC's interval")
                         ] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Fit a logistic probe and the difference-of-means baseline at SITE on a capture's labelled rows; AUROC
    with its interval and recall at 1% false positives on held-out rows, both written side by side.

    Example: tether interp probe --capture acts/ --site resid_post.1 --out probes/
    """
    import numpy as np

    from tether.core.errors import UserError
    from tether.interp.capture import load_capture
    from tether.interp.probes import difference_of_means, logistic_probe, probe_metrics

    target = Path(out)
    if (target / "metrics.json").exists():
        raise UserError(f"{target} already holds probes; choose a new --out")
    try:
        acts, rows = load_capture(capture)
    except FileNotFoundError:
        raise UserError(f"{capture}: no capture.json (tether interp capture writes one)") from None
    if site not in acts:
        raise UserError(f"{capture} has no site {site!r} (it has {', '.join(acts)})")
    if any("label" not in r for r in rows):
        raise UserError(f"{capture}: every row needs a label to fit a probe")
    x, y = acts[site].numpy(), np.array([bool(r["label"]) for r in rows])
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - test_share)))
    train, test = order[:cut], order[cut:]
    if y[train].all() or not y[train].any() or y[test].all() or not y[test].any():
        raise UserError(f"{capture}: both labels are needed in the training and the held-out rows")
    target.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"site": site, "train": len(train), "test": len(test)}
    for fit in (difference_of_means, logistic_probe):
        probe = fit(site, x[train], y[train])
        probe.save(target / f"{probe.kind}.json")
        report[probe.kind] = probe_metrics(probe.scores(x[test]), y[test], resamples=resamples, seed=seed)
    (target / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    for kind in ("difference-of-means", "logistic"):
        m = report[kind]
        typer.echo(f"{kind:20} AUROC {m['auroc']:.3f} [{m['auroc_low']:.3f}-{m['auroc_high']:.3f}]  recall at 1% FPR "
                   f"{m['recall_at_0.01_fpr']:.3f}  ({m['positives']} positive, {m['negatives']} negative held out)")
    typer.echo(f"-> {target}")
