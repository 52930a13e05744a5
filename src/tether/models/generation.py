"""Batched generation behind one interface: the ``Generator`` protocol.

Two in-process backends:
- ``sampler`` (default): tether's own loop over the KV cache: left padding, positions from
  the attention mask, temperature / top-k / top-p, stop strings and EOS, a seeded
  ``torch.Generator``, per-token log-probs of the sampled tokens. Faster than
  ``model.generate`` on small models where per-step overhead dominates (see bench/generation.py).
  ``decoding`` picks its cache: on a CUDA device a static cache whose decode step is replayed
  from a CUDA graph (tether.models.static_decode), elsewhere the dynamic cache.
- ``hf-generate``: ``transformers``' ``model.generate``, for architectures or features the
  sampler does not cover.

And one out of process for RL rollouts: ``vllm`` (tether.models.vllm_backend), built with
:func:`build_generator`.

Log-probs convention: ``Completion.logprobs[i]`` is log p(token_i | context) under the
model's *raw* distribution (temperature 1, no top-k/top-p truncation), the quantity a
trainer recomputes; the same choice vLLM makes by default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from pydantic import Field
from torch import Tensor

from tether.core.config import Config
from tether.core.errors import ConfigError
from tether.data.records import Prompt
from tether.models.chat import encode_prompts
from tether.models.logprobs import position_ids_from_mask, prefix_sharing_supported
from tether.models.static_decode import StaticDecoder, static_decoding_supported
from tether.models.vllm_backend import VLLMSettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


_PROMPT_MULTIPLE = 64  # static-cache decoding pads prompt widths to a multiple of this


class GenerationSettings(Config):
    """How to sample completions."""

    max_new_tokens: int = Field(64, ge=1, description="tokens generated at most per completion")
    temperature: float = Field(1.0, ge=0.0, description="0 means greedy decoding")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens; 0 keeps all")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass; 1 keeps all")
    stop: list[str] = Field(default_factory=list, description="stop strings; excluded from the returned text")
    seed: int = Field(0, description="seed of the sampling generator")
    batch_size: int = Field(32, ge=1, description="prompts per forward batch")
    backend: Literal["sampler", "hf-generate", "vllm"] = Field(
        "sampler", description="see tether.models.generation; vllm: tether.models.vllm_backend (GPU, RL rollouts)")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="the engine, when backend is vllm")
    decoding: Literal["auto", "dynamic", "static", "cuda-graph"] = Field(
        "auto", description="sampler's KV cache: auto = cuda-graph on a CUDA device for models that support it "
        "(tether.models.static_decode), dynamic elsewhere; static = static cache without a graph")


@dataclass
class Completion:
    """One generated completion."""

    text: str
    token_ids: list[int]
    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)  # of the raw next-token distribution at each step
    finish_reason: Literal["eos", "stop", "length", "error"] = "length"
    error: str = ""  # why a remote backend gave no completion (finish_reason "error")


class Generator(Protocol):
    """Prompts in, completions out, one per prompt, in order."""

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[Completion]:
        """Complete every prompt (plain text, or messages rendered with the chat template)."""
        ...


class RolloutGenerator(Protocol):
    """What RL rollouts need of a generator: its token ids for a prompt, and seeded completions."""

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids per prompt, as the completions were generated from."""
        ...

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings, *,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        """Complete every prompt; with ``seeds``, each completion depends only on its prompt and seed."""
        ...


def build_generator(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: GenerationSettings, *,
                    path: str | None = None, seed: int = 0) -> RolloutGenerator:
    """The generator ``settings.backend`` names for ``model``: in process, or vLLM serving ``model``'s weights
    (loaded from ``path``, the model's HF directory, then kept in sync with ``model``)."""
    if settings.backend == "vllm":
        from tether.models.vllm_backend import VLLMGenerator

        return VLLMGenerator(path or str(model.name_or_path), tokenizer, settings.vllm, model=model, seed=seed)
    return HFGenerator(model, tokenizer)


def filter_logits(logits: Tensor, *, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set logits outside the top-k and the top-p nucleus to -inf.  (B, V) -> (B, V)

    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p``;
    the most likely token is always kept.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass *before* it already reaches top_p.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick_tokens(logits: Tensor, settings: GenerationSettings, generator: torch.Generator) -> Tensor:
    """Greedy (temperature 0) or sampled next tokens.  (B, V) -> (B,)"""
    if settings.temperature == 0.0:
        return logits.argmax(-1)
    scaled = filter_logits(logits.float() / settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    return inverse_cdf_sample(scaled.softmax(-1), generator)


def inverse_cdf_sample(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One index per row drawn from ``probs`` with a single uniform per row.  (B, V) -> (B,)

    ``torch.multinomial`` (and any method drawing V random numbers per row) is bound by the random
    number generator on a CPU: 2.1 ms for a (64, 2048) batch against 0.08 ms here, which made
    sampling a third of an evaluation's generation time. The cumulative sum is taken in float64;
    zero-probability entries (cut by top-k / top-p) are never drawn.
    """
    cumulative = probs.double().cumsum(-1)                                              # (B, V)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=torch.float64)
    picked = torch.searchsorted(cumulative, u * cumulative[:, -1:], right=True)        # (B, 1)
    return picked.squeeze(-1).clamp(max=probs.shape[-1] - 1)


def pick_tokens_per_row(logits: Tensor, settings: GenerationSettings, noise: Tensor) -> Tensor:
    """Sampled next tokens from per-row uniform noise (Gumbel-max).  (B, V), (B, V) -> (B,)

    argmax(logits / T + Gumbel(noise)) is an exact sample of softmax(logits / T). With noise drawn
    from one random stream per row (:class:`RowNoise`), row i's token depends only on its logits
    and its own stream: a completion does not change with the batch it was sampled in, the batch
    size, or how prompts are split across processes.
    """
    if settings.temperature == 0.0:
        return logits.argmax(-1)
    scaled = filter_logits(logits.float() / settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    gumbel = -torch.log(-torch.log(noise.clamp(min=1e-20)))
    return (scaled + gumbel).argmax(-1)


class RowNoise:
    """Uniform noise from one seeded stream per row, drawn a block of steps at a time (one call per row
    per block rather than per token; the block shrinks with the vocabulary to bound memory)."""

    def __init__(self, seeds: Sequence[int], vocab: int, device: torch.device, *, budget: int = 1 << 22) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.vocab, self.device = vocab, device
        self.block = max(1, min(64, budget // max(1, len(seeds) * vocab)))
        self._noise: Tensor | None = None
        self._used = self.block

    def next(self) -> Tensor:
        """The next step's (B, V) noise."""
        if self._used == self.block:
            self._noise = torch.stack([torch.rand(self.block, self.vocab, generator=g, device=self.device)
                                       for g in self.generators], dim=1)  # (block, B, V)
            self._used = 0
        assert self._noise is not None
        self._used += 1
        return self._noise[self._used - 1]


class HFGenerator:
    """A :class:`Generator` over an in-process HF model and its tokenizer."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        self.eos_ids = sorted(e for e in eos if e is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._decoders: dict[tuple[int, int, str], StaticDecoder] = {}
        self.keep_decoders = 4  # static caches (and graphs) kept for reuse, least recently used dropped

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids per prompt; plain text gets the tokenizer's special tokens, templates bring their own."""
        return encode_prompts(self.tokenizer, prompts)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings, *,
                 seeds: Sequence[int] | None = None, on_token: Callable[[int, int], None] | None = None,
                 ) -> list[Completion]:
        """Complete every prompt, batching prompts of similar length together.

        ``seeds``: one seed per prompt (``sampler`` backend): each completion then depends only on
        its prompt and its seed, not on batching, so RL rollouts split over processes are the
        rollouts one process would draw. Without it one stream seeded by ``settings.seed`` serves the batch.
        ``on_token(prompt_index, token_id)``: called with each token as it is sampled (``sampler``
        backend; the ``hf`` backend calls it for a prompt's tokens once its batch is done), for streaming.
        """
        if settings.backend == "vllm":
            raise ConfigError("generation.backend=vllm serves the RL recipes' rollouts (train grpo / ppo / rloo; "
                             "tether.models.generation.build_generator); use 'sampler' here")
        encoded = self.encode(prompts)
        if seeds is not None and (len(seeds) != len(encoded) or settings.backend != "sampler"):
            raise ValueError("per-prompt seeds need one seed per prompt and the 'sampler' backend")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        generator = torch.Generator(device=self.model.device).manual_seed(settings.seed)
        results: list[Completion | None] = [None] * len(encoded)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), settings.batch_size):
                batch = order[start:start + settings.batch_size]
                report = None if on_token is None else functools.partial(_report, on_token, batch)
                if settings.backend == "sampler":
                    done = self._sample([encoded[i] for i in batch], settings, generator,
                                        None if seeds is None else [seeds[i] for i in batch], report)
                else:
                    done = self._hf_generate([encoded[i] for i in batch], settings, generator)
                    if report is not None:
                        for row, completion in enumerate(done):
                            for token in completion.token_ids:
                                report(row, token)
                for i, completion in zip(batch, done, strict=True):
                    results[i] = completion
        finally:
            self.model.train(was_training)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # a backend that returned fewer completions than prompts: never drop or misalign silently
            raise RuntimeError(f"generation returned no completion for prompts {missing[:10]}")
        return [r for r in results if r is not None]

    def _left_pad(self, batch: list[list[int]], multiple: int = 1) -> tuple[Tensor, Tensor]:
        width = -(-max(len(ids) for ids in batch) // multiple) * multiple
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
        return ids.to(self.model.device), mask.to(self.model.device)

    def _decoding(self, settings: GenerationSettings) -> str:
        """The cache ``settings.decoding`` resolves to here: dynamic, static or cuda-graph."""
        mode = settings.decoding
        # Under autocast, keys (rotated in fp32) and values (bf16) differ in dtype, which a static
        # cache cannot hold; load the model in bf16 instead to decode it over one.
        autocast = torch.is_autocast_enabled(self.model.device.type)
        if mode == "auto":
            cuda = self.model.device.type == "cuda"
            return "cuda-graph" if cuda and not autocast and static_decoding_supported(self.model) else "dynamic"
        if mode == "dynamic":
            return mode
        if autocast:
            raise ConfigError(f"generation.decoding={mode!r} cannot run under autocast; "
                              "load the model in bf16 or use 'dynamic'")
        if not static_decoding_supported(self.model):
            raise ConfigError(f"generation.decoding={mode!r} needs a model with static-cache support, sdpa or eager "
                              f"attention and no sliding window ({type(self.model).__name__} has not); use 'dynamic'")
        return mode

    def _static_decoder(self, size: int, max_len: int, mode: str) -> StaticDecoder:
        """A static-cache decoder for this shape, reset; reused from an earlier call when it still fits."""
        # Decoders (their caches and graphs) are kept per shape and reused while the weights stay put:
        # an RL loop samples the same shapes step after step.
        key = (size, max_len, mode)
        decoder = self._decoders.pop(key, None)
        if decoder is None or not decoder.fits(self.model):
            decoder = StaticDecoder(self.model, size, max_len, graph=mode == "cuda-graph")
        decoder.reset()
        self._decoders[key] = decoder  # most recently used last
        while len(self._decoders) > self.keep_decoders:
            self._decoders.pop(next(iter(self._decoders)))
        return decoder

    @torch.inference_mode()
    def _sample(self, batch: list[list[int]], settings: GenerationSettings, generator: torch.Generator,
                seeds: list[int] | None = None, report: Callable[[int, int], None] | None = None,
                ) -> list[Completion]:
        size, mode = len(batch), self._decoding(settings)
        # A static cache's length is a shape of its graph: round prompt widths up so that a few
        # lengths (and graphs) serve every batch.
        ids, mask = self._left_pad(batch, 1 if mode == "dynamic" else _PROMPT_MULTIPLE)  # (B, P)
        positions = position_ids_from_mask(mask)
        decoder = None if mode == "dynamic" else self._static_decoder(size, ids.shape[1] + settings.max_new_tokens,
                                                                      mode)
        if decoder is None:
            # Equal prompts (an RL group's samples) are run once and their cache repeated to every row.
            first, index = _distinct_rows(batch)
            shared = len(first) < size and prefix_sharing_supported(self.model, training=False)
            rows = torch.tensor(first, device=ids.device) if shared else slice(None)
            out = self.model(input_ids=ids[rows], attention_mask=mask[rows], position_ids=positions[rows],
                             use_cache=True, logits_to_keep=1)
            cache, logits = out.cache, out.logits[:, -1]           # (B or U, V)
            if shared:
                repeat = torch.tensor(index, device=ids.device)
                cache.reorder_cache(repeat)
                logits = logits[repeat]
        else:
            logits = decoder.prefill(ids, mask, positions)
        next_pos = positions[:, -1:] + 1                                     # (B, 1)
        eos = torch.tensor(self.eos_ids, device=ids.device)
        tokens = torch.full((size, settings.max_new_tokens), self.pad_id, dtype=torch.long, device=ids.device)
        logprobs = torch.zeros((size, settings.max_new_tokens), dtype=torch.float32, device=ids.device)
        entropies = torch.zeros_like(logprobs)
        finished = torch.zeros(size, dtype=torch.bool, device=ids.device)
        # End bookkeeping stays on the device (no per-row host reads); stop strings need the host.
        lengths = torch.full((size,), settings.max_new_tokens, dtype=torch.long, device=ids.device)
        stopped: dict[int, int] = {}
        noise = RowNoise(seeds, logits.shape[-1], ids.device) if seeds is not None else None
        # Asking the device whether every row has ended makes the host wait for it; on a GPU ask every
        # few steps so the host queues the next steps meanwhile (ended rows only append padding).
        check_every = 1 if ids.device.type == "cpu" else 8
        for step in range(settings.max_new_tokens):
            chosen = (pick_tokens(logits, settings, generator) if noise is None
                      else pick_tokens_per_row(logits, settings, noise.next()))  # (B,)
            chosen = torch.where(finished, self.pad_id, chosen)
            tokens[:, step] = chosen
            if report is not None:  # streaming: a host read per step, paid only when someone listens
                for row, token in zip((~finished).nonzero().flatten().tolist(),
                                      chosen[~finished].tolist(), strict=True):
                    report(row, token)
            log_p = torch.log_softmax(logits.float(), -1)
            logprobs[:, step] = log_p.gather(-1, chosen[:, None]).squeeze(-1)
            entropies[:, step] = -(log_p.exp() * log_p.nan_to_num(neginf=0.0)).sum(-1)
            hit_eos = torch.isin(chosen, eos) & ~finished
            lengths = torch.where(hit_eos, step + 1, lengths)
            finished |= hit_eos
            if settings.stop:
                for row in (~finished).nonzero().flatten().tolist():
                    if self._hits_stop(tokens[row, : step + 1], settings.stop):
                        stopped[row] = step + 1
                        finished[row] = True
            if step + 1 == settings.max_new_tokens or (step % check_every == 0 and bool(finished.all())):
                break
            if decoder is None:
                mask = torch.cat([mask, torch.ones((size, 1), dtype=mask.dtype, device=mask.device)], dim=1)
                out = self.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_pos,
                                 cache=cache, use_cache=True)
                cache, logits = out.cache, out.logits[:, -1]
            else:
                logits = decoder.step(chosen, next_pos)
            next_pos = next_pos + 1
        # One transfer to the host for the whole batch (row by row would wait on the device each time).
        ends, ended = lengths.tolist(), finished.tolist()  # ended: by EOS, or by a stop string
        token_rows, logp_rows, entropy_rows = tokens.tolist(), logprobs.tolist(), entropies.tolist()
        ends = [stopped.get(row, end) for row, end in enumerate(ends)]
        reasons = ["stop" if row in stopped else "eos" if ended[row] else "length" for row in range(size)]
        return [
            self._completion(token_rows[row][: ends[row]], logp_rows[row][: ends[row]], reasons[row], settings.stop,
                             entropy_rows[row][: ends[row]])
            for row in range(size)
        ]

    def _hf_generate(self, batch: list[list[int]], settings: GenerationSettings,
                     generator: torch.Generator) -> list[Completion]:
        ids, mask = self._left_pad(batch)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
        sample = settings.temperature > 0
        kwargs = dict(temperature=settings.temperature, top_k=settings.top_k or None,
                      top_p=settings.top_p) if sample else {}
        with torch.random.fork_rng(devices=[] if ids.device.type == "cpu" else [ids.device]):
            torch.manual_seed(seed)
            lm: Any = self.model
            out = lm.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens, do_sample=sample,
                eos_token_id=self.eos_ids, pad_token_id=self.pad_id, stop_strings=settings.stop or None,
                tokenizer=self.tokenizer if settings.stop else None, return_dict_in_generate=True,
                output_logits=True, **kwargs,
            )
        new = out.sequences[:, ids.shape[1]:]                                 # (B, N)
        raw = torch.stack(out.logits, dim=1).float().log_softmax(-1)         # (B, N, V)
        token_logps = raw.gather(-1, new[..., None]).squeeze(-1)
        token_entropy = -(raw.exp() * raw.nan_to_num(neginf=0.0)).sum(-1)
        completions = []
        for row in range(len(batch)):
            seq = new[row].tolist()
            end, reason = len(seq), "length"
            for j, tok in enumerate(seq):
                if tok in self.eos_ids:
                    end, reason = j + 1, "eos"
                    break
            if reason == "length" and settings.stop:
                for j in range(1, len(seq) + 1):
                    if self._hits_stop(new[row, :j], settings.stop):
                        end, reason = j, "stop"
                        break
            completions.append(self._completion(seq[:end], token_logps[row, :end].tolist(), reason, settings.stop,
                                                token_entropy[row, :end].tolist()))
        return completions

    def _hits_stop(self, generated: Tensor, stop: list[str]) -> bool:
        # Only the tail can complete a stop string; decoding it alone keeps the check O(1) per step.
        tail = self.tokenizer.decode(generated[-(max(len(s) for s in stop) + 2):], skip_special_tokens=True)
        return any(s in tail for s in stop)

    def _completion(self, ids: list[int], logps: list[float], reason: str, stop: list[str],
                    entropies: list[float]) -> Completion:
        text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        if reason == "stop":
            cut = min((text.find(s) for s in stop if s in text), default=len(text))
            text = text[:cut]
        return Completion(text=text, token_ids=ids, logprobs=logps, finish_reason=reason,  # type: ignore[arg-type]
                          entropies=entropies)


def _report(on_token: Callable[[int, int], None], batch: list[int], row: int, token: int) -> None:
    on_token(batch[row], token)  # a batch row's token, reported under its prompt's index


def _distinct_rows(batch: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """The first row of each distinct sequence, and for every row the position of its sequence among those."""
    seen: dict[tuple[int, ...], int] = {}
    first: list[int] = []
    index = []
    for row, seq in enumerate(batch):
        key = tuple(seq)
        if key not in seen:
            seen[key] = len(first)
            first.append(row)
        index.append(seen[key])
    return first, index
