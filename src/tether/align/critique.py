"""Critique -> revise against a constitution (Bai et al. 2022, the supervised stage of constitutional AI).

For every prompt: the policy answers; then, for each of ``rounds`` rounds, a principle is drawn
from the constitution, the critic critiques the latest answer against it and rewrites it. Out
of it come (``OUT/``):

- ``revisions.jsonl``: one row per prompt: the prompt and its metadata, the first response,
  every round (principle, critique, revision) and the final revision; appended chunk by chunk,
  so a killed run resumes where it stopped (``--resume``) and draws what it would have drawn;
- ``sft.jsonl``: ``{"messages": prompt + final revision}`` (SFT on revisions);
- ``pairs.jsonl``: ``{"prompt", "chosen": revision, "rejected": first response}`` where they
  differ (preference data for the RM and DPO recipes).

Policy and critic may be one model (the paper's set-up, and the world's: the base model's own
weak critique ability) or two. Every sample has its own seed (prompt index, stage, round), so the
result does not depend on chunking or batch size. Where prompts carry the world's metadata the
summary adds the gold reward of the first responses and of the revisions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from tether.align.constitution import (
    Constitution,
    Messages,
    as_messages,
    critique_messages,
    load_constitution,
    revision_messages,
)
from tether.core.config import Config
from tether.core.progress import progress_bar
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.io import write_jsonl
from tether.data.sources import PromptData, load_prompts
from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.loading import ModelConfig, load_model_and_tokenizer


def _response_settings() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64)


def _critic_settings() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=48, temperature=1.0, batch_size=64)


class CritiqueConfig(Config):
    """``tether align critique``."""

    model: ModelConfig = Field(description="the policy: writes the first responses")
    critic: ModelConfig | None = Field(None, description="critiques and revises; default: the policy itself")
    constitution: str = Field("hhh", description="shipped name (tether config list: constitutions/...) or YAML file")
    data: PromptData
    limit: int | None = Field(None, ge=1, description="use the first N prompts only")
    rounds: int = Field(1, ge=1, description="critique -> revise rounds per prompt (each draws a principle)")
    generation: GenerationSettings = Field(default_factory=_response_settings, description="first responses")
    critic_generation: GenerationSettings = Field(default_factory=_critic_settings,
                                                  description="critiques and revisions")
    chunk_prompts: int = Field(256, ge=1, description="prompts done between appends to revisions.jsonl")
    out: str = Field("runs/critique", description="output directory")
    seed: int = Field(0, description="seeds principle draws and sampling")


def sample_seed(seed: int, index: int, stage: str, round_: int = 0) -> int:
    """The seed of one sample: fixed by (run seed, prompt index, stage, round) alone."""
    return random.Random(f"{seed}:{index}:{stage}:{round_}").randrange(2**31)


@recipe("critique", group="align", config=CritiqueConfig,
        summary="Critique -> revise against a constitution: revisions.jsonl, sft.jsonl, pairs.jsonl.",
        example="tether align critique --config critique/world --out runs/critique",
        consumes={"model": "model.path", "prompts": "data.train"},
        produces={"demonstrations": output("sft.jsonl"), "preferences": output("pairs.jsonl")})
def run(cfg: CritiqueConfig, *, resume: bool = False) -> dict[str, Any]:
    """Write revisions, SFT data and pairs under ``cfg.out``; return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="align critique", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _run(cfg, rd))


def _run(cfg: CritiqueConfig, run_dir: RunDir) -> dict[str, Any]:
    constitution = load_constitution(cfg.constitution)
    prompts = load_prompts(cfg.data, cfg.seed, run_dir)[: cfg.limit]
    policy = HFGenerator(*load_model_and_tokenizer(cfg.model))
    critic = HFGenerator(*load_model_and_tokenizer(cfg.critic)) if cfg.critic is not None else policy
    out = Path(cfg.out)
    rows_path = out / "revisions.jsonl"
    done = {row["index"] for row in read_rows(rows_path)}
    todo = [i for i in range(len(prompts)) if i not in done]
    with progress_bar("critique -> revise", len(prompts), completed=len(done)) as bar:
        for start in range(0, len(todo), cfg.chunk_prompts):
            chunk = todo[start:start + cfg.chunk_prompts]
            rows = critique_and_revise(cfg, constitution, policy, critic, chunk, [prompts[i] for i in chunk])
            with rows_path.open("a") as fh:  # appended and flushed per chunk: a kill loses one chunk at most
                fh.writelines(json.dumps(row) + "\n" for row in rows)
            bar.advance(len(chunk))
    rows = sorted(read_rows(rows_path), key=lambda r: r["index"])
    summary = write_outputs(rows, out, run_dir)
    summary |= gold_summary(rows, cfg.critic_generation.max_new_tokens)
    return summary


def critique_and_revise(cfg: CritiqueConfig, constitution: Constitution, policy: HFGenerator, critic: HFGenerator,
                        indices: Sequence[int], records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chunk: first responses, then ``cfg.rounds`` critique -> revise rounds; one row per prompt."""
    prompts = [as_messages(r["prompt"]) for r in records]
    first = _generate(policy, prompts, cfg.generation, [sample_seed(cfg.seed, i, "response") for i in indices])
    latest = list(first)
    rounds: list[list[dict[str, Any]]] = [[] for _ in records]
    for round_ in range(cfg.rounds):
        principles = [constitution.sample(random.Random(sample_seed(cfg.seed, i, "principle", round_)))
                      for i in indices]
        critiques = _generate(critic, [critique_messages(constitution, p, m, r)
                                       for p, m, r in zip(principles, prompts, latest, strict=True)],
                              cfg.critic_generation, [sample_seed(cfg.seed, i, "critique", round_) for i in indices])
        revisions = _generate(critic, [revision_messages(constitution, p, m, r, c)
                                       for p, m, r, c in zip(principles, prompts, latest, critiques, strict=True)],
                              cfg.critic_generation, [sample_seed(cfg.seed, i, "revision", round_) for i in indices])
        for k, (p, c, rev) in enumerate(zip(principles, critiques, revisions, strict=True)):
            # An empty revision (the critic stopped at once) keeps the answer it was asked to revise.
            rounds[k].append({"principle": p.name, "critique": c, "revision": rev, "empty": not rev.strip()})
            if rev.strip():
                latest[k] = rev
    return [{**{k: v for k, v in record.items() if k != "prompt"}, "index": i, "prompt": prompt,
             "response": response, "rounds": rs, "revision": final}
            for i, record, prompt, response, rs, final
            in zip(indices, records, prompts, first, rounds, latest, strict=True)]


def _generate(generator: HFGenerator, prompts: list[Messages], settings: GenerationSettings,
              seeds: list[int]) -> list[str]:
    if settings.backend != "sampler":  # hf-generate has no per-row streams: one stream per call
        return [c.text.strip() for c in generator.generate(prompts, settings.model_copy(update={"seed": seeds[0]}))]
    return [c.text.strip() for c in generator.generate(prompts, settings, seeds=seeds)]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows appended so far (none if the file does not exist yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_outputs(rows: list[dict[str, Any]], out: Path, run_dir: RunDir) -> dict[str, Any]:
    """``sft.jsonl`` and ``pairs.jsonl`` from the revision rows; counts for the summary."""
    meta = ("id", "family", "split", "gold", "tags")
    sft = [{"messages": [*r["prompt"], {"role": "assistant", "content": r["revision"]}],
            **{k: r[k] for k in meta if k in r}} for r in rows if r["revision"].strip()]
    pairs = [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["revision"]}],
              "rejected": [{"role": "assistant", "content": r["response"]}],
              "principles": [x["principle"] for x in r["rounds"]], **{k: r[k] for k in meta if k in r}}
             for r in rows if r["revision"].strip() and r["revision"] != r["response"]]
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "pairs.jsonl", pairs)
    for name in ("revisions", "sft", "pairs"):
        run_dir.add_output(name, out / f"{name}.jsonl")
    rounds = [x for r in rows for x in r["rounds"]]
    return {"prompts": len(rows), "sft_rows": len(sft), "pairs": len(pairs),
            "changed": round(len(pairs) / max(len(rows), 1), 4),
            "empty_revisions": sum(x["empty"] for x in rounds),
            "principles": {name: sum(x["principle"] == name for x in rounds)
                           for name in sorted({x["principle"] for x in rounds})}}


def gold_summary(rows: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    """Mean gold reward of first responses and of revisions, where prompts carry the world's metadata."""
    if not rows or not all("family" in r and "gold" in r for r in rows):
        return {}
    from tether.scoring.rewards import Rewards, reward_config

    gold = Rewards([reward_config({"kind": "world-gold"})], max_tokens=max_tokens)
    prompts, zeros = [r["prompt"] for r in rows], [0] * len(rows)
    before = gold(prompts, [r["response"] for r in rows], zeros, rows)[0].tolist()
    after = gold(prompts, [r["revision"] for r in rows], zeros, rows)[0].tolist()
    n = len(rows)
    return {"gold_response": round(sum(before) / n, 4), "gold_revision": round(sum(after) / n, 4),
            "revision_better": round(sum(a > b for a, b in zip(after, before, strict=True)) / n, 4),
            "revision_worse": round(sum(a < b for a, b in zip(after, before, strict=True)) / n, 4)}
