"""Loop mechanics every training recipe uses.

A recipe owns its loop and calls these pieces in order::

    loop = TrainLoop(model, cfg.optim, cfg.loop, run_dir, seed=cfg.seed)   # accelerator, optimizer, schedule
    schedule = loop.track(EvalSchedule(cfg.evaluation, tokenizer, run_dir))  # state saved with checkpoints
    if resume:
        loop.resume()                                                      # weights, optimizer, tracked state
    for step, micro_batches in loop.plan(len(dataset)):                    # indices, resumed mid-epoch
        stats = loop.step([collate(ids) for ids in micro_batches], loss_sum, count=...)
        loop.log(stats, extra)                                             # metrics.jsonl + progress
        loop.maybe_checkpoint()

Distribution runs on accelerate: each process takes its share of every global batch, and gradients are
scaled so that the update is the same as one process computing the whole global batch. Data-parallel
runs (``torchrun`` / ``accelerate launch``, DDP) are tested against one process; FSDP and DeepSpeed
configurations of accelerate are not tested.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.progress import progress_bar
from tether.core.runs import RunDir

B = TypeVar("B")
T = TypeVar("T")


class _TiedWeightsNotice(logging.Filter):
    """Drop accelerate's notice that tied embeddings are saved once: expected for tied models, and
    resume restoring them exactly is tested (tests/recipes/test_world_build.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsNotice())


class OptimConfig(Config):
    """AdamW with a warm-up and a decay schedule."""

    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (AdamW)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's moment decay rates")
    eps: float = Field(1e-8, gt=0, description="Adam's epsilon")
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="decay after warm-up")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps from 0 to lr")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global gradient norm; null: no clipping")


class LoopConfig(Config):
    """Steps, batches, precision, logging and checkpoints."""

    max_steps: int = Field(100, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="global batch: examples per optimizer step, all processes")
    grad_accum: int = Field(1, ge=1, description="micro-batches each process splits its share into")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 runs the forward under autocast")
    log_every: int = Field(1, ge=1, description="write metrics every N steps")
    checkpoint_every: int = Field(0, ge=0, description="save resumable state every N steps; 0: never")
    keep_checkpoints: int = Field(2, ge=1, description="how many of the newest checkpoints to keep")


@dataclass
class StepStats:
    """What one optimizer step did."""

    loss: float
    grad_norm: float
    lr: float
    items: int       # examples (sequences or pairs) in the global batch
    tokens: int      # tokens processed (forward) across processes
    seconds: float


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The global batch of ``step``: a slice of a per-epoch permutation seeded by (seed, epoch).

    Depends only on its arguments, so a resumed run draws exactly the batches the
    uninterrupted run would have drawn. Epochs wrap; a batch never spans two epochs'
    permutations partially out of order (the tail of an epoch is followed by the next's head).
    """
    out: list[int] = []
    position = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, num_examples)
        order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = min(batch_size - len(out), num_examples - offset)
        out += order[offset:offset + take].tolist()
        position += take
    return out


def split_for_process(indices: Sequence[int], rank: int, world_size: int, grad_accum: int) -> list[list[int]]:
    """This process's micro-batches of a global batch: a contiguous share, cut into ``grad_accum`` pieces."""
    share = len(indices) // world_size
    mine = list(indices[rank * share:(rank + 1) * share])
    size = math.ceil(len(mine) / grad_accum)
    return [mine[i:i + size] for i in range(0, len(mine), size)]


class TrainLoop:
    """Accelerator, optimizer, schedule and step counter of one training run."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig, loop: LoopConfig, run: RunDir,
                 *, seed: int, cpu: bool = False) -> None:
        from accelerate import Accelerator

        self.cfg = loop
        self.optim_cfg = optim
        self.run = run
        self.seed = seed
        # Precision is applied by our own autocast (see ``step``), not by Accelerator(mixed_precision=...):
        # accelerate's state is a process-wide singleton that refuses a second, different setting,
        # and pipelines run several recipes in one process. ``accelerate launch`` settings still apply.
        # accelerate runs several CPU processes (gloo) only when told to use the CPU; a torchrun launch
        # on a machine without a GPU is exactly that, so say so rather than train each rank alone.
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.accelerator = Accelerator(cpu=cpu or (distributed and not torch.cuda.is_available()))
        if distributed and self.accelerator.num_processes == 1:
            raise RuntimeError("launched as several processes but accelerate sees one: check the launcher's "
                               "environment (WORLD_SIZE, RANK, MASTER_ADDR)")
        if loop.batch_size % self.accelerator.num_processes:
            from tether.core.errors import UserError

            raise UserError(f"loop.batch_size={loop.batch_size} is not divisible by "
                            f"{self.accelerator.num_processes} processes")
        from tether.models.logprobs import LogpsModule

        model = LogpsModule(model)  # log-probs computed inside the (distributed) forward
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                      weight_decay=optim.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # The schedule is stepped by us, once per optimizer step: accelerate's wrapper would
        # step it once per process and change the schedule with the process count.
        self.scheduler = _schedule(optimizer, optim, loop.max_steps)
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.step_count = 0
        self.tokens_seen = 0
        self._bar: Any = None
        self._tick = time.perf_counter()
        self._last: dict[str, Any] = {}

    def track(self, obj: T) -> T:
        """Save ``obj``'s ``state_dict()`` in every checkpoint and restore it in :meth:`resume` (early
        stopping, a watchdog, an adaptive coefficient: state a resumed run must not start afresh).
        Call before :meth:`resume`, in the same order on every run (checkpoints keep them by position)."""
        self.accelerator.register_for_checkpointing(obj)
        return obj

    @property
    def is_main(self) -> bool:
        """True on the process that writes files."""
        return bool(self.accelerator.is_main_process)

    def resume(self) -> int:
        """Load the newest complete checkpoint, if any; returns the step it ends at (0 if none)."""
        latest = latest_checkpoint(self.run.checkpoints)
        if latest is None:
            return 0
        self.accelerator.load_state(str(latest))
        state = json.loads((latest / "loop.json").read_text())
        self.step_count, self.tokens_seen = state["step"], state["tokens_seen"]
        if self.is_main:
            self.run.truncate_metrics(self.step_count)
        return self.step_count

    def plan(self, num_examples: int) -> Iterator[tuple[int, list[list[int]]]]:
        """(step, this process's micro-batches of example indices) from the current step to the end."""
        acc = self.accelerator
        with progress_bar("train", self.cfg.max_steps, completed=self.step_count) as bar:
            self._bar = bar
            self._tick = time.perf_counter()
            for step in range(self.step_count, self.cfg.max_steps):
                indices = batch_indices(num_examples, self.cfg.batch_size, step, self.seed)
                yield step, split_for_process(indices, acc.process_index, acc.num_processes, self.cfg.grad_accum)

    def step(self, micro_batches: Sequence[B], loss_sum: Callable[[B], torch.Tensor],
             count: Callable[[B], int], num_tokens: Callable[[B], int] = lambda b: 0) -> StepStats:
        """One optimizer step over this process's micro-batches.

        Args:
            micro_batches: collated micro-batches of this process.
            loss_sum: the *summed* (not averaged) loss of a micro-batch.
            count: how many units (tokens, pairs) the micro-batch's loss sums over.
            num_tokens: tokens a micro-batch processes, for throughput.

        The update uses ``sum of losses / total count over all micro-batches and processes``:
        the loss a single process would compute on the whole global batch, however it is
        split (the gradient-accumulation normalisation bug some trainers had).
        """
        acc = self.accelerator
        started = time.perf_counter()
        local = torch.tensor([sum(count(b) for b in micro_batches)], dtype=torch.float64, device=acc.device)
        total = float(acc.reduce(local, reduction="sum").item()) if acc.num_processes > 1 else float(local.item())
        # DDP averages gradients over processes, so scale each process's sum by world size.
        scale = acc.num_processes / max(total, 1.0)
        self.model.train()
        loss_total = 0.0
        for i, batch in enumerate(micro_batches):
            sync = nullcontext() if i == len(micro_batches) - 1 else acc.no_sync(self.model)
            with sync, torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16"):
                loss = loss_sum(batch)
                acc.backward(loss * scale)
            loss_total += float(loss.detach())
        grad_norm = self._clip()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        tokens = torch.tensor([sum(num_tokens(b) for b in micro_batches)], device=acc.device)
        loss_t = torch.tensor([loss_total], dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            tokens = acc.reduce(tokens, reduction="sum")
            loss_t = acc.reduce(loss_t, reduction="sum")
        self.tokens_seen += int(tokens.item())
        return StepStats(
            loss=float(loss_t.item()) / max(total, 1.0), grad_norm=grad_norm,
            lr=float(self.scheduler.get_last_lr()[0]), items=self.cfg.batch_size, tokens=int(tokens.item()),
            seconds=time.perf_counter() - started,
        )

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = self.optim_cfg.max_grad_norm if self.optim_cfg.max_grad_norm is not None else float("inf")
        norm = self.accelerator.clip_grad_norm_(params, max_norm)
        return float(norm) if norm is not None else float("nan")

    def log(self, stats: StepStats, extra: dict[str, float] | None = None) -> dict[str, Any]:
        """Write the step's metrics (every ``log_every`` steps and the last) and advance the bar."""
        metrics: dict[str, Any] = {
            "step": self.step_count, "loss": round(stats.loss, 6), "lr": stats.lr,
            "grad_norm": round(stats.grad_norm, 6), "tokens_per_s": round(stats.tokens / max(stats.seconds, 1e-9), 1),
            "tokens_seen": self.tokens_seen, **(extra or {}),
        }
        # Wall-clock since the previous step ended: everything a step costs (collation, logging, evals).
        now = time.perf_counter()
        metrics["step_wall_s"] = round(now - self._tick, 6)
        self._tick = now
        metrics["memory_mib"] = round(_memory_mib(self.accelerator.device), 1)
        self._last = metrics
        last = self.step_count == self.cfg.max_steps
        if self.is_main and (self.step_count % self.cfg.log_every == 0 or last):
            self.run.log_metrics(metrics)
        if self._bar is not None:
            self._bar.advance(1, loss=stats.loss)
        return metrics

    def last_metrics(self) -> dict[str, Any]:
        """The metrics of the last step, on every process (logged or not).

        Recipes build their summaries from this, never by reading ``metrics.jsonl`` back: under
        several processes the main one may still be writing it. A resumed run with no steps left
        falls back to the file's last line (nothing is writing it then).
        """
        if self._last:
            return self._last
        logged = self.run.read_log()
        return logged[-1] if logged else {}

    def maybe_checkpoint(self) -> Path | None:
        """Save resumable state every ``checkpoint_every`` steps (never at 0)."""
        every = self.cfg.checkpoint_every
        if every and self.step_count % every == 0:
            return self.save_checkpoint()
        return None

    def save_checkpoint(self) -> Path:
        """Model, optimizer, schedule, RNG states and loop counters, written atomically."""
        final = self.run.checkpoints / f"step-{self.step_count:08d}"
        tmp = final.with_name(final.name + ".tmp")
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        if self.is_main:
            (tmp / "loop.json").write_text(json.dumps({"step": self.step_count, "tokens_seen": self.tokens_seen}))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            for old in sorted(self.run.checkpoints.glob("step-*[0-9]"))[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old)
        self.accelerator.wait_for_everyone()
        return final

    def close(self) -> None:
        """Wait for every process at the end of training (the main one saves the model meanwhile).

        Without it a process that finishes first exits while the others still use the process
        group, and the launcher sees it abort. The CLI tears the group down before exiting.
        """
        self.accelerator.wait_for_everyone()

    def unwrapped(self) -> torch.nn.Module:
        """The HF model without accelerate's or tether's wrappers (for saving)."""
        from tether.models.logprobs import inner_model

        return inner_model(self.accelerator.unwrap_model(self.model))  # type: ignore[no-any-return]


def _memory_mib(device: torch.device) -> float:
    """This step's peak allocated memory on a GPU (the peak is reset), the process's resident size on a CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return peak
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint in ``directory`` (half-written ``.tmp`` ones are ignored)."""
    done = sorted(p for p in directory.glob("step-*[0-9]") if (p / "loop.json").is_file())
    return done[-1] if done else None


def _schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
              max_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=max_steps)
