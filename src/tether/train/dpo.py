"""Direct preference optimisation, one trainer for the family: DPO, cDPO, robust DPO, hinge, IPO,
SimPO (reference-free), KTO (unpaired) and any other registered variant. The losses, their papers and
their knobs are in :mod:`tether.losses.preference`; this file is the loop, and it reads only what a
variant declares (whether it needs a reference, whether it takes pairs or single completions).

Each step: chosen and rejected completions of a micro-batch go through the policy in one
forward (2B rows); their sequence log-probs (sums over completion tokens, prompt masked) and
the reference's give the loss. The reference is, by ``reference.mode``:

- ``copy``: a frozen copy of the starting policy (full fine-tuning's default);
- ``adapters-off``: the policy itself with its LoRA adapters disabled (LoRA's default: no copy);
- ``none``: a reference-free variant (SimPO) needs none.

``reference.precompute`` computes every reference log-prob once before training (saved in the
run directory for resume) and frees the reference: the fastest setting, the same one TRL
offers as ``precompute_ref_log_probs``.

Logged per step: loss, implicit rewards of chosen / rejected (β · log-ratio), their margin and
accuracy (chosen reward above rejected), the policy's log-ratio to the reference on chosen
completions (a per-sequence KL estimate), grad norm, tokens/s.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import torch
from pydantic import Field, model_validator

from tether.core.config import Config
from tether.core.errors import DataError, UserError
from tether.core.recipes import output, recipe
from tether.core.registry import Kind
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.data.collate import (
    Grouped,
    PrefixBatch,
    collate_grouped,
    prefix_batch,
    prompt_groups,
    split_prompt,
    truncate,
)
from tether.data.context import context_for, with_context
from tether.data.records import PreferenceRecord, TokenizedExample, UnpairedRecord
from tether.data.sources import PreferenceData, load_records
from tether.engine.evaluation import EvalSchedule, TrainingEval
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.losses.preference import (
    PREFERENCE_LOSSES,
    PairLogps,
    PreferenceLossKind,
    knobs,
    kto_reference_point,
)
from tether.models.chat import tokenize_prompt_completion
from tether.models.loading import ModelConfig, load_model_and_tokenizer, save_model
from tether.models.logprobs import (
    grouped_completion_logps,
    grouped_prefix_logps,
    inner_model,
    prefix_sharing_supported,
    sequence_totals,
)


class ReferenceConfig(Config):
    """Where reference log-probs come from."""

    mode: Literal["auto", "copy", "adapters-off", "none"] = Field(
        "auto", description="auto: adapters-off with LoRA, copy without; none for SimPO")
    path: str | None = Field(None, description="a different model as the reference (default: the starting policy)")
    precompute: bool = Field(False, description="compute all reference log-probs before training, then free it")


class DPOConfig(Config):
    """``tether train dpo``."""

    model: ModelConfig
    data: PreferenceData
    loss: Annotated[Config, Kind(PREFERENCE_LOSSES, key="variant", default="sigmoid")] = Field(
        default_factory=lambda: PREFERENCE_LOSSES.get("sigmoid").config(),
        description="the variant and its knobs: {variant: sigmoid (DPO), robust, hinge, ipo, simpo, kto, ...; "
        "beta: ..., ...} (tether plugins list shows every variant)")
    reference: ReferenceConfig = ReferenceConfig()
    optim: OptimConfig = OptimConfig(lr=5e-6)
    loop: LoopConfig = LoopConfig()
    eval_every: int = Field(0, ge=0, description="held-out loss and accuracy every N steps; 0: only at the end")
    evaluation: TrainingEval = Field(default_factory=TrainingEval,
                                     description="evaluation harness every N steps, early stopping")
    out: str = Field("runs/dpo", description="run directory")
    seed: int = Field(0, description="seeds data order, dropout and tiny: inits")

    @property
    def variant(self) -> PreferenceLossKind:
        """The registered loss this config names."""
        return PREFERENCE_LOSSES.get(self.loss.variant)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if not self.variant.needs_reference and self.reference.mode not in ("auto", "none"):
            raise ValueError(f"reference.mode: {self.loss.variant} is reference-free; "  # type: ignore[attr-defined]
                             "leave it auto (or none)")
        if self.reference.path and self.reference.mode == "adapters-off":
            raise ValueError("reference.path names a separate model: use mode copy (or auto), not adapters-off")
        return self


class PreferenceExample(NamedTuple):
    """One training item: a pair, or (KTO) one completion with its label."""

    key: int
    completion: TokenizedExample          # the pair's chosen completion, or KTO's labelled one
    rejected: TokenizedExample | None     # the pair's rejected completion; None for KTO
    desirable: bool = True                # KTO's label
    mismatched: TokenizedExample | None = None  # KTO: this prompt with another example's completion


def load_examples(spec: str, cfg: DPOConfig, tokenizer: Any, run_dir: RunDir) -> list[PreferenceExample]:
    """Tokenized pairs (or KTO singles; preference pairs become one desirable and one undesirable)."""
    kto = cfg.variant.unpaired
    n = cfg.data.max_length
    items: list[tuple[Any, Any, Any, bool]] = []  # prompt, first completion, second completion or None, label
    records: list[Any]
    try:
        pairs = load_records(spec, PreferenceRecord, seed=cfg.seed, skip_bad=cfg.data.skip_bad)
        records, skipped = list(pairs.records), pairs.skipped
    except DataError:
        if not kto:
            raise
        singles = load_records(spec, UnpairedRecord, seed=cfg.seed, skip_bad=cfg.data.skip_bad)
        records, skipped = list(singles.records), singles.skipped
    run_dir.record_skipped(skipped)
    for index, r in enumerate(records):
        prompt = r.prompt if isinstance(r.prompt, str) else [m.model_dump() for m in r.prompt]
        if cfg.data.context is not None:
            prompt = with_context(prompt, context_for(cfg.data.context, cfg.seed, index), cfg.data.context.placement)
        if isinstance(r, PreferenceRecord):
            chosen, rejected = (x if isinstance(x, str) else [m.model_dump() for m in x] for x in (r.chosen,
                                                                                                   r.rejected))
            if kto:
                items += [(prompt, chosen, None, True), (prompt, rejected, None, False)]
            else:
                items.append((prompt, chosen, rejected, True))
        else:
            completion = r.completion if isinstance(r.completion, str) else [m.model_dump() for m in r.completion]
            items.append((prompt, completion, None, bool(r.label)))
    if not items:
        raise DataError(f"{spec}: no usable records")

    def tok(prompt: Any, completion: Any) -> TokenizedExample:
        return truncate(tokenize_prompt_completion(tokenizer, prompt, completion), n)

    examples, cut = [], 0
    for i, (prompt, first, second, label) in enumerate(items):
        # KTO's KL estimate pairs each prompt with the next item's completion (TRL cycles the same way).
        other = items[(i + 1) % len(items)][1]
        example = PreferenceExample(i, tok(prompt, first), tok(prompt, second) if second is not None else None,
                          label, tok(prompt, other) if kto else None)
        if not all(any(t.loss_mask) for t in (example.completion, example.rejected,
                                              example.mismatched) if t is not None):
            cut += 1  # the prompt fills max_length: no completion token is left to compare
            continue
        examples.append(example)
    if cut:
        run_dir.count("examples_without_completion_after_truncation", cut)
        if not examples:
            raise DataError(f"{spec}: every prompt fills data.max_length={n} tokens; raise it")
    return examples


@recipe("dpo", group="train", config=DPOConfig,
        summary="Preference optimisation: DPO, cDPO, robust, hinge, IPO, SimPO, KTO or any registered variant "
        "(loss.variant).",
        example="tether train dpo --config dpo/world --set loss.variant=ipo --out runs/ipo",
        consumes={"model": "model.path", "preferences": "data.train"}, produces={"model": output("model")})
def run(cfg: DPOConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train, write the run directory and the model (``OUT/model``); return the summary."""
    seed_everything(cfg.seed)
    run_dir = RunDir(cfg.out, command="train dpo", config=cfg, seed=cfg.seed, resume=resume)
    return run_dir.execute(lambda rd: _train(cfg, rd, resume))


class PreferenceReference:
    """Reference log-probs: from a frozen model, the policy with adapters off, a precomputed table, or none."""

    def __init__(self, cfg: DPOConfig, policy: Any, tokenizer: Any) -> None:
        mode = cfg.reference.mode
        if mode == "auto":
            mode = "none" if not cfg.variant.needs_reference else ("adapters-off" if cfg.model.lora else "copy")
        if mode == "adapters-off" and cfg.model.lora is None:
            raise UserError("reference.mode=adapters-off needs model.lora (there are no adapters to disable)")
        self.cfg, self.mode = cfg, mode
        self.model: Any = None
        if mode == "copy":
            if cfg.reference.path:
                from tether.models.loading import load_model

                self.model = load_model(cfg.model.model_copy(update={"path": cfg.reference.path, "lora": None}),
                                        tokenizer)
            else:
                self.model = copy.deepcopy(policy)
            self.model.eval().requires_grad_(False)
        self.tables: dict[str, dict[int, tuple[float, float]]] = {}

    @contextmanager
    def _model(self, policy: Any) -> Iterator[Any]:
        if self.mode == "copy":
            yield self.model
        else:  # adapters-off: the policy's base weights are the reference
            with inner_model(policy).disable_adapter():
                yield policy

    @torch.no_grad()
    def logps(self, policy: Any, grouped: Grouped) -> torch.Tensor:
        """Sequence log-probs under the reference, in the original order.  -> (S,)"""
        with self._model(policy) as model:
            was_training = model.training
            model.eval()
            out = sequence_logps(model, grouped)[0]
            model.train(was_training)
        return out

    def precompute(self, policy: Any, sets: dict[str, list[PreferenceExample]], pad_id: int, device: torch.device,
                   cache: Path, *, save: bool = True, batch_size: int = 32) -> None:
        """Reference log-probs of every example of every set (or read from ``cache``); then drop the frozen
        copy."""
        if cache.is_file():
            self.tables = torch.load(cache)
        else:
            self.tables = {}
            for name, examples in sets.items():
                table: dict[int, tuple[float, float]] = {}
                shared = shares_prompts(self.cfg, policy)
                for start in range(0, len(examples), batch_size):
                    chunk = examples[start:start + batch_size]
                    both = self.logps(policy, collate([e.completion for e in chunk] + [counterpart(e) for e in chunk],
                                                      self.cfg, pad_id, device, shared=shared)).tolist()
                    firsts, seconds = both[:len(chunk)], both[len(chunk):]
                    table.update({e.key: (a, b) for e, a, b in zip(chunk, firsts, seconds, strict=True)})
                self.tables[name] = table
            if save:  # one writer under DDP (every process computes the same tables)
                tmp = cache.with_name(cache.name + ".tmp")
                torch.save(self.tables, tmp)
                tmp.replace(cache)
        self.model = None  # freed: the tables are all the reference is needed for


def collate(sequences: list[TokenizedExample], cfg: DPOConfig, pad_id: int, device: torch.device, *,
            shared: bool = False) -> Grouped[Any]:
    """Padded length groups, or one padding-free packed row; ``shared``: whole prompt groups, each
    prompt run once for the completions that continue it (when every sequence is a prompt followed
    by its completion)."""
    if shared:
        split = [split_prompt(s) for s in sequences]
        if all(x is not None for x in split):
            prompts, completions = [x[0] for x in split if x], [x[1] for x in split if x]
            parts = prompt_groups(prompts, [len(s.input_ids) for s in sequences], cfg.data.length_groups,
                                  len(sequences))
            return Grouped([prefix_batch([prompts[i] for i in part], [completions[i] for i in part], pad_id, device)
                            for part in parts], [i for part in parts for i in part])
    return collate_grouped(sequences, pad_id=pad_id, device=device, groups=cfg.data.length_groups,
                           packing=cfg.data.packing)


def shares_prompts(cfg: DPOConfig, model: Any) -> bool:
    """Whether pairs are run prompt-shared (:func:`collate`): asked for, unpacked, and the model allows it."""
    return cfg.data.share_prompts and cfg.data.packing == "none" and prefix_sharing_supported(model)


def sequence_logps(model: Any, grouped: Grouped[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and completion lengths of every sequence, in the original order."""
    if grouped.batches and isinstance(grouped.batches[0], PrefixBatch):
        logps = grouped_prefix_logps(model, grouped.batches)
        sums = torch.cat([lp.sum(-1) for lp in logps])
        counts = torch.cat([b.completion_mask.sum(-1) for b in grouped.batches])
        return grouped.restore(sums), grouped.restore(counts)
    outs = grouped_completion_logps(model, grouped.batches)
    totals = [sequence_totals(o, b.loss_mask, b.position_ids) for o, b in zip(outs, grouped.batches, strict=True)]
    return (grouped.restore(torch.cat([t[0] for t in totals])),
            grouped.restore(torch.cat([t[1] for t in totals])))


def counterpart(example: PreferenceExample) -> TokenizedExample:
    """What is scored beside the completion: the pair's rejected completion, or KTO's mismatched one."""
    other = example.rejected if example.rejected is not None else example.mismatched
    assert other is not None
    return other


def _train(cfg: DPOConfig, run_dir: RunDir, resume: bool) -> dict[str, Any]:
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    train_set = load_examples(cfg.data.train, cfg, tokenizer, run_dir)
    eval_set = load_examples(cfg.data.eval, cfg, tokenizer, run_dir) if cfg.data.eval else []
    reference = PreferenceReference(cfg, model, tokenizer)

    loop = TrainLoop(model, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)
    schedule = loop.track(EvalSchedule(cfg.evaluation, tokenizer, run_dir))
    if resume:
        loop.resume()
    device, pad_id = loop.accelerator.device, tokenizer.pad_token_id
    if reference.model is not None:
        reference.model.to(device)
    if cfg.reference.precompute and reference.mode != "none":
        reference.precompute(loop.model, {"train": train_set, "eval": eval_set}, pad_id, device,
                             run_dir.path / "reference_logps.pt", save=run_dir.writer)

    tally: dict[str, float] = {}

    def loss_sum(batch: list[PreferenceExample]) -> torch.Tensor:
        result, tokens = compute_loss(cfg, loop.model, reference, batch, pad_id, device, split="train")
        for key, value in result.items():
            if key != "loss":
                tally[key] = tally.get(key, 0.0) + float(value)
        tally["tokens"] = tally.get("tokens", 0.0) + tokens
        return result["loss"]

    for _step, micro_batches in loop.plan(len(train_set)):
        if schedule.stopped_at is not None:  # resumed after early stopping had ended it
            break
        tally.clear()
        batches = [[train_set[i] for i in ids] for ids in micro_batches]
        stats = loop.step(batches, loss_sum, count=len, num_tokens=lambda b: sum(
            len(e.completion.input_ids) + len(counterpart(e).input_ids) for e in b))
        extra = _reduce_tally(loop, tally)
        if eval_set and cfg.eval_every and loop.step_count % cfg.eval_every == 0:
            extra |= {f"eval_{k}": v for k, v in held_out_metrics(cfg, loop.model, reference, eval_set, pad_id,
                                                                  device).items()}
        harness, stop = schedule.after_step(loop.model, loop.step_count)
        loop.log(stats, extra | harness)
        loop.maybe_checkpoint()
        if stop:
            break

    evaluation = schedule.finish(loop.model, loop.step_count)
    summary: dict[str, Any] = {"steps": loop.step_count, "tokens_seen": loop.tokens_seen, **evaluation}
    last = loop.last_metrics()
    if last:
        summary |= {k: last[k] for k in ("loss", "reward_accuracy", "reward_margin") if k in last}
    if eval_set:
        summary |= {f"eval_{k}": v for k, v in held_out_metrics(cfg, loop.model, reference, eval_set, pad_id,
                                                                device).items()}
    if loop.is_main:
        model_dir = save_model(loop.unwrapped(), tokenizer, Path(cfg.out) / "model")  # type: ignore[arg-type]
        run_dir.add_output("model", model_dir)
    loop.close()
    return summary


def _reduce_tally(loop: TrainLoop, tally: dict[str, float]) -> dict[str, float]:
    keys = sorted(k for k in tally if k not in ("pairs", "tokens"))
    values = torch.tensor([tally.get("pairs", 0.0), *[tally[k] for k in keys]], dtype=torch.float64,
                          device=loop.accelerator.device)
    if loop.accelerator.num_processes > 1:
        values = loop.accelerator.reduce(values, reduction="sum")
    pairs = max(float(values[0]), 1.0)
    return {k: round(float(v) / pairs, 6) for k, v in zip(keys, values[1:].tolist(), strict=True)}


def compute_loss(cfg: DPOConfig, policy: Any, reference: PreferenceReference, batch: list[PreferenceExample],
                 pad_id: int,
                 device: torch.device, *, split: str) -> tuple[dict[str, torch.Tensor], int]:
    """Summed loss of a micro-batch plus summed statistics (divide by ``pairs`` for means), and its token count."""
    variant = cfg.variant
    grouped = collate([e.completion for e in batch] + [counterpart(e) for e in batch], cfg, pad_id, device,
                      shared=shares_prompts(cfg, policy))
    logps, lengths = sequence_logps(policy, grouped)
    n = len(batch)
    first, second = logps[:n], logps[n:]
    first_len, second_len = lengths[:n].float(), lengths[n:].float()
    if reference.mode == "none":
        ref_first = ref_second = torch.zeros_like(first)
    elif split in reference.tables:
        ref = torch.tensor([reference.tables[split][e.key] for e in batch], dtype=first.dtype, device=device)
        ref_first, ref_second = ref[:, 0], ref[:, 1]
    else:
        ref_all = reference.logps(policy, grouped)
        ref_first, ref_second = ref_all[:n], ref_all[n:]
    stats: dict[str, torch.Tensor] = {}
    if variant.unpaired:
        # The mismatched rows only estimate z0 (no gradient flows through it).
        z0 = kto_reference_point(second.detach(), ref_second)
        desirable = torch.tensor([e.desirable for e in batch], device=device)
        result = variant.fn(first, ref_first, desirable, z0, **knobs(cfg.loss))
        stats["kl_estimate"] = z0 * n
        stats["reward_desirable"] = result.chosen_rewards.sum()
        stats["reward_undesirable"] = result.rejected_rewards.sum()
    else:
        reference_logps = (PairLogps(ref_first, ref_second, first_len, second_len) if variant.needs_reference
                           else None)
        result = variant.fn(PairLogps(first, second, first_len, second_len), reference_logps, **knobs(cfg.loss))
        margin = result.chosen_rewards - result.rejected_rewards
        stats["reward_chosen"] = result.chosen_rewards.sum()
        stats["reward_rejected"] = result.rejected_rewards.sum()
        stats["reward_margin"] = margin.sum()
        stats["reward_accuracy"] = (margin > 0).float().sum()
        stats["logratio_chosen"] = (first - ref_first).detach().sum()
    stats["pairs"] = torch.tensor(float(n))
    return {"loss": result.losses.sum(), **stats}, grouped.real_tokens()


@torch.no_grad()
def held_out_metrics(cfg: DPOConfig, policy: Any, reference: PreferenceReference, examples: list[PreferenceExample],
                     pad_id: int,
             device: torch.device, batch_size: int = 32) -> dict[str, float]:
    """Mean loss and statistics over held-out examples."""
    was_training = policy.training
    policy.eval()
    totals: dict[str, float] = {}
    for start in range(0, len(examples), batch_size):
        result, _ = compute_loss(cfg, policy, reference, examples[start:start + batch_size], pad_id, device,
                                 split="eval")
        for key, value in result.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    policy.train(was_training)
    pairs = max(totals.pop("pairs", 0.0), 1.0)
    return {k: round(v / pairs, 6) for k, v in totals.items()}
