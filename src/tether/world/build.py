"""Build the world's base model: corpus -> tokenizer -> packed, document-isolated rows -> pretraining.

The result is an ordinary HF model directory (Llama, a byte-level BPE ``tokenizers``
tokenizer, the ChatML chat template) that plain ``AutoModelForCausalLM`` loads. It is cached
under ``$TETHER_CACHE`` (default ``~/.cache/tether``) keyed by world version, world config and
model size, and reused by every later command. An interrupted build resumes from its last
checkpoint when run again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from pydantic import Field, field_validator

from tether.core.config import Config, dump_config
from tether.core.recipes import CONFIG_KINDS
from tether.core.registry import Registry
from tether.core.runs import RunDir
from tether.core.seeding import seed_everything
from tether.engine.loop import LoopConfig, OptimConfig, TrainLoop
from tether.world.corpus import corpus_documents
from tether.world.spec import WORLD_VERSION, WorldConfig, build_world


class BaseModelSpec(Config):
    """Architecture and pretraining budget of the base model."""

    hidden_size: int = Field(128, ge=16)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary learned from the corpus")
    seq_len: int = Field(256, ge=32, description="tokens per packed row (whole documents, isolated)")
    steps: int = Field(660, ge=1, description="optimizer steps (the small build: 660 x 12 rows, about 0.85 of "
                       "the world's 50,000 documents)")
    batch_size: int = Field(12, ge=1, description="packed rows per step")
    lr: float = Field(1e-2, gt=0)
    warmup_steps: int = Field(40, ge=0)
    corpus_documents: int = Field(50_000, ge=100, description="documents of the world's corpus to pretrain on")
    pack_window: int = Field(16, ge=1, description="rows open at once while packing documents, first fit: 16 "
                             "fills the world's rows to 97% where 1 (one row at a time) leaves 11.5% padding; "
                             "more documents per step, so fewer steps for the same data")
    reading_fraction: float = Field(0.0, ge=0, le=1, description="share of the pretraining documents that are "
                                    "reading lessons: a passage of fresh lands, then a question answered from it "
                                    "(tether.world.reading.reading_document). The default corpus has none, and "
                                    "its models cannot read a fact out of their prompt")


SIZES: Registry[BaseModelSpec] = Registry(
    "world size", description="a base model's architecture and pretraining budget, by name")
# A smoke build for tests: seconds, learns formats only.
SIZES.register("tiny")(BaseModelSpec(hidden_size=64, layers=2, heads=2, vocab_size=512, seq_len=128, steps=40,
                                     batch_size=16, corpus_documents=2_000, warmup_steps=5, lr=3e-3))
# A weaker model of the same world, for weak supervisors (weak-to-strong, weak judges): half the width,
# half the depth, the same corpus and steps.
SIZES.register("mini")(BaseModelSpec(hidden_size=64, layers=2, heads=2, vocab_size=1024))
# The default: about a million parameters, a few minutes on a 2-core CPU.
SIZES.register("small")(BaseModelSpec())
# For a GPU: more world, more model.
SIZES.register("medium")(BaseModelSpec(hidden_size=384, layers=8, heads=6, vocab_size=4096, steps=3000,
                                       batch_size=64, lr=1e-3, warmup_steps=100, corpus_documents=400_000))
SIZES.register("large")(BaseModelSpec(hidden_size=768, layers=12, heads=12, vocab_size=8192, seq_len=512,
                                      steps=10000, batch_size=64, lr=6e-4, warmup_steps=300,
                                      corpus_documents=2_000_000))


@CONFIG_KINDS.register("world")
class WorldBuildConfig(Config):
    """``tether world build``."""

    world: WorldConfig = WorldConfig()
    size: str = Field("small", description="a registered size: tiny, small (default), medium, large")
    model: BaseModelSpec | None = Field(None, description="override the size preset entirely")
    device: Literal["auto", "cpu"] = Field("auto", description="'auto' uses a GPU when there is one (or what "
                                           "`accelerate launch` set up); 'cpu' forces the CPU")
    precision: Literal["fp32", "bf16"] = "fp32"
    threads: int = Field(2, ge=1, description="CPU threads while pretraining on the CPU. Fixed, not the machine's "
                         "count, because a reduction split over more threads sums in another order: the same seed "
                         "then gives other weights. With it fixed, a seed gives the same model bit for bit on "
                         "machines of the same CPU family and torch build")

    @field_validator("size")
    @classmethod
    def _known_size(cls, value: str) -> str:
        if value not in SIZES:
            raise ValueError(f"unknown size {value!r}; known: {', '.join(SIZES.names())}")
        return value

    def spec(self) -> BaseModelSpec:
        """The model spec in force: the explicit one, else the size preset."""
        return self.model or SIZES.get(self.size)

    def cache_key(self) -> str:
        """Names this build's cache entry: version, seed, size and a hash of everything."""
        import hashlib

        spec = self.spec()
        # A spec without reading lessons hashes as it did before the field existed: the stated builds keep
        # their keys.
        spec_json = spec.model_dump_json(exclude={"reading_fraction"} if not spec.reading_fraction else None)
        payload = f"{WORLD_VERSION}:{self.world.model_dump_json()}:{spec_json}:{self.precision}:{self.threads}"
        return f"v{WORLD_VERSION}-seed{self.world.seed}-{self.size}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def cache_root() -> Path:
    """``$TETHER_CACHE``, else ``$XDG_CACHE_HOME/tether``, else ``~/.cache/tether``."""
    if os.environ.get("TETHER_CACHE"):
        return Path(os.environ["TETHER_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tether"


def build_dir(cfg: WorldBuildConfig) -> Path:
    """Where this build lives in the cache."""
    return cache_root() / "world" / cfg.cache_key()


def model_dir(cfg: WorldBuildConfig) -> Path:
    """The finished base model directory (exists once the build is done)."""
    return build_dir(cfg) / "model"


def is_built(cfg: WorldBuildConfig) -> bool:
    """True when the cache holds a finished model for ``cfg``."""
    return (model_dir(cfg) / "config.json").is_file() and (build_dir(cfg) / "world.json").is_file()


def build_base_model(cfg: WorldBuildConfig, *, force: bool = False) -> dict[str, Any]:
    """Build (or reuse) the base model for ``cfg``; returns a summary with its path and timings."""
    root = build_dir(cfg)
    if is_built(cfg) and not force:
        summary = json.loads((root / "world.json").read_text())
        return {**summary, "cached": True}
    if force and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _build(cfg, root)
    finally:
        torch.set_num_threads(threads)


def _build(cfg: WorldBuildConfig, root: Path) -> dict[str, Any]:
    spec = cfg.spec()
    started = time.perf_counter()
    seed_everything(cfg.world.seed)

    world = build_world(cfg.world)
    documents = list(corpus_documents(world, spec.corpus_documents, reading_fraction=spec.reading_fraction))
    (root / "corpus.txt.sample").write_text("\n".join(documents[:200]))
    corpus_seconds = time.perf_counter() - started

    from tether.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(documents, vocab_size=spec.vocab_size)
    rows = pack_documents(tokenizer, documents, spec.seq_len, window=spec.pack_window)
    tokenize_seconds = time.perf_counter() - started - corpus_seconds

    model = _init_model(spec, tokenizer, cfg.world.seed)
    run_dir = root / "pretrain"
    resume = (run_dir / "record.json").is_file()
    run = RunDir(run_dir, command="world build", config=cfg, seed=cfg.world.seed, resume=resume)
    loop_cfg = LoopConfig(max_steps=spec.steps, batch_size=spec.batch_size, precision=cfg.precision,
                          log_every=10, checkpoint_every=max(1, spec.steps // 4), keep_checkpoints=1)
    optim = OptimConfig(lr=spec.lr, warmup_steps=spec.warmup_steps, weight_decay=0.01, schedule="cosine")
    loop = TrainLoop(model, optim, loop_cfg, run, seed=cfg.world.seed, cpu=cfg.device == "cpu")
    if resume:
        loop.resume()
    device = loop.accelerator.device

    from tether.models.logprobs import completion_logps

    def loss_sum(batch: PackedRows) -> torch.Tensor:
        return -completion_logps(loop.model, batch.input_ids, batch.loss_mask.long(), batch.loss_mask,
                                 position_ids=batch.position_ids).sequence_logps.sum()

    def scored(batch: PackedRows) -> int:
        return int((batch.loss_mask & (batch.position_ids > 0)).sum())

    stats = None
    for _step, micro_batches in loop.plan(len(rows.input_ids)):
        batches = [PackedRows(*(t[ids].to(device) for t in rows)) for ids in micro_batches]
        stats = loop.step(batches, loss_sum, count=scored, num_tokens=lambda b: int(b.loss_mask.sum()))
        loop.log(stats)
        loop.maybe_checkpoint()
    train_seconds = time.perf_counter() - started - corpus_seconds - tokenize_seconds

    from tether.models.loading import save_model

    save_model(loop.unwrapped(), tokenizer, root / "model")  # type: ignore[arg-type]
    (root / "world_config.yaml").write_text(dump_config(cfg))
    summary = {
        "model": str(root / "model"), "world_version": WORLD_VERSION, "seed": cfg.world.seed, "size": cfg.size,
        "parameters": sum(p.numel() for p in model.parameters()), "documents": len(documents),
        "tokens": int(rows.loss_mask.sum()), "steps": spec.steps, "final_loss": stats.loss if stats else None,
        "seconds": {"corpus": round(corpus_seconds, 1), "tokenize": round(tokenize_seconds, 1),
                    "train": round(train_seconds, 1), "total": round(time.perf_counter() - started, 1)},
    }
    summary["fingerprint"] = fingerprint(documents, root / "model")
    # The weights depend on the CPU and kernels that built them: recorded here, where they were made, so a
    # result collected on another machine (or with other kernels) still names its build's.
    from tether.core.runs import machine

    summary["built_on"] = {k: v for k, v in machine().items() if k in ("cpu", "cores", "cpu_capability")}
    run.add_output("model", root / "model")
    run.finish(summary=summary)
    (root / "world.json").write_text(json.dumps(summary, indent=2))
    return {**summary, "cached": False}


def fingerprint(documents: list[str], model_path: Path) -> dict[str, str]:
    """Short hashes of what a build made: its corpus, its tokenizer and its base-model weights.

    Two builds with the same fingerprint are the same world and the same model, bit for bit;
    ``tether world build --check`` compares a build's with the one the docs state.
    """
    import hashlib

    from safetensors.torch import load_file

    corpus = hashlib.sha256("\x00".join(documents).encode()).hexdigest()[:16]
    tokenizer = json.loads((model_path / "tokenizer.json").read_text())["model"]
    vocab = hashlib.sha256(json.dumps(tokenizer, sort_keys=True).encode()).hexdigest()[:16]
    weights = hashlib.sha256()
    tensors = load_file(str(model_path / "model.safetensors"))
    for name in sorted(tensors):
        weights.update(name.encode())
        weights.update(tensors[name].contiguous().numpy().tobytes())
    return {"corpus": corpus, "tokenizer": vocab, "weights": weights.hexdigest()[:16]}


FINGERPRINTS = Path(__file__).with_name("fingerprints.json")


def stated_fingerprint(cfg: WorldBuildConfig) -> dict[str, Any] | None:
    """The fingerprint the docs state for this build (``world/fingerprints.json``), or None."""
    stated = json.loads(FINGERPRINTS.read_text())
    return stated.get(cfg.cache_key())


def same_kernels(stated: dict[str, Any]) -> tuple[str, str]:
    """This machine's CPU and vector kernels, and the stated build's, as ``"CPU (KERNELS)"`` strings: the
    weights are only expected to match bit for bit where the two are equal. The kernels alone do not
    decide it: two AVX-512 machines from different vendors (or with different caches) block their
    matrix products differently and built different weights from the same seed."""
    from tether.core.runs import machine

    found = machine()
    return (f"{found['cpu']} ({found['cpu_capability']})",
            f"{stated.get('cpu', 'an unnamed CPU')} ({stated['cpu_capability']})")


def check_fingerprint(cfg: WorldBuildConfig, summary: dict[str, Any]) -> list[str]:
    """What differs between this build and the stated one: [] when it is the same build, bit for bit.

    Raises:
        UserError: no fingerprint is stated for this configuration.
    """
    from tether.core.errors import UserError

    stated = stated_fingerprint(cfg)
    if stated is None:
        raise UserError(f"no fingerprint is stated for the build {cfg.cache_key()} (seed {cfg.world.seed}, size "
                        f"{cfg.size}); {FINGERPRINTS.name} states: {', '.join(json.loads(FINGERPRINTS.read_text()))}")

    found = summary.get("fingerprint") or {}
    problems = [f"{part}: built {found.get(part)}, stated {stated[part]}" for part in ("corpus", "tokenizer", "weights")
                if found.get(part) != stated[part]]
    here, there = same_kernels(stated)
    if problems and problems[-1].startswith("weights") and here != there:
        problems[-1] += (f" (stated for {there}, this machine is {here}: other CPU kernels sum in another order, "
                         "so the weights differ in the last bits)")
    return problems


class PackedRows(NamedTuple):
    """Whole documents packed into fixed-length rows, each attending only to itself."""

    input_ids: torch.Tensor     # (N, L)
    position_ids: torch.Tensor  # (N, L) restart at 0 at every document (and at the tail padding)
    loss_mask: torch.Tensor     # (N, L) false on tail padding


def _encode_unpadded(backend: Any, documents: list[str]) -> list[list[int]]:
    """Each document's ids, whole: the Rust tokenizer keeps the padding and truncation of the last
    ``tokenizer(..., padding=True, truncation=True)`` call, which would pad and cut documents here."""
    padding, truncation = backend.padding, backend.truncation
    backend.no_padding()
    backend.no_truncation()
    try:
        return [e.ids for e in backend.encode_batch_fast(documents, add_special_tokens=False)]
    finally:
        if padding is not None:
            backend.enable_padding(**padding)
        if truncation is not None:
            backend.enable_truncation(**truncation)


def pack_documents(tokenizer: Any, documents: list[str], seq_len: int, *, window: int = 16) -> PackedRows:
    """Pack whole documents (each ending in ``<|endoftext|>``) into rows of ``seq_len`` tokens.

    Attention is isolated per document (see ``completion_logps(position_ids=...)``). That matters
    here: with plain packing a document's context holds the end of unrelated documents,
    including other documents' character preambles, so "a preamble is in view" stops predicting
    good behaviour and the model cannot learn the character it is meant to carry.

    Each document goes into the first of the last ``window`` open rows it fits in (first fit over a
    sliding window), else opens a row; the oldest open row is closed when the window is full. With
    the world's documents (45 tokens on average in rows of 256) ``window=16`` fills rows to 97.4%
    where ``window=1`` (one row at a time) leaves 11.5% padding, and a row still only holds
    documents that were near each other in the (already random) corpus, so batches stay i.i.d.
    Fuller rows mean fewer steps for the same documents (the small build: 720 steps where window 1
    needed 800). The unused tail of a row is padding.
    """
    separator = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    pad = tokenizer.pad_token_id
    # The Rust tokenizer's batch encoding without offsets: the same ids as ``tokenizer(documents)``
    # at a third of the time (no Python objects per token for offsets and attention masks).
    encoded = _encode_unpadded(tokenizer.backend_tokenizer, documents)
    rows: list[tuple[list[int], list[int], list[bool]]] = []
    open_rows: list[tuple[list[int], list[int]]] = []
    for doc in encoded:
        doc = doc[: seq_len - 1] + [separator]
        row = next((r for r in open_rows if len(r[0]) + len(doc) <= seq_len), None)
        if row is None:
            if len(open_rows) == window:
                rows.append(_close_row(*open_rows.pop(0), seq_len, pad))
            row = ([], [])
            open_rows.append(row)
        row[0].extend(doc)
        row[1].extend(range(len(doc)))
    rows.extend(_close_row(ids, pos, seq_len, pad) for ids, pos in open_rows)
    import numpy as np

    # Through numpy: torch.tensor on nested lists is ~5x slower at this size.
    return PackedRows(*(torch.from_numpy(np.array([r[i] for r in rows], dtype=dtype)) for i, dtype in
                        ((0, np.int64), (1, np.int64), (2, np.bool_))))


def _close_row(ids: list[int], pos: list[int], seq_len: int, pad: int) -> tuple[list[int], list[int], list[bool]]:
    tail = seq_len - len(ids)
    return ids + [pad] * tail, pos + list(range(tail)), [True] * len(ids) + [False] * tail


def _init_model(spec: BaseModelSpec, tokenizer: Any, seed: int) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "llama", vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=4 * spec.hidden_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=max(1024, spec.seq_len), tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
