"""What every editing method shares: the config sections, the workbench a method edits with, and the run
loop of ``tether edit rome|memit|alphaedit``.

Two modes (``mode``):

- ``independent``: each request is applied to the original model on its own, judged, and undone (the
  edited matrices are copied back bit for bit, and the method's state is rebuilt), so no edit sees another;
- ``sequential``: the requests are applied ``batch`` at a time to one model, cumulatively; after every
  batch the run re-checks capability (token NLL on held texts against the original's), the edits made so far
  (do they still hold?) and every request's neighbours. The edited model is saved to ``OUT/model``.

Locality is always judged against the original model's continuations, computed before the first edit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import DataError
from tether.core.runs import RunDir
from tether.edit.model import Projection, Row, Token, ValueSearch, second_moment, subject_row
from tether.edit.requests import EditRequest
from tether.models.loading import ModelConfig


class StatisticsConfig(Config):
    """Ordinary text: the keys' second moment (what edits must leave alone) and the capability check."""

    data: str = Field("builtin:world-corpus", description="JSONL of rows with 'text' (or 'messages', rendered with "
                      "the chat template), or builtin:NAME")
    texts: int = Field(1000, ge=1, description="texts the second moment is measured on")
    capability_texts: int = Field(100, ge=0, description="further texts (after those) whose token NLL is the "
                                  "capability check; 0: none")
    max_tokens: int = Field(256, ge=8, description="tokens kept per text")


class EditConfig(Config):
    """What ``tether edit rome``, ``memit`` and ``alphaedit`` share."""

    model: ModelConfig = Field(description="the model to edit")
    requests: str = Field(description="JSONL of edit requests (subject, prompt, target, ...), or builtin:NAME")
    limit: int | None = Field(None, ge=1, description="edit only the first N requests")
    layers: list[int] = Field([1], min_length=1, description="decoder layers whose MLP output projection is "
                              "rewritten (ROME: exactly one)")
    mode: Literal["independent", "sequential"] = Field(
        "sequential", description="independent: each edit on the original model alone, then undone; sequential: "
        "edits accumulate, `batch` at a time, the edited model is saved")
    batch: int = Field(1, ge=1, description="sequential: edits per step; capability is re-checked after each")
    token: Token = Field("subject", description="where the key is read and the value written: 'subject' (the "
                         "subject's last token, as ROME and MEMIT do) or 'last' (the prompt's last token: for models "
                         "that recall the fact there; check with a few edits which one moves the target)")
    contexts: int = Field(5, ge=0, description="prefixes the model writes itself, put before the rewrite prompt "
                          "so the edit holds in context (the unprefixed prompt is always used too)")
    context_tokens: int = Field(10, ge=1, description="tokens per context prefix")
    essence: str | None = Field("{} is a", description="prompt whose next-token distribution the value search "
                                "keeps close to the original's (KL), with {} for the subject; null: none")
    search: ValueSearch = ValueSearch()
    statistics: StatisticsConfig = StatisticsConfig()
    slack: int = Field(4, ge=0, description="tokens generated beyond the target's length when judging the rewrite "
                       "prompt and the neighbours")
    paraphrase_tokens: int = Field(24, ge=1, description="tokens generated for each paraphrase (an answer in chat "
                                   "may restate the question before the target)")
    seed: int = 0
    out: str = Field("runs/edit", description="run directory")


@dataclass
class Workbench:
    """A model under edit, with what methods need around it: context prefixes, the value search settings and
    each layer's key second moment (measured on first use)."""

    model: Any
    tokenizer: Any
    prefixes: list[str]
    essence: str | None
    search: ValueSearch
    token: Token
    texts: list[str]
    max_tokens: int
    moments: dict[int, torch.Tensor] = field(default_factory=dict)

    def rows(self, request: EditRequest) -> list[Row]:
        """The rewrite prompt after each prefix (the first: none), followed by the target."""
        return [subject_row(self.tokenizer, request.prompt, request.subject, prefix=p, target=request.target,
                            token=self.token) for p in self.prefixes]

    def essence_rows(self, request: EditRequest) -> list[Row]:
        """The essence prompt for the request's subject (none without an essence template)."""
        return [] if self.essence is None else [subject_row(self.tokenizer, self.essence, request.subject,
                                                                    token=self.token)]

    def second_moment(self, proj: Projection) -> torch.Tensor:
        """``E[k kᵀ]`` of ``proj``'s keys over the statistics texts, measured once per layer on the original
        model (methods ask before their first update)."""
        if proj.layer not in self.moments:
            self.moments.update(second_moment(self.model, self.tokenizer, [proj], self.texts,
                                              max_tokens=self.max_tokens))
        return self.moments[proj.layer]


class Method(Protocol):
    """An editing method bound to a workbench: ``apply`` rewrites the model for a batch of requests and
    returns each request's final value-search loss (the target's NLL)."""

    projections: list[Projection]

    def apply(self, requests: Sequence[EditRequest]) -> list[float]:
        """Edit the model for ``requests``."""
        ...


def read_texts(spec: str, count: int, tokenizer: Any, *, seed: int) -> list[str]:
    """The first ``count`` texts of ``spec`` (rows with ``text`` or ``messages``).

    Raises:
        DataError: a row with neither, naming the file and line.
    """
    from tether.data.io import jsonl_objects
    from tether.data.sources import DATASET_SOURCES
    from tether.models.chat import render

    if spec.startswith("builtin:"):
        source = DATASET_SOURCES.get(spec.removeprefix("builtin:"))
        rows: Any = ((f"{spec}[{i}]", r) for i, r in enumerate(source(seed)))
    else:
        rows = jsonl_objects(spec)
    texts: list[str] = []
    for where, row in rows:
        if len(texts) >= count:
            break
        if isinstance(row.get("text"), str):
            texts.append(row["text"])
        elif isinstance(row.get("messages"), list):
            texts.append(render(tokenizer, row["messages"], add_generation_prompt=False))
        else:
            raise DataError(f"{where}: expected 'text' (a string) or 'messages' (a list)")
    return texts


def context_prefixes(model: Any, tokenizer: Any, count: int, tokens: int, seed: int) -> list[str]:
    """``""`` and ``count`` short texts the model writes itself from common openings (ROME's context
    templates), each ending ``". "``."""
    from tether.models.chat import encode_text

    openings = ("The", "Therefore", "Because", "I", "You")
    prefixes = [""]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for i in range(count):
            ids = torch.tensor([encode_text(tokenizer, openings[i % len(openings)])], device=device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=5,
                                 max_new_tokens=tokens, pad_token_id=tokenizer.pad_token_id
                                 if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
            text = tokenizer.decode(out[0], skip_special_tokens=True).replace("{", "(").replace("}", ")")
            prefixes.append(text.strip() + ". ")
    return prefixes


def token_nll(model: Any, tokenizer: Any, texts: Sequence[str], max_tokens: int) -> float:
    """Mean next-token NLL over every token of ``texts`` (nan without texts): the capability check."""
    from tether.models.chat import encode_text

    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for text in texts:
            ids = encode_text(tokenizer, text)[:max_tokens]
            if len(ids) < 2:
                continue
            logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:], device=device),
                                                             reduction="sum"))
            count += len(ids) - 1
    return total / count if count else float("nan")


def run_edits(cfg: EditConfig, build: Callable[[Workbench], Method], *, command: str,
              resume: bool = False) -> dict[str, Any]:
    """Run ``command`` (``edit rome``, ...): load, edit with ``build(workbench)``'s method, judge, write
    ``edits.jsonl`` (per request, before and after) and ``edit.json`` (the summary)."""
    run_dir = RunDir(cfg.out, command=command, config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _edit(cfg, build, rd))


def _edit(cfg: EditConfig, build: Callable[[Workbench], Method], rd: RunDir) -> dict[str, Any]:
    from tether.core.seeding import seed_everything
    from tether.data.sources import load_records
    from tether.edit.evaluate import judge, reference, summarise
    from tether.models.loading import load_model_and_tokenizer, save_model

    seed_everything(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    model.eval()
    requests = load_records(cfg.requests, EditRequest, seed=cfg.seed).records[: cfg.limit]
    if not requests:
        raise DataError(f"{cfg.requests}: no edit requests")
    stats = cfg.statistics
    texts = read_texts(stats.data, stats.texts + stats.capability_texts, tokenizer, seed=cfg.seed)
    bench = Workbench(model, tokenizer, context_prefixes(model, tokenizer, cfg.contexts, cfg.context_tokens, cfg.seed),
                      cfg.essence, cfg.search, cfg.token, texts[: stats.texts], stats.max_tokens)
    held = texts[stats.texts:]
    method = build(bench)  # refuses a layer it cannot edit before any work
    for proj in method.projections:
        bench.second_moment(proj)
    ids = [r.id or str(i) for i, r in enumerate(requests)]
    expected = reference(model, tokenizer, requests, cfg.slack)

    def judged(edited: Set[str] = frozenset()) -> list[dict[str, Any]]:
        return [judge(model, tokenizer, r, e, cfg.slack, cfg.paraphrase_tokens, edited)
                for r, e in zip(requests, expected, strict=True)]

    before = judged()
    nll_before = token_nll(model, tokenizer, held, stats.max_tokens)
    started = time.perf_counter()
    after: list[dict[str, Any]] = []
    losses: list[float] = []
    checks: list[dict[str, Any]] = []
    if cfg.mode == "independent":
        originals = [p.module.weight.detach().clone() for p in method.projections]
        for request, exp in zip(requests, expected, strict=True):
            method = build(bench)  # a fresh method: no state (AlphaEdit's earlier keys) carried over
            losses.extend(method.apply([request]))
            after.append(judge(model, tokenizer, request, exp, cfg.slack, cfg.paraphrase_tokens))
            with torch.no_grad():
                for p, w in zip(method.projections, originals, strict=True):
                    p.module.weight.copy_(w)
        restored = all(torch.equal(p.module.weight, w) for p, w in zip(method.projections, originals, strict=True))
    else:
        baseline = all_neighbours(model, tokenizer, requests, cfg.slack)
        for start in range(0, len(requests), cfg.batch):
            losses.extend(method.apply(requests[start: start + cfg.batch]))
            done = start + len(requests[start: start + cfg.batch])
            checks.append(_check(model, tokenizer, requests, baseline, done, held, cfg))
            rd.log_metrics({"step": done, **{k: v for k, v in checks[-1].items() if k != "edits"}})
        after = judged({r.prompt.format(r.subject) for r in requests})
        save_model(model, tokenizer, Path(cfg.out) / "model")
        rd.add_output("model", Path(cfg.out) / "model")
        restored = None
    seconds = time.perf_counter() - started
    with (Path(cfg.out) / "edits.jsonl").open("w") as f:
        for i, request, b, a, loss in zip(ids, requests, before, after, losses, strict=True):
            f.write(json.dumps({"id": i, "subject": request.subject, "target": request.target,
                                "search_loss": round(loss, 4), "before": b, "after": a}) + "\n")
    summary = {
        "method": rd.record.command.removeprefix("edit "), "mode": cfg.mode, "batch": cfg.batch,
        "layers": [p.layer for p in method.projections], "requests": len(requests),
        "before": summarise(before), "after": summarise(after),
        "capability": {"token_nll_before": round(nll_before, 4), "checks": checks,
                       "token_nll_after": round(token_nll(model, tokenizer, held, stats.max_tokens), 4)},
        "seconds_editing": round(seconds, 2), "weights_restored": restored,
    }
    (Path(cfg.out) / "edit.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check(model: Any, tokenizer: Any, requests: Sequence[EditRequest], expected: Sequence[Sequence[int]],
           done: int, held: Sequence[str], cfg: EditConfig) -> dict[str, Any]:
    """Capability and retention after ``done`` sequential edits: held-text NLL, how many of the edits made so
    far still hold, and how many neighbours of every request keep the original continuation (``expected``:
    :func:`all_neighbours` on the original model)."""
    from tether.edit.evaluate import budget, continuations, kept, starts_with

    made = requests[:done]
    said = continuations(model, tokenizer, [r.prompt.format(r.subject) for r in made],
                         max(budget(tokenizer, r, cfg.slack) for r in made))
    now = all_neighbours(model, tokenizer, requests, cfg.slack)
    edited = {r.prompt.format(r.subject) for r in made}
    # (span, counted): a neighbour that is the rewrite prompt of an edit made is meant to change
    spans = [(budget(tokenizer, r, 1), n not in edited) for r in requests for n in r.neighbours]
    holding = sum(starts_with(s, r.target) for s, r in zip(said, made, strict=True))
    held_neighbours = sum(kept(a, b, span) for a, b, (span, counted) in zip(now, expected, spans, strict=True)
                          if counted)
    counted = sum(c for _, c in spans)
    return {"edits": done, "efficacy_so_far": round(holding / done, 4),
            "neighbourhood_kept": round(held_neighbours / counted, 4) if counted else None,
            "neighbours_counted": counted,
            "token_nll": round(token_nll(model, tokenizer, held, cfg.statistics.max_tokens), 4)}


def all_neighbours(model: Any, tokenizer: Any, requests: Sequence[EditRequest], slack: int) -> list[list[int]]:
    """Every request's neighbours continued in one pass (the longest request's budget): the same batches on
    the original and the edited model, so their continuations compare token for token."""
    from tether.edit.evaluate import budget, continuation_ids

    prompts = [n for r in requests for n in r.neighbours]
    if not prompts:
        return []
    return continuation_ids(model, tokenizer, prompts, max(budget(tokenizer, r, slack) for r in requests))
