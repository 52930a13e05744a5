"""A finished ``tether eval`` run as an Inspect AI evaluation log (``inspect view`` opens it).

Inspect (UK AISI's evaluation framework) is what much of the field reads evaluation logs with. The
log is built with ``inspect_ai``'s own classes and written with its ``write_eval_log`` (the
optional extra ``tether[inspect]``), so the file is what Inspect itself would write: each sample
with its input messages, the model's reply, every tether scorer's verdict as an Inspect score
(the label as the value; the yes/no answer, status and explanation in its metadata) and the
suite's outcomes in the sample's metadata; every tether metric as one of the results' metrics, its
95% interval and count in the metric's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.core.errors import UserError
from tether.core.runs import RunRecord


def inspect_log(run_dir: Path) -> Any:
    """The Inspect ``EvalLog`` of the eval run in ``run_dir`` (its metrics.json, samples.jsonl and record).

    Raises:
        UserError: ``inspect_ai`` is not installed, or ``run_dir`` holds no finished eval run.
    """
    try:
        from inspect_ai.log import (
            EvalConfig,
            EvalDataset,
            EvalLog,
            EvalMetric,
            EvalResults,
            EvalSample,
            EvalScore,
            EvalSpec,
            EvalStats,
        )
        from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser, ModelOutput
        from inspect_ai.scorer import Score
    except ImportError:
        raise UserError("Inspect logs need the inspect-ai package: pip install 'tether[inspect]'") from None
    metrics_path, samples_path = run_dir / "metrics.json", run_dir / "samples.jsonl"
    record = RunRecord.read(run_dir)
    if record is None or record.status != "finished" or not metrics_path.is_file() or not samples_path.is_file():
        raise UserError(f"{run_dir}: not a finished tether eval run (metrics.json, samples.jsonl, record.json)")
    doc = json.loads(metrics_path.read_text())
    rows = [json.loads(line) for line in samples_path.read_text().splitlines() if line.strip()]
    model = f"tether/{doc['model']}"
    roles = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}

    def messages(prompt: Any) -> list[Any]:
        if isinstance(prompt, str):
            return [ChatMessageUser(content=prompt)]
        return [roles[m["role"]](content=m["content"]) for m in prompt]

    samples = []
    for row in rows:
        asked = messages(row["prompt"])
        output = ModelOutput.from_content(model=model, content=row["response"])
        scores = {name: Score(value=s["label"], explanation=s.get("explanation"),
                              metadata={"flag": s["flag"], "status": s["status"],
                                        **({"value": s["value"]} if "value" in s else {})})
                  for name, s in row["scores"].items()}
        samples.append(EvalSample(
            id=row["id"] if doc["samples_per_prompt"] == 1 else f"{row['id']}#{row['sample_index']}",
            epoch=row["sample_index"] + 1, input=asked, target=str(row["meta"].get("answer", "")),
            messages=[*asked, output.message], output=output, scores=scores,
            metadata={"tether_meta": row["meta"], "outcomes": row["outcomes"]}))
    results = EvalResults(
        total_samples=len(samples), completed_samples=len(samples),
        scores=[EvalScore(name="tether", scorer="tether", scored_samples=len(samples), metrics={
            name: EvalMetric(name=name, value=m["value"],
                             metadata={"ci_low": m["ci_low"], "ci_high": m["ci_high"], "n": m["n"]})
            for name, m in doc["metrics"].items()})])
    spec = EvalSpec(created=record.started_at, task=f"tether/{doc['suite']}", task_id=f"tether-{run_dir.name}",
                    run_id=f"tether-{run_dir.name}-{record.started_at}", model=model,
                    dataset=EvalDataset(name=doc["suite"], samples=doc["n_prompts"]),
                    config=EvalConfig(epochs=doc["samples_per_prompt"]),
                    metadata={"tether": {"generation": doc["generation"], "scorers": doc["scorers"],
                                         "interval": doc["interval"]}})
    return EvalLog(status="success", eval=spec, results=results, samples=samples,
                   stats=EvalStats(started_at=record.started_at, completed_at=record.finished_at or ""))


def write_inspect_log(run_dir: Path, out: Path) -> Path:
    """Write :func:`inspect_log` of ``run_dir`` to ``out`` (``.json``, or Inspect's zipped ``.eval``)."""
    from inspect_ai.log import write_eval_log

    if out.suffix not in (".json", ".eval"):
        raise UserError(f"{out}: an Inspect log is a .json or .eval file")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_eval_log(inspect_log(run_dir), str(out))
    return out
