"""Deliberative alignment (Guan et al. 2024), ``tether align deliberative``: teach a model to reason over a written
spec before it answers, then train it with a judge that sees the spec.

1. **Data** (``OUT/data``, :mod:`tether.align.deliberative`): for each prompt, the clause of the spec that governs
   it; answers written with the spec in context (``answers: sampled``), or the prompt's own demonstration
   (``answers: given``: demonstrations a user already has, given the reasoning they lacked); a reasoning block
   citing the clause (or, ``mode: free``, the model's own reasoning); the spec-aware judge keeps the best
   answer per prompt. ``sft.jsonl``: the prompt *without* the spec, the reasoning block and the answer.
2. **SFT** (``OUT/sft``) on those rows: the model learns to recall the clause itself.
3. **RL** (``OUT/rl``, optional) with the ``spec-judge`` reward: GRPO on the same prompts, each completion's
   answer (not its reasoning) scored by the judge against the clause that governs its prompt.

Each stage is a recipe run in its own directory (``--resume`` skips the finished ones). The model the recipe
produces writes a reasoning block before its answer: evaluate it with ``reasoning`` set (``tether eval --set
reasoning.close=</think>``), so that the answer alone is graded.

``tether experiment deliberative-vs-standard`` measures it on the world against standard SFT -> DPO at the same
optimizer-step budget.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tether.align.deliberative import DeliberationSettings
from tether.core.config import Config, load_config
from tether.core.recipes import RECIPES, output, recipe
from tether.core.runs import RunDir, run_stage
from tether.models.loading import ModelConfig
from tether.pipelines.stages import Stage


def world_sft() -> Stage:
    """SFT on the world's config, without the in-training evaluation (the pipelines evaluate at the end)."""
    return Stage(config="sft/world", set=["evaluation.every=0"])


def _world_rl() -> Stage:
    return Stage(config="grpo/world-spec")


class DeliberativeConfig(Config):
    """``tether align deliberative``."""

    model: ModelConfig = Field(description="the model that writes the answers and is trained")
    spec: str = Field("world", description="the spec: shipped name (tether/configs/specs), YAML or Markdown file")
    prompts: str = Field(description="prompt records (JSONL or builtin:NAME; a category in metadata picks the "
                         "clause), or with answers: given, demonstrations (SFT records)")
    answers: Literal["sampled", "given"] = Field("sampled", description="sampled: the model writes them with the spec "
                                                 "in context; given: each demonstration's last assistant turn")
    judge: str | None = Field(None, description="the spec-aware judge model (default: model.path)")
    limit: int | None = Field(None, ge=1, description="the first N prompts only")
    deliberation: DeliberationSettings = Field(default_factory=DeliberationSettings)
    chunk_prompts: int = Field(128, ge=1, description="prompts deliberated between appends to deliberation.jsonl")
    sft: Stage = Field(default_factory=world_sft, description="the SFT stage's config and overrides")
    sft_steps: int = Field(60, ge=1)
    rl: Stage | None = Field(default_factory=_world_rl, description="the RL stage's GRPO config (its rewards are "
                             "replaced by the spec judge); null: no RL stage")
    rl_steps: int = Field(60, ge=1)
    rl_prompts: str | None = Field(None, description="the RL stage's prompt records (default: the data stage's "
                                   "prompts, without their answers)")
    out: str = Field("runs/deliberative", description="run directory")
    seed: int = 0


def _show(cfg: DeliberativeConfig, summary: dict[str, Any]) -> list[str]:
    data = summary["data"]
    return [f"kept {data['kept']} of {data['prompts']} prompts ({data['kept_rate']:.1%})",
            f"model: {summary['model']}"]


@recipe("deliberative", group="align", config=DeliberativeConfig,
        summary="Deliberative alignment: replies that reason over a written spec, made with the spec in context and "
        "kept by a spec-aware judge, trained without it (SFT), then RL with the judge.",
        example="tether align deliberative --config deliberative/world --out runs/deliberative",
        consumes={"model": "model.path", "prompts": "prompts"}, produces={"model": output("model")}, show=_show)
def run(cfg: DeliberativeConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the three stages; return the summary (the data's counts, each stage's summary)."""
    run_dir = RunDir(cfg.out, command="align deliberative", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _stages(cfg, rd))


def _stages(cfg: DeliberativeConfig, rd: RunDir) -> dict[str, Any]:
    out = Path(cfg.out)
    data = deliberation_data(cfg, out / "data", rd)
    sft_recipe = RECIPES.get("sft")
    sft = run_stage(load_config(sft_recipe.config, cfg.sft.config, [
        *cfg.sft.set, f"model.path={cfg.model.path}", f"data.train={out / 'data' / 'sft.jsonl'}",
        f"loop.max_steps={cfg.sft_steps}", f"seed={cfg.seed}", f"out={out / 'sft'}"]), sft_recipe.run)
    stages: dict[str, Any] = {"sft": sft}
    model = out / "sft" / "model"
    if cfg.rl is not None:
        d = cfg.deliberation
        reward = {"kind": "spec-judge", "spec": cfg.spec, "judge": cfg.judge or cfg.model.path,
                  "category_key": d.category_key, "reasoning": d.reasoning.model_dump(), "details": d.details,
                  "citation": d.citation, "template": d.judge.model_dump()}
        grpo = RECIPES.get("grpo")
        stages["rl"] = run_stage(load_config(grpo.config, cfg.rl.config, [
            *cfg.rl.set, f"model.path={model}", f"data.train={cfg.rl_prompts or _prompt_file(cfg, out)}",
            f"rewards={json.dumps([reward])}", f"loop.max_steps={cfg.rl_steps}", f"seed={cfg.seed}",
            f"out={out / 'rl'}"]), grpo.run)
        model = out / "rl" / "model"
    rd.add_output("model", model)
    return {"data": data, "stages": stages, "model": str(model)}


def _prompt_file(cfg: DeliberativeConfig, out: Path) -> str:
    """The RL stage's prompts: the data stage's, without their answers."""
    path = out / "data" / "prompts.jsonl"
    if not path.is_file():
        from tether.data.io import write_jsonl

        rows = [json.loads(x) for x in (out / "data" / "deliberation.jsonl").read_text().splitlines() if x.strip()]
        write_jsonl(path, [{"prompt": r["prompt"], **r["meta"]} for r in rows])
    return str(path)


def _rows(cfg: DeliberativeConfig, rd: RunDir) -> list[dict[str, Any]]:
    """Prompt rows (``prompt`` plus metadata; with answers: given, the demonstration under ``given``)."""
    from tether.core.errors import DataError
    from tether.data.records import PromptRecord, SFTRecord
    from tether.data.sources import load_records

    if cfg.answers == "sampled":
        prompts = load_records(cfg.prompts, PromptRecord, seed=cfg.seed)
        rows = [r.model_dump(mode="json") for r in prompts.records]
        skipped = prompts.skipped
    else:
        demos = load_records(cfg.prompts, SFTRecord, seed=cfg.seed)
        skipped = demos.skipped
        rows = []
        for record in demos.records:
            prompt, reply = record.prompt_and_reply()
            if not isinstance(reply, str):
                raise DataError(f"{cfg.prompts}: answers: given needs single-reply demonstrations, got a multi-turn "
                                "completion")
            meta = {k: v for k, v in record.model_dump(mode="json").items()
                    if k not in ("messages", "prompt", "completion")}
            rows.append({"prompt": prompt, "given": reply, **meta})
    rd.record_skipped(skipped)
    if not rows:
        raise DataError(f"{cfg.prompts}: no usable rows")
    return rows[: cfg.limit]


def deliberation_data(cfg: DeliberativeConfig, out: Path, rd: RunDir) -> dict[str, Any]:
    """Stage 1: deliberate over every prompt (resumable: appended in chunks to ``deliberation.jsonl``), then write
    ``sft.jsonl`` (the kept rows) and return the counts."""
    from tether.align.deliberative import SpecJudge, deliberate, training_row
    from tether.align.spec import load_spec
    from tether.data.io import write_jsonl
    from tether.models.loading import load_model_and_tokenizer

    spec = load_spec(cfg.spec)
    rows = _rows(cfg, rd)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "deliberation.jsonl"
    done = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    if len(done) < len(rows):
        model, tokenizer = load_model_and_tokenizer(cfg.model)
        judge_model, judge_tok = ((model, tokenizer) if cfg.judge in (None, cfg.model.path)
                                  else load_model_and_tokenizer(ModelConfig(path=cfg.judge)))
        judge = SpecJudge(judge_model, judge_tok, cfg.deliberation.judge, batch_size=cfg.deliberation.batch_size)
        with path.open("a") as fh:
            for start in range(len(done), len(rows), cfg.chunk_prompts):
                chunk = rows[start:start + cfg.chunk_prompts]
                given = [r["given"] for r in chunk] if cfg.answers == "given" else None
                results = deliberate(model, tokenizer, judge, spec, chunk, cfg.deliberation, seed=cfg.seed,
                                     indices=range(start, start + len(chunk)), given=given)
                for row, d in zip(chunk, results, strict=True):
                    fh.write(json.dumps({"prompt": row["prompt"],
                                         "meta": {k: v for k, v in row.items() if k not in ("prompt", "given")},
                                         "clause": d.clause, "clause_source": d.clause_source,
                                         "model_clause": d.model_clause, "candidates": d.candidates,
                                         "kept": d.kept}) + "\n")
                fh.flush()
        done = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    from tether.align.deliberative import Deliberation

    kept = []
    for r in done:
        d = Deliberation(r["clause"], r["clause_source"], r["model_clause"], r["candidates"], r["kept"])
        made = training_row({"prompt": r["prompt"], **r["meta"]}, d, cfg.deliberation.reasoning)
        if made is not None:
            kept.append(made)
    if not kept:
        from tether.core.errors import DataError

        raise DataError(f"{path}: the judge kept no reply (min_score {cfg.deliberation.min_score}); "
                        "nothing to train on")
    write_jsonl(out / "sft.jsonl", kept, only_if_changed=True)
    rd.add_output("deliberation", path)
    rd.add_output("sft_data", out / "sft.jsonl")
    return data_summary(done, len(kept))


def data_summary(done: list[dict[str, Any]], kept: int) -> dict[str, Any]:
    """Counts of the data stage: prompts, kept, per clause, how often the model's own clause choice matched the
    category's, and how many sampled replies had a closed, non-empty reasoning block."""
    labelled = [r for r in done if r["clause_source"] == "category"]
    candidates = [c for r in done for c in r["candidates"]]
    return {"prompts": len(done), "kept": kept, "kept_rate": round(kept / max(len(done), 1), 4),
            "kept_by_clause": dict(Counter(r["clause"] for r in done if r["kept"] is not None)),
            "clause_from_category": len(labelled),
            "model_clause_agreement": (round(sum(r["model_clause"] == r["clause"] for r in labelled) / len(labelled), 4)
                                       if labelled else None),
            "candidates": len(candidates),
            "reasoned_candidates": sum(bool(c["closed"] and c["reasoning"] and c["answer"]) for c in candidates)}

