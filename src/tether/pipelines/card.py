"""Model and system cards from a ``tether run`` directory (``tether card RUN``), generated from its records and
never typed by hand.

- **Model card** (``CARD/README.md``): a Hugging Face model card, its YAML front matter built with
  ``huggingface_hub.ModelCardData``. Its ``model-index`` holds every metric of the final model's evaluation
  and of its red-team, each value exactly as ``summary.json`` has it. The body gives each metric's interval
  and sample count.
- **System card** (``CARD/SYSTEM_CARD.md``): the safety sections. Training-data provenance (every file a
  stage's config names, with its SHA-256), every stage with its recipe and resolved config, every model's
  evaluation with intervals, red-team results by attack kind, the guards named with ``--guard`` (each with
  its calibrated threshold and its held-out figures from ``tether guard train``'s records) and their
  certified figures named with ``--verify`` (``tether verify guard``'s ``certify.json``), known failures
  (failure rates the final model shows, and metrics it is worse on than the base model with intervals that
  do not overlap), and what the run did not test.

:func:`check_card` reads the model card back through ``huggingface_hub`` (which rejects a malformed
``model-index``) and checks that every number equals the summary's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tether.core.errors import UserError

# Metrics where a higher rate is better; every other rate of the world's suite counts failures.
HIGHER_IS_BETTER = ("helpful.task_accuracy",)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON document, refused in one line naming the file and line when it is not JSON."""
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc
    return doc


def load_summary(run: str | Path) -> dict[str, Any]:
    """``RUN/summary.json``, refused in one line when ``run`` is not a finished ``tether run`` directory."""
    path = Path(run) / "summary.json"
    if not path.is_file():
        raise UserError(f"{run}: no summary.json; tether card reads a finished tether run directory")
    summary = _read_json(path)
    if not isinstance(summary.get("stages"), list) or not summary["stages"]:
        raise UserError(f"{path}: has no stages")
    return summary


def final_stages(summary: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The last evaluated stage that measured the final model, and the red-team of it (either may be None)."""
    final = summary.get("final_model")
    evaluated = [s for s in summary["stages"] if s.get("recipe") != "redteam" and "metrics" in s
                 and s.get("model") == final]
    redteam = [s for s in summary["stages"] if s.get("recipe") == "redteam" and s.get("model") == final]
    return (evaluated[-1] if evaluated else None), (redteam[-1] if redteam else None)


def _suite(stage: dict[str, Any]) -> str:
    """The suite a stage's evaluation ran (from its metrics document), or "evaluation"."""
    metrics = Path(stage.get("eval", "")) / "metrics.json"
    if metrics.is_file():
        return str(json.loads(metrics.read_text()).get("suite", "evaluation"))
    return "evaluation"


def eval_results(summary: dict[str, Any]) -> list[Any]:
    """``huggingface_hub.EvalResult``s: every metric of the final model's evaluation and red-team."""
    from huggingface_hub import EvalResult

    evaluation, redteam = final_stages(summary)
    world = summary.get("world_seed")
    results = []
    for stage, dataset in ((evaluation, None), (redteam, "tether red-team")):
        if stage is None:
            continue
        name = dataset or _suite(stage)
        for metric, rate in sorted(stage["metrics"].items()):
            results.append(EvalResult(
                task_type="text-generation", dataset_type=f"tether/{name.replace(' ', '-')}",
                dataset_name=name + (f" (world seed {world})" if world is not None else ""),
                metric_type=metric, metric_value=rate["value"], metric_name=metric,
                metric_args={"ci_low": rate.get("ci_low"), "ci_high": rate.get("ci_high"), "n": rate.get("n")},
                verified=False))
    return results


def _rate(rate: dict[str, Any]) -> str:
    low, high = rate.get("ci_low"), rate.get("ci_high")
    interval = f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
    return f"{rate['value']:.4f}{interval}"


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["| metric | value [95% interval] | n |", "|---|---|---|"]
    lines += [f"| {name} | {_rate(rate)} | {rate.get('n', '')} |" for name, rate in sorted(metrics.items())]
    return lines


def model_card_text(run: str | Path) -> str:
    """The model card's text (front matter and body) for the run in ``run``."""
    from huggingface_hub import ModelCardData

    summary = load_summary(run)
    final = str(summary.get("final_model"))
    model_name = Path(final).parent.name if Path(final).name == "model" else Path(final).name
    base = str(summary.get("base_model"))
    hub_base = base if "/" in base and not Path(base).exists() and ":" not in base else None
    data = ModelCardData(model_name=model_name, library_name="transformers", tags=["tether", "alignment"],
                         base_model=hub_base, eval_results=eval_results(summary))
    evaluation, redteam = final_stages(summary)
    stages = [s for s in summary["stages"] if s.get("recipe") not in ("base", "redteam")]
    body = [f"# {model_name}", "",
            f"Made by `tether run` from `{base}` through {len(stages)} stage(s): "
            + ", ".join(f"{s['name']} ({s['recipe']})" for s in stages) + ".",
            "Every figure below is copied from the run's `summary.json` by `tether card`; the system card "
            "(`SYSTEM_CARD.md`) has the stages' configs, data hashes, every model's evaluation and the known "
            "failures.", ""]
    if evaluation is not None:
        body += [f"## Evaluation ({_suite(evaluation)})", "", *_metrics_table(evaluation["metrics"]), ""]
    if redteam is not None:
        body += ["## Red-team (attack success rate by attack kind)", "", *_metrics_table(redteam["metrics"]), ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)


def _files_in(value: Any) -> list[str]:
    """Every string in a config that names an existing file (a dataset, a goals file, a spec)."""
    if isinstance(value, dict):
        return [f for v in value.values() for f in _files_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in _files_in(v)]
    if isinstance(value, str) and len(value) < 4096 and Path(value).is_file():
        return [value]
    return []


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def regressions(summary: dict[str, Any]) -> list[str]:
    """Metrics the final model is worse on than the base model, their intervals not overlapping."""
    evaluated = [s for s in summary["stages"] if s.get("recipe") != "redteam" and "metrics" in s]
    if len(evaluated) < 2:
        return []
    base, final = evaluated[0]["metrics"], evaluated[-1]["metrics"]
    out = []
    for name in sorted(set(base) & set(final)):
        b, f = base[name], final[name]
        if None in (b.get("ci_low"), b.get("ci_high"), f.get("ci_low"), f.get("ci_high")):
            continue
        higher_better = name.startswith(HIGHER_IS_BETTER)
        worse = f["ci_high"] < b["ci_low"] if higher_better else f["ci_low"] > b["ci_high"]
        if worse:
            out.append(f"{name}: {_rate(f)} after the last stage against {_rate(b)} for the base model")
    return out


def load_guard(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A ``tether guard train`` run (its directory, or its ``OUT/guard``) and its ``summary.json``, refused in
    one line when ``path`` is neither."""
    for run in (Path(path), Path(path).parent):
        summary = run / "summary.json"
        if summary.is_file() and (run / "guard").is_dir():
            doc = _read_json(summary)
            if "thresholds" in doc and "heldout" in doc:
                return run, doc
    raise UserError(f"{path}: not a tether guard train run (no summary.json with thresholds beside a guard/)")


def load_certificate(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``tether verify guard``'s ``certify.json`` (the file, or the directory holding it), refused in one line
    when ``path`` is neither."""
    file = Path(path) / "certify.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no certify.json; --verify takes a tether verify guard output directory")
    doc = _read_json(file)
    if not isinstance(doc.get("feature"), list) or "guard" not in doc:
        raise UserError(f"{file}: not a tether verify guard document (no guard, no feature curve)")
    return file, doc


def _pct(rate: dict[str, Any] | None) -> str:
    if not rate:
        return "-"
    return f"{100 * rate['value']:.2f}% [{100 * rate['ci_low']:.2f}, {100 * rate['ci_high']:.2f}]"


def _guard_lines(run: Path, doc: dict[str, Any]) -> list[str]:
    config = run / "config.yaml"
    target = (yaml.safe_load(config.read_text()) or {}).get("target_fpr") if config.is_file() else None
    lines = [f"### `{run / 'guard'}` ({doc.get('model')})", "",
             f"- trained on: {', '.join(map(str, doc.get('trained_on', []))) or '-'} ({doc.get('train_rows')} rows; "
             f"thresholds calibrated on {doc.get('validation_rows')} validation rows)",
             f"- decision threshold: {doc['thresholds']['decision']:.4f}"
             + (f" (validation FPR target {target})" if target is not None else ""), "",
             "| measured on | n | TPR [95% interval] | FPR [95% interval] | AUROC | TPR at 1% FPR |",
             "|---|---|---|---|---|---|"]
    for name, result in [("validation (calibrated on)", doc.get("validation")), *doc["heldout"].items()]:
        if result:
            lines.append(f"| {name} | {result['n']} | {_pct(result.get('tpr'))} | {_pct(result.get('fpr'))} | "
                         f"{result.get('auroc', '-')} | {result.get('tpr_at_1pct_fpr', '-')} |")
    if not doc["heldout"]:
        lines += ["", "Not measured on held-out data: the validation rows set its thresholds."]
    return lines + [""]


def _certificate_lines(file: Path, doc: dict[str, Any]) -> list[str]:
    def value(rate: dict[str, Any] | None) -> str:
        return "-" if rate is None else f"{rate['value']:.4f}"

    lines = [f"### Certified: `{doc['guard']}` (`{file}`)", "",
             f"{doc.get('rows')} rows ({doc.get('positives')} unsafe) of {', '.join(map(str, doc.get('data', [])))}; "
             "a certified accuracy is a lower bound, the attack's accuracy an upper one.", "",
             "| epsilon (L-inf, feature space) | clean | certified IBP | certified CROWN | under attack (PGD) |",
             "|---|---|---|---|---|"]
    lines += [f"| {p['epsilon']} | {value(p['clean'])} | {value(p['certified_ibp'])} | {value(p['certified_crown'])} "
              f"| {value(p['empirical'])} |" for p in doc["feature"]]
    if doc.get("substitution"):
        lines += ["", "| word swaps | certified | method | under attack |", "|---|---|---|---|"]
        lines += [f"| {p['budget']} | {value(p.get('certified'))} | {p.get('method') or 'not tractable'} | "
                  f"{value(p['empirical'])} |" for p in doc["substitution"]]
    exported = doc.get("exported") or {}
    if exported.get("n"):
        lines += ["", f"{exported['n']} properties exported as ONNX + VNN-LIB at epsilon {exported['epsilon']}; "
                  f"the exact check agrees with CROWN on {exported['agree']} of them."]
    return lines + [""]


def guard_section(guards: Sequence[str | Path] = (), verifications: Sequence[str | Path] = ()) -> list[str]:
    """The system card's Guards section: each guard run's threshold and measured figures, each certificate's
    curves, as their records have them."""
    lines = ["## Guards", ""]
    if not guards and not verifications:
        return [*lines, "No guards were part of this run: every figure is the model's own, unguarded.", ""]
    lines += ["Each guard as its own records measured it, on its own validation and held-out data (not on this "
              "model's traffic); `tether card --guard` and `--verify` named them.", ""]
    for path in guards:
        lines += _guard_lines(*load_guard(path))
    for path in verifications:
        lines += _certificate_lines(*load_certificate(path))
    return lines


def system_card_text(run: str | Path, guards: Sequence[str | Path] = (),
                     verifications: Sequence[str | Path] = ()) -> str:
    """The system card's text for the run in ``run``, with the guards and certificates named (paths of ``tether
    guard train`` runs and of ``tether verify guard`` outputs)."""
    summary = load_summary(run)
    run_dir = Path(run)
    lines = [f"# System card: `{run_dir.name}`", "",
             f"Generated by `tether card` from `{run_dir / 'summary.json'}` and each stage's `config.yaml`; "
             "nothing in it is typed by hand.", "",
             f"- base model: `{summary.get('base_model')}`", f"- final model: `{summary.get('final_model')}`",
             f"- world seed: {summary.get('world_seed')}", ""]

    lines += ["## Training data provenance", "", "| stage | file | SHA-256 |", "|---|---|---|"]
    configs: dict[str, Any] = {}
    for stage in summary["stages"]:
        config = run_dir / stage["name"] / "config.yaml"
        if stage.get("recipe") == "base" or not config.is_file():
            continue
        configs[stage["name"]] = yaml.safe_load(config.read_text())
        for path in sorted(set(_files_in(configs[stage["name"]]))):
            lines.append(f"| {stage['name']} | `{path}` | `{sha256(path)}` |")
    lines.append("")

    lines += ["## Stages and their configs", ""]
    for stage in summary["stages"]:
        lines += [f"### {stage['name']} ({stage['recipe']})", "",
                  f"- model: `{stage.get('model', '(unchanged)')}`", f"- seconds: {stage.get('seconds')}"]
        if stage["name"] in configs:
            lines += ["", "```yaml", yaml.safe_dump(configs[stage["name"]], sort_keys=True).rstrip(), "```"]
        lines.append("")

    lines += ["## Evaluations", ""]
    for stage in summary["stages"]:
        if stage.get("recipe") == "redteam" or "metrics" not in stage:
            continue
        lines += [f"### {stage['name']} ({_suite(stage)})", "", *_metrics_table(stage["metrics"]), ""]

    _, redteam = final_stages(summary)
    lines += ["## Red-team results by attack kind", ""]
    lines += (_metrics_table(redteam["metrics"]) if redteam is not None
              else ["The final model was not red-teamed in this run."])
    lines += ["", *guard_section(guards, verifications)]

    evaluation, _ = final_stages(summary)
    lines += ["## Known limitations and failures", ""]
    if evaluation is not None:
        failing = [f"{name}: {_rate(rate)}" for name, rate in sorted(evaluation["metrics"].items())
                   if not name.startswith(HIGHER_IS_BETTER) and not name.startswith("format.truncated")
                   and rate["value"] > 0]
        lines += ["Failure rates above zero in the final model's evaluation:", ""]
        lines += [f"- {x}" for x in failing] or ["- none"]
        lines.append("")
    worse = regressions(summary)
    lines += ["Metrics the final model is worse on than the base model (intervals apart):", ""]
    lines += [f"- {x}" for x in worse] or ["- none"]

    lines += ["", "## What was not tested", ""]
    untested = []
    if evaluation is None:
        untested.append("the final model was not evaluated")
    elif not any(name.endswith("heldout") or ".heldout" in name for name in evaluation["metrics"]):
        untested.append("no held-out prompts: every figure is on the distribution the evaluation was drawn from")
    if redteam is None:
        untested.append("no red-team of the final model")
    untested.append("guards measured on their own data, not in front of this model on its traffic (see Guards)"
                    if guards or verifications else "no guards in front of the model (see Guards)")
    if summary.get("world_seed") is not None:
        untested.append("the evaluation and red-team use the embedded world's prompts and gold grader, not real "
                        "users' traffic")
    lines += [f"- {x}" for x in untested]
    return "\n".join(lines) + "\n"


def check_card(card: str | Path, run: str | Path) -> int:
    """Read the model card back with ``huggingface_hub`` and check that every number in its ``model-index`` is the
    summary's, and that every metric of the final evaluation and red-team is there. Returns how many it checked.

    Raises:
        UserError: a number differs, a metric is missing, or the card does not parse.
    """
    from huggingface_hub import ModelCard

    try:
        parsed = ModelCard(Path(card).read_text())
    except Exception as exc:  # huggingface_hub raises ValueError and others for a malformed card
        raise UserError(f"{card}: not a valid model card ({exc})") from exc
    summary = load_summary(run)
    expected = {(r.dataset_type, r.metric_type): r.metric_value for r in eval_results(summary)}
    found = {(r.dataset_type, r.metric_type): r.metric_value for r in getattr(parsed.data, "eval_results", None) or []}
    if found != expected:
        missing = sorted(set(expected) - set(found))
        differ = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise UserError(f"{card}: model-index differs from {Path(run) / 'summary.json'} "
                        f"(missing {missing[:3]}, different {differ[:3]})")
    return len(found)


def write_cards(run: str | Path, out: str | Path | None = None, guards: Sequence[str | Path] = (),
                verifications: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Write ``README.md`` (model card) and ``SYSTEM_CARD.md`` into ``out`` (default ``RUN/card``), check the model
    card, and return the paths and the number of metrics checked. ``guards`` and ``verifications`` (``tether guard
    train`` runs, ``tether verify guard`` outputs) go into the system card's Guards section."""
    target = Path(out) if out is not None else Path(run) / "card"
    # Both texts first: a bad --guard or --verify is refused before anything is written.
    model, system = model_card_text(run), system_card_text(run, guards, verifications)
    target.mkdir(parents=True, exist_ok=True)
    (target / "README.md").write_text(model)
    (target / "SYSTEM_CARD.md").write_text(system)
    checked = check_card(target / "README.md", run)
    return {"model_card": str(target / "README.md"), "system_card": str(target / "SYSTEM_CARD.md"),
            "metrics_checked": checked}
