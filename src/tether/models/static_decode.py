"""Decoding over a static KV cache, one step replayed from a CUDA graph.

Why: a small model on a GPU decodes at the speed of its kernel launches, not its arithmetic
(an 8-layer, 32M-parameter Llama: ``model.generate`` 132 tokens/s at batch 1 on an H100, this
module's graph 994; docs/results/bench/generation_h100.json). Capturing one decode step — embedding,
every layer, the output head — as a CUDA graph and replaying it turns hundreds of launches into one.

What makes a step capturable: every tensor it reads or writes lives at a fixed address and
no step depends on a value read back to the host. So the cache is transformers'
``StaticCache`` (preallocated; it advances its own write position on the device), the inputs
are copied into fixed buffers, and the attention mask is our own 4D additive mask
(B, 1, 1, L) — transformers takes a 4D mask as given, so no mask is built from the data inside
the step. Sampling stays outside the graph (it is a handful of kernels).

Supported: models transformers marks as static-cache / full-graph capable
(``_can_compile_fullgraph``) with ``sdpa`` or ``eager`` attention and no sliding-window layers.
Anything else decodes with the dynamic cache (:func:`static_decoding_supported` says which).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def static_decoding_supported(model: PreTrainedModel) -> bool:
    """Whether ``model`` can decode over a static cache with a 4D mask (see the module docstring)."""
    config = model.config.get_text_config(decoder=True)
    sliding = getattr(config, "sliding_window", None) is not None or "sliding_attention" in (
        getattr(config, "layer_types", None) or [])
    return (bool(getattr(model, "_can_compile_fullgraph", False)) and not sliding
            and getattr(config, "_attn_implementation", None) in ("sdpa", "eager"))


class StaticDecoder:
    """Prefill once, then decode one token per row per :meth:`step`, over a static KV cache.

    ``graph=True`` (CUDA only) captures the decode step after its first eager run and replays it
    from then on; ``graph=False`` runs the same static-cache step eagerly (on any device: this is
    what the CPU tests compare against the dynamic cache).
    """

    def __init__(self, model: PreTrainedModel, batch: int, max_len: int, *, graph: bool) -> None:
        from transformers import StaticCache

        if graph and model.device.type != "cuda":
            raise ValueError("CUDA graphs need a model on a CUDA device")
        self.model, self.graph_wanted = model, graph
        self.cache = StaticCache(config=model.config, max_cache_len=max_len)
        self.dtype = _activation_dtype(model)
        self.masked = torch.finfo(self.dtype).min
        device = model.device
        # Fixed-address inputs of the decode step.
        self.ids = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.positions = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.mask = torch.full((batch, 1, 1, max_len), self.masked, dtype=self.dtype, device=device)
        self.length = 0                    # tokens written to the cache so far (host-side count)
        self.max_len = max_len
        self.logits: Tensor | None = None  # the step's output buffer when replaying a graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.weights = _addresses(model)   # a captured graph reads the weights where they were

    def fits(self, model: PreTrainedModel) -> bool:
        """Whether this decoder (and its graph) can serve ``model`` again: same weights at the same
        addresses (an optimizer updates them in place; a reload or a device move does not)."""
        return model is self.model and _addresses(model) == self.weights and _activation_dtype(model) == self.dtype

    def reset(self) -> None:
        """Empty the cache for a new batch of prompts, keeping its buffers and any captured graph."""
        for position in self._write_positions():
            position.zero_()
        self.mask.fill_(self.masked)
        self.length = 0

    def prefill(self, ids: Tensor, attention_mask: Tensor, positions: Tensor) -> Tensor:
        """Run the (left-padded) prompts; return each row's next-token logits.  (B, P) x3 -> (B, V)"""
        width = ids.shape[1]
        keys = attention_mask.bool()[:, None, None, :]                          # (B, 1, 1, P)
        causal = torch.ones((width, width), dtype=torch.bool, device=ids.device).tril()
        allowed = torch.zeros((ids.shape[0], 1, width, self.max_len), dtype=torch.bool, device=ids.device)
        allowed[..., :width] = keys & causal                                    # (B, 1, P, L)
        out = self.model(input_ids=ids, attention_mask=self._additive(allowed), position_ids=positions,
                         cache=self.cache, use_cache=True, logits_to_keep=1)
        self.mask[:, 0, 0, :width] = self._additive(keys[:, 0, 0])
        self.length = width
        return out.logits[:, -1]

    def step(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """Append one token per row at ``positions``; return the next-token logits.  (B,), (B, 1) -> (B, V)

        The returned tensor is overwritten by the next step when a graph is replayed: use it first.
        """
        if self.length >= self.max_len:
            raise ValueError(f"static cache full ({self.max_len} tokens)")
        self.mask[:, 0, 0, self.length] = 0.0  # each row now sees the token it is writing
        self.ids.copy_(tokens[:, None])
        self.positions.copy_(positions)
        if self.graph is not None:
            self.graph.replay()
        elif self.graph_wanted and self.length > 0:
            self._capture_and_run()
        else:
            self.logits = self._forward()
        self.length += 1
        assert self.logits is not None
        return self.logits[:, -1]

    def _forward(self) -> Tensor:
        return self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=self.positions,
                          cache=self.cache, use_cache=True).logits

    def _capture_and_run(self) -> None:
        # Warm up on a side stream (lazy allocations and library handles must exist before
        # capture), then put the cache's write position back: the warm-up wrote this step's
        # key/values, which the replay below writes again at the same slot.
        saved = [position.clone() for position in self._write_positions()]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._forward()
        torch.cuda.current_stream().wait_stream(stream)
        for position, length in zip(self._write_positions(), saved, strict=True):
            position.copy_(length)
        graph = torch.cuda.CUDAGraph()
        # Capture by hand rather than with ``torch.cuda.graph``, which empties the allocator's
        # cache first: in a training loop every later step would then pay cudaMalloc again.
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            graph.capture_begin()
            try:
                self.logits = self._forward()
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = graph
        graph.replay()

    def _write_positions(self) -> list[Tensor]:
        """Each cache layer's next write index (a device tensor the step advances in place)."""
        layers: list[Any] = list(self.cache.layers)
        return [layer.cumulative_length for layer in layers if getattr(layer, "is_initialized", False)]

    def _additive(self, allowed: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=self.dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.full((), self.masked, dtype=self.dtype, device=allowed.device))


def _addresses(model: PreTrainedModel) -> list[int]:
    return [p.data_ptr() for p in model.parameters()]


def _activation_dtype(model: PreTrainedModel) -> torch.dtype:
    """The dtype attention scores are added to the mask in (static decoding refuses autocast)."""
    return model.dtype
