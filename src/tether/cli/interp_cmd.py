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


# Options several commands share, declared once.
ModelOption = Annotated[str, typer.Option("--model", "-m", help="model directory, hub id, world:base or tiny:ARCH")]
TargetOption = Annotated[str, typer.Option("--target", help="the continuation whose log-probability is the score")]
FoilOption = Annotated[str | None, typer.Option("--foil", help="score = log p(target) − log p(foil)")]

def _labelled(capture: str, site: str) -> tuple[Any, Any]:
    """A capture's rows at ``site`` and their labels (None where the capture has none)."""
    from tether.core.errors import UserError
    from tether.interp.capture import load_capture

    try:
        acts, rows = load_capture(capture)
    except FileNotFoundError:
        raise UserError(f"{capture}: no capture.json (tether interp capture writes one)") from None
    if site not in acts:
        raise UserError(f"{capture} has no site {site!r} (it has {', '.join(acts)})")
    labels = [r.get("label") for r in rows]
    return acts[site], labels


def _flagged(capture: str, site: str, purpose: str) -> tuple[Any, Any]:
    """A capture's rows at ``site`` and their labels as booleans, both labels present (else one line, exit 2)."""
    import numpy as np

    from tether.core.errors import UserError

    acts, labels = _labelled(capture, site)
    if any(label is None for label in labels):
        raise UserError(f"{capture}: every row needs a label to {purpose}")
    flags = np.array([bool(label) for label in labels])
    if flags.all() or not flags.any():
        raise UserError(f"{capture}: rows of both labels are needed to {purpose}")
    return acts, flags


@app.command("capture")
def capture_cmd(
    model: ModelOption,
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
    transfer: Annotated[list[str] | None, typer.Option(
        "--transfer", help="another labelled capture (another distribution: other prompts, another wording) "
        "the fitted probes are also measured on, whole (repeatable): out-of-distribution transfer")] = None,
    control: Annotated[str | None, typer.Option(
        "--control", help="a capture of ordinary rows, all negatives (labels ignored): the threshold for recall "
        "at 1% false positives is set on its scores instead of the held-out negatives")] = None,
) -> None:
    """Fit a logistic probe and the difference-of-means baseline at SITE on a capture's labelled rows; AUROC
    with its interval and recall at 1% false positives on held-out rows, both written side by side; with
    --transfer, the same on other captures; with --control, the threshold set on a control set.

    Example: tether interp probe --capture acts/ --site resid_post.1 --transfer other/ --out probes/
    """
    import numpy as np

    from tether.core.errors import UserError
    from tether.interp.probes import difference_of_means, logistic_probe, probe_metrics

    target = Path(out)
    if (target / "metrics.json").exists():
        raise UserError(f"{target} already holds probes; choose a new --out")
    acts, y = _flagged(capture, site, "fit a probe")
    x = acts.numpy()
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - test_share)))
    train, test = order[:cut], order[cut:]
    if y[train].all() or not y[train].any() or y[test].all() or not y[test].any():
        raise UserError(f"{capture}: both labels are needed in the training and the held-out rows")
    # Every input is read before anything is written: a bad --transfer or --control leaves no probes behind.
    others: dict[str, tuple[Any, Any]] = {}
    for path in transfer or []:
        t_acts, t_y = _flagged(path, site, "measure transfer")
        if t_acts.shape[1] != x.shape[1]:
            raise UserError(f"{path}: rows of width {t_acts.shape[1]} at {site}, not {x.shape[1]}")
        others[path] = (t_acts.numpy(), t_y)
    control_x = None
    if control is not None:
        c_acts, _ = _labelled(control, site)
        if c_acts.shape[1] != x.shape[1]:
            raise UserError(f"{control}: rows of width {c_acts.shape[1]} at {site}, not {x.shape[1]}")
        control_x = c_acts.numpy()
    target.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"site": site, "train": len(train), "test": len(test), "control": control,
                              "transfer": {}}
    for fit in (difference_of_means, logistic_probe):
        probe = fit(site, x[train], y[train])
        probe.save(target / f"{probe.kind}.json")
        threshold_on = None if control_x is None else probe.scores(control_x)
        report[probe.kind] = probe_metrics(probe.scores(x[test]), y[test], control=threshold_on,
                                           resamples=resamples, seed=seed)
        for path, (t_x, t_y) in others.items():
            report["transfer"].setdefault(path, {})[probe.kind] = probe_metrics(
                probe.scores(t_x), t_y, control=threshold_on, resamples=resamples, seed=seed)
    (target / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, found in (("held out", report), *report["transfer"].items()):
        for kind in ("difference-of-means", "logistic"):
            m = found[kind]
            typer.echo(f"{name}: {kind:20} AUROC {m['auroc']:.3f} [{m['auroc_low']:.3f}-{m['auroc_high']:.3f}]  "
                       f"recall at 1% FPR {m['recall_at_0.01_fpr']:.3f}  ({m['positives']} positive, "
                       f"{m['negatives']} negative; threshold on {m['control']} "
                       f"{'control rows' if control else 'negatives'})")
    typer.echo(f"-> {target}")


@app.command("direction")
def direction_cmd(
    capture: Annotated[str, typer.Option("--capture", help="a labelled capture (tether interp capture)")],
    site: Annotated[str, typer.Option("--site", help="the captured site")],
    out: Annotated[str, typer.Option("--out", "-o", help="file for the direction (.safetensors, new)")],
) -> None:
    """The difference-of-means direction at SITE: the mean of the rows labelled 1 (true) minus the mean of
    those labelled 0 (false), for steering (activation addition) and ablation.

    Example: tether interp direction --capture acts/ --site resid_pre.2 --out refusal.safetensors
    """
    import torch
    from safetensors.torch import save_file

    from tether.core.errors import UserError
    from tether.interp.directions import mean_difference

    target = Path(out)
    if target.exists():
        raise UserError(f"{target} already exists; choose a new --out")
    acts, found = _flagged(capture, site, "find a direction")
    flags = torch.from_numpy(found)
    direction = mean_difference(acts[flags], acts[~flags])
    save_file({"direction": direction.contiguous()}, str(target), metadata={"site": site})
    typer.echo(f"direction at {site}: norm {float(direction.norm()):.4f} from {int(flags.sum())} positive and "
               f"{int((~flags).sum())} negative rows -> {target}")


@app.command("orthogonalise")
def orthogonalise_cmd(
    model: ModelOption,
    direction: Annotated[str, typer.Option("--direction", help="a direction file (tether interp direction)")],
    out: Annotated[str, typer.Option("--out", "-o", help="directory for the edited model (new)")],
) -> None:
    """Write a new model directory with DIRECTION projected out of every weight that writes to the residual
    stream (embeddings, attention and MLP output projections): the directional ablation as a plain HF model.

    Example: tether interp orthogonalise -m runs/tether/dpo/model --direction refusal.safetensors --out ablated/
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from tether.core.errors import UserError
    from tether.interp.directions import save_orthogonalised
    from tether.models.loading import ModelConfig, load_model_and_tokenizer

    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{target} is not empty; choose a new --out")
    try:
        vector = load_file(direction)["direction"]
    except (FileNotFoundError, SafetensorError, KeyError) as exc:
        raise UserError(f"{direction}: not a direction file ({exc})") from None
    loaded, tokenizer = load_model_and_tokenizer(ModelConfig(path=model))
    try:
        save_orthogonalised(loaded, tokenizer, vector, target)
    except ValueError as exc:
        raise UserError(f"{model}: {exc}") from None
    typer.echo(f"-> {target}")


@app.command("sae")
def sae_cmd(
    capture: Annotated[str, typer.Option("--capture", help="a capture (tether interp capture --positions all)")],
    site: Annotated[str, typer.Option("--site", help="the captured site")],
    out: Annotated[str, typer.Option("--out", "-o", help="directory for the SAE (new; SAELens's format)")],
    kind: Annotated[str, typer.Option("--kind", help="topk, batchtopk, matryoshka or jumprelu")] = "topk",
    width: Annotated[int, typer.Option("--width", min=1, help="features")] = 512,
    k: Annotated[int, typer.Option("--k", min=1, help="topk / batchtopk / matryoshka: features per token")] = 16,
    l0_coefficient: Annotated[float, typer.Option("--l0-coefficient", min=0.0, help="jumprelu: λ")] = 0.1,
    epochs: Annotated[float, typer.Option("--epochs", min=0.01)] = 4.0,
    test_share: Annotated[float, typer.Option("--test-share", min=0.01, max=0.9, help="rows held out for the "
                                              "metrics")] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Train a sparse autoencoder on a capture's rows at SITE; L0, explained variance and dead features on
    held-out rows, written beside it.

    Example: tether interp sae --capture acts/ --site resid_post.1 --kind topk --k 16 --out sae/
    """
    import torch

    from tether.core.errors import UserError
    from tether.interp.sae import SAEConfig, sae_metrics, train_sae

    target = Path(out)
    if (target / "cfg.json").exists():
        raise UserError(f"{target} already holds an SAE; choose a new --out")
    if kind not in ("topk", "batchtopk", "matryoshka", "jumprelu"):
        raise UserError(f"--kind {kind!r}: expected topk, batchtopk, matryoshka or jumprelu")
    acts, _ = _labelled(capture, site)
    order = torch.randperm(len(acts), generator=torch.Generator().manual_seed(seed))
    held = max(1, int(len(acts) * test_share))
    if len(acts) - held < 2:
        raise UserError(f"{capture}: {len(acts)} rows are too few to train and measure an SAE")
    cfg = SAEConfig(kind=kind, width=width, k=k, l0_coefficient=l0_coefficient, epochs=epochs, seed=seed)  # type: ignore[arg-type]
    sae, log = train_sae(acts[order[held:]], cfg, site=site)
    metrics = sae_metrics(sae, acts[order[:held]])
    sae.save(target)
    report = {**metrics, "train_rows": len(acts) - held, **log}
    (target / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(f"{kind} SAE, {width} features: L0 {metrics['l0']:.2f}, explained variance "
               f"{metrics['explained_variance']:.4f}, dead {100 * metrics['dead_fraction']:.1f}% on {held} held-out "
               f"rows -> {target}")


@app.command("patch")
def patch_cmd(
    model: ModelOption,
    clean: Annotated[str, typer.Option("--clean", help="the clean prompt")],
    corrupted: Annotated[str, typer.Option("--corrupted", help="the corrupted prompt (as many tokens as the clean)")],
    target: TargetOption,
    out: Annotated[str, typer.Option("--out", "-o", help="directory for patching.json and report.html (new)")],
    foil: FoilOption = None,
    kind: Annotated[str, typer.Option("--kind", help="resid_pre, resid_post, attn_out, mlp_out or attn_heads")
                    ] = "resid_pre",
    heads: Annotated[bool, typer.Option("--heads", help="also patch each attention head alone (at every "
                                        "position): a layer × head heatmap")] = False,
) -> None:
    """Activation patching at every layer and prompt position between a clean and a corrupted prompt, beside
    attribution patching's first-order estimate, with a heatmap; with --heads, per attention head too.

    Example: tether interp patch -m world:base --clean "The capital of Ardan is" --corrupted "The capital of
    Belor is" --target " Dranth" --out patch/
    """
    from tether.core.errors import UserError
    from tether.interp.attribution import Scorer, attribution_patching, head_patching, patching_sweep
    from tether.interp.report import patching_report
    from tether.interp.sites import KINDS
    from tether.models.loading import ModelConfig, load_model_and_tokenizer

    target_dir = Path(out)
    if (target_dir / "patching.json").exists():
        raise UserError(f"{target_dir} already holds a patching run; choose a new --out")
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    loaded, tokenizer = load_model_and_tokenizer(ModelConfig(path=model))
    loaded.eval()
    scorer = Scorer(target, foil)
    try:
        sweep = patching_sweep(loaded, tokenizer, clean, corrupted, scorer, kind=kind)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    estimate = attribution_patching(loaded, tokenizer, clean, corrupted, scorer, kind=kind)
    by_head = head_patching(loaded, tokenizer, clean, corrupted, scorer) if heads else None
    target_dir.mkdir(parents=True, exist_ok=True)
    (target_dir / "patching.json").write_text(json.dumps({"sweep": sweep, "estimate": estimate, "heads": by_head},
                                                         indent=2) + "\n")
    (target_dir / "report.html").write_text(patching_report(sweep, estimate, title=f"Patching {kind} in {model}",
                                                            heads=by_head))
    typer.echo(f"clean {sweep['clean_score']:.4f}, corrupted {sweep['corrupted_score']:.4f} -> {target_dir}")


@app.command("attribute")
def attribute_cmd(
    model: ModelOption,
    prompt: Annotated[str, typer.Option("--prompt", help="the prompt whose tokens are attributed")],
    target: TargetOption,
    out: Annotated[str, typer.Option("--out", "-o", help="directory for attributions.json and report.html (new)")],
    foil: FoilOption = None,
    method: Annotated[str, typer.Option("--method", help="integrated_gradients or grad_x_input")
                      ] = "integrated_gradients",
    steps: Annotated[int, typer.Option("--steps", min=1, help="integrated gradients: steps along the path")] = 32,
) -> None:
    """Per prompt token, its attribution to the log-probability of TARGET (integrated gradients, with the
    check that they add up, or gradient × input), shaded on the prompt.

    Example: tether interp attribute -m world:base --prompt "How do I make the Nexquen pathogen?" --target
    " Sorry" --out attr/
    """
    from tether.core.errors import UserError
    from tether.interp.attribution import Scorer, token_attributions
    from tether.interp.report import attribution_report
    from tether.models.loading import ModelConfig, load_model_and_tokenizer

    target_dir = Path(out)
    if (target_dir / "attributions.json").exists():
        raise UserError(f"{target_dir} already holds attributions; choose a new --out")
    if method not in ("integrated_gradients", "grad_x_input"):
        raise UserError(f"--method {method!r}: expected integrated_gradients or grad_x_input")
    loaded, tokenizer = load_model_and_tokenizer(ModelConfig(path=model))
    loaded.eval()
    result = token_attributions(loaded, tokenizer, prompt, Scorer(target, foil), method=method,  # type: ignore[arg-type]
                                steps=steps)
    target_dir.mkdir(parents=True, exist_ok=True)
    (target_dir / "attributions.json").write_text(json.dumps(result, indent=2) + "\n")
    (target_dir / "report.html").write_text(attribution_report(result, title=f"Attributions in {model}"))
    typer.echo(f"{len(result['tokens'])} tokens attributed ({method}) -> {target_dir}")
