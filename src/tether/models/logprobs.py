"""Log-probabilities of completion tokens under a causal LM, without a full-vocabulary log-softmax.

Convention (as TRL computes it): the log-prob of a sequence is the *sum* over completion
tokens of log p(x_t | x_<t); prompt and padding tokens are masked out. Token ``t``'s
log-prob is stored at position ``t`` (aligned with ``input_ids``), so position 0 is 0.

Memory: only the hidden states of scored positions reach the output head, in chunks of
``chunk_size`` rows, and each chunk computes ``logit[target] - logsumexp(logits)`` (never a
(B, T, V) log-softmax). Under autograd, when the batch's logits would take more than
``KEEP_LOGITS_BYTES``, each chunk is checkpointed, so its logits are recomputed in backward
instead of kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from tether.data.collate import PrefixBatch, pad_batch
from tether.data.records import TokenizedExample
from tether.models.chat import encode_text

if TYPE_CHECKING:
    from transformers import PreTrainedModel


KEEP_LOGITS_BYTES = 256 * 2**20  # above this, fp32 logits kept for backward are recomputed instead


class CompletionLogps(NamedTuple):
    """Log-probs of the masked tokens of a batch."""

    token_logps: Tensor     # (B, T) log p(x_t | x_<t) where scored, 0 elsewhere
    sequence_logps: Tensor  # (B,) sum of token_logps over scored tokens
    num_tokens: Tensor      # (B,) how many tokens were scored


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so left padding does not shift them.  (B, T) -> (B, T)"""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def gather_token_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target], i.e. ``logit[target] - logsumexp(logits)``.  (N, V), (N,) -> (N,)

    As minus the per-row cross-entropy: one fused log-softmax whose backward is one pass over the
    logits (``gather - logsumexp`` costs three broadcast passes in backward: a quarter of a small
    model's pretraining step on a CPU). Computed in float32 whatever the logits' dtype: bf16
    logsumexp loses ~2 digits.
    """
    return -torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")


class LogpsModule(torch.nn.Module):
    """A causal LM whose forward can also compute completion log-probs.

    Distributed wrappers (DDP, FSDP) synchronise gradients only for work done inside their own
    ``forward``; the chunked log-prob computation calls the backbone and the output head
    separately, so it must run *inside* a forward. The training loop wraps every model in
    this module before ``accelerator.prepare``; ``completion_logps`` routes through it.
    Called without ``logps_of`` it is the plain model.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, logps_of: dict[str, Any] | None = None, call: Callable[..., Any] | None = None,
                **kwargs: Any) -> Any:
        """``logps_of``: the keyword arguments of :func:`completion_logps`; ``call``: run ``call(model, **kwargs)``
        inside this forward (other computations that bypass the model's own forward); otherwise the model's forward."""
        if logps_of is not None:
            return _completion_logps(self.model, **logps_of)  # type: ignore[arg-type]
        if call is not None:
            return call(self.model, **kwargs)
        return self.model(*args, **kwargs)


def run_inside(model: Any, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """``fn(hf_model, **kwargs)``, run inside ``model``'s (distributed) forward when it is a :class:`LogpsModule`."""
    wrapped = getattr(model, "module", model)
    if isinstance(wrapped, LogpsModule):
        return model(call=fn, **kwargs)
    return fn(model, **kwargs)


def grouped_completion_logps(model: Any, batches: Sequence[Any]) -> list[CompletionLogps]:
    """:func:`completion_logps` of several batches (``input_ids``, ``attention_mask``, ``loss_mask``,
    ``position_ids`` each) in one forward of ``model``'s wrapper: one gradient synchronisation."""
    return run_inside(model, _grouped_logps, batches=batches)  # type: ignore[no-any-return]


def _grouped_logps(model: Any, *, batches: Sequence[Any]) -> list[CompletionLogps]:
    return [_completion_logps(model, b.input_ids, b.attention_mask, b.loss_mask, position_ids=b.position_ids)
            for b in batches]


def document_index(position_ids: Tensor) -> Tensor:
    """Which packed document each position belongs to (positions restart at 0 per document).  (1, N) -> (N,)"""
    return (position_ids[0] == 0).cumsum(0) - 1


def sequence_totals(logps: CompletionLogps, loss_mask: Tensor, position_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """Summed log-probs and scored-token counts per sequence: per row, or per packed document.  -> (S,), (S,)"""
    if position_ids is None:
        return logps.sequence_logps, logps.num_tokens
    scored = (loss_mask.bool() & (position_ids > 0)).float()
    return per_document_sums(logps.token_logps, position_ids), per_document_sums(scored, position_ids).long()


def per_document_sums(values: Tensor, position_ids: Tensor) -> Tensor:
    """Sum ``values`` (1, N) over each packed document.  -> (D,)"""
    doc = document_index(position_ids)
    out = torch.zeros(int(doc[-1]) + 1, dtype=values.dtype, device=values.device)
    return out.index_add(0, doc, values[0])


def inner_model(model: Any) -> Any:
    """The HF model inside any distributed wrapper and :class:`LogpsModule`."""
    while True:
        if isinstance(model, LogpsModule):
            model = model.model
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module  # DDP and friends
        else:
            return model


def completion_logps(
    model: PreTrainedModel,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    *,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    position_ids: Tensor | None = None,
) -> CompletionLogps:
    """Per-token and summed log-probs of the tokens where ``loss_mask`` is true.

    Args:
        model: any HF causal LM, optionally wrapped by peft.
        input_ids: (B, T) prompt + completion ids, left or right padded.
        attention_mask: (B, T) 1 on real tokens.
        loss_mask: (B, T) true on tokens to score (completion tokens); a row's first real token
            is never scored (nothing precedes it).
        chunk_size: rows of hidden states sent through the output head at once.
        temperature: logits are divided by it (use the sampling temperature in RL).
        position_ids: (B, T) for *packed* rows (several documents per row, padding-free): positions
            restart at 0 at each document, and attention never crosses a document boundary
            (transformers builds the block-diagonal mask from them). ``attention_mask`` is then only
            used to tell real tokens from tail padding.

    Returns:
        :class:`CompletionLogps`; differentiable when autograd is on.
    """
    wrapped = getattr(model, "module", model)
    if isinstance(wrapped, LogpsModule):  # through the (distributed) wrapper's forward
        return model(logps_of={"input_ids": input_ids, "attention_mask": attention_mask,  # type: ignore[no-any-return]
                               "loss_mask": loss_mask, "chunk_size": chunk_size, "temperature": temperature,
                               "position_ids": position_ids})
    return _completion_logps(model, input_ids, attention_mask, loss_mask, chunk_size=chunk_size,
                             temperature=temperature, position_ids=position_ids)


def _completion_logps(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, *,
                      chunk_size: int = 1024, temperature: float = 1.0,
                      position_ids: Tensor | None = None) -> CompletionLogps:
    hidden, head, softcap = hidden_and_head(model, input_ids, attention_mask, position_ids)  # (B, T, H)
    return logps_from_hidden(hidden, head, softcap, input_ids, attention_mask, loss_mask, chunk_size=chunk_size,
                             temperature=temperature, position_ids=position_ids)


def scored_positions(attention_mask: Tensor, loss_mask: Tensor, position_ids: Tensor | None = None) -> Tensor:
    """Where a token's log-prob is taken: ``loss_mask`` and real, with a real token before it.  -> (B, T) bool"""
    # The first real token of a row has no context, whatever the padding side.
    real = attention_mask.bool()
    scored = loss_mask.bool() & real
    scored[:, 0] = False
    scored[:, 1:] &= real[:, :-1]
    if position_ids is not None:
        scored &= position_ids > 0  # a document's first token is not predicted from the previous document
    return scored


def logps_from_hidden(hidden: Tensor, head: Callable[[Tensor], Tensor], softcap: float | None, input_ids: Tensor,
                      attention_mask: Tensor, loss_mask: Tensor, *, chunk_size: int = 1024, temperature: float = 1.0,
                      position_ids: Tensor | None = None) -> CompletionLogps:
    """:func:`completion_logps` from final hidden states already computed (e.g. shared with a value head)."""
    scored = scored_positions(attention_mask, loss_mask, position_ids)
    # Position t-1's hidden state predicts token t.
    rows = scored[:, 1:].nonzero(as_tuple=True)               # indices into (B, T-1)
    h = hidden[:, :-1][rows]                                   # (N, H)
    targets = input_ids[:, 1:][rows]                           # (N,)

    def chunk_logps(h_chunk: Tensor, t_chunk: Tensor) -> Tensor:
        logits = head(h_chunk)                                 # (n, V)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        if temperature != 1.0:
            logits = logits / temperature
        return gather_token_logps(logits, t_chunk)

    # Checkpointing a chunk (its logits recomputed in backward, not kept) only pays when the kept
    # logits would be large: a big vocabulary or many tokens. For small ones it only costs a second
    # pass through the head; the values and gradients are the same either way.
    vocab = getattr(head, "out_features", None)
    recompute = vocab is None or h.shape[0] * vocab * 4 > KEEP_LOGITS_BYTES
    pieces = []
    for start in range(0, h.shape[0], chunk_size):
        args = (h[start:start + chunk_size], targets[start:start + chunk_size])
        if torch.is_grad_enabled() and h.requires_grad and recompute:
            pieces.append(checkpoint(chunk_logps, *args, use_reentrant=False))
        else:
            pieces.append(chunk_logps(*args))
    flat = torch.cat(pieces) if pieces else h.new_zeros(0, dtype=torch.float32)
    token_logps = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    token_logps[:, 1:] = token_logps[:, 1:].index_put(rows, flat)
    return CompletionLogps(token_logps, token_logps.sum(-1), scored.sum(-1))


def hidden_and_head(
    model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, packed_positions: Tensor | None = None
) -> tuple[Tensor, Callable[[Tensor], Tensor], float | None]:
    """Final hidden states (after the last norm), the output head, and any final logit soft-cap.

    For an unknown layout the "hidden states" are the full logits and the head is the identity.
    """
    wrapped: Any = model  # peft wraps models; both expose the HF methods used here
    lm = wrapped.get_base_model() if hasattr(wrapped, "get_base_model") else wrapped
    head = lm.get_output_embeddings()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    backbone = getattr(lm, lm.base_model_prefix, None)
    if packed_positions is not None:
        # No 2-D mask: transformers derives per-document causal masks from the restarting positions.
        position_ids, mask = packed_positions, None
    else:
        position_ids, mask = position_ids_from_mask(attention_mask), attention_mask
    if backbone is None or head is None or backbone is lm:
        # Unknown layout: fall back to full logits, still gathered without a log-softmax.
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
        return logits, torch.nn.Identity(), None
    out = backbone(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state, head, softcap


def completion_logits(model: Any, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor) -> Tensor:
    """Logits predicting each scored token (:func:`scored_positions`), in row-major order.  -> (N, V)

    Two batches with the same completions under different prompts give aligned rows: row k of
    each predicts the k-th completion token. Only the scored positions go through the output
    head. Call through :func:`run_inside` when ``model`` is being trained under a distributed wrapper.
    """
    hidden, head, softcap = hidden_and_head(model, input_ids, attention_mask)
    scored = scored_positions(attention_mask, loss_mask)
    logits = head(hidden[:, :-1][scored[:, 1:]])
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits  # type: ignore[no-any-return]


def prefix_sharing_supported(model: Any, *, training: bool = True) -> bool:
    """Whether a prompt's key/value cache can be run once and repeated to its completions
    (:func:`prefix_logps`; ``training=False``: for sampling): a known backbone/head layout, full
    attention in every layer (a sliding window or a recurrent layer keeps a cache that cannot simply
    be repeated), and, to train, no gradient checkpointing (which drops the cache inside each layer)."""
    hf = inner_model(model)
    lm = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
    config = lm.config.get_text_config(decoder=True)
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    backbone = getattr(lm, lm.base_model_prefix, None)
    return (backbone is not None and backbone is not lm and lm.get_output_embeddings() is not None
            and getattr(config, "sliding_window", None) is None and layer_types == {"full_attention"}
            and not (training and _checkpointing(lm))
            and not getattr(config, "is_encoder_decoder", False))


def _checkpointing(model: Any) -> bool:
    # transformers 5 renamed gradient to activation checkpointing (the old name warns).
    if hasattr(type(model), "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def prefix_logps(model: Any, batch: PrefixBatch, *, temperature: float = 1.0) -> Tensor:
    """Per-token log-probs of ``batch``'s completion tokens, each prompt run once.  -> (B, C), 0 on padding

    Equal, up to float rounding, to :func:`completion_logps` over the concatenated rows (tested);
    differentiable, the prompts' gradients summed over the completions that share them. Needs
    :func:`prefix_sharing_supported`. Runs inside ``model``'s distributed wrapper, like
    :func:`completion_logps`.
    """
    return run_inside(model, _prefix_logps, batch=batch, temperature=temperature)  # type: ignore[no-any-return]


def grouped_prefix_logps(model: Any, batches: Sequence[PrefixBatch]) -> list[Tensor]:
    """:func:`prefix_logps` of several batches in one forward of ``model``'s wrapper (one gradient synchronisation)."""
    return run_inside(model, _grouped_prefix, batches=batches)  # type: ignore[no-any-return]


def _grouped_prefix(model: Any, *, batches: Sequence[PrefixBatch]) -> list[Tensor]:
    return [_prefix_logps(model, batch=b) for b in batches]


def _prefix_logps(model: Any, *, batch: PrefixBatch, temperature: float = 1.0) -> Tensor:
    from transformers import DynamicCache

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = lm.get_output_embeddings()
    softcap = getattr(lm.config, "final_logit_softcapping", None)
    backbone = getattr(lm, lm.base_model_prefix)
    cache = DynamicCache(config=lm.config)
    prompt = backbone(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask,
                      position_ids=position_ids_from_mask(batch.prompt_mask), cache=cache, use_cache=True)
    # Repeat each prompt's keys and values to its completions (index_select: gradients flow back summed).
    cache.reorder_cache(batch.prompt_of)  # type: ignore[arg-type]
    lengths = batch.prompt_mask.sum(-1)[batch.prompt_of]                                      # (B,)
    width = batch.completion_ids.shape[1]
    mask = torch.cat([batch.prompt_mask[batch.prompt_of], batch.completion_mask.long()], dim=1)  # (B, P + C)
    positions = lengths[:, None] + torch.arange(width, device=lengths.device)             # (B, C)
    hidden = backbone(input_ids=batch.completion_ids, attention_mask=mask, position_ids=positions,
                      cache=cache, use_cache=True).last_hidden_state            # (B, C, H)
    # The prompt's last state predicts a completion's first token; completion token t-1 predicts token t.
    predicting = torch.cat([prompt.last_hidden_state[:, -1][batch.prompt_of, None], hidden[:, :-1]], dim=1)
    rows = batch.completion_mask.nonzero(as_tuple=True)

    def logps(h: Tensor, targets: Tensor) -> Tensor:
        logits = head(h)
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        if temperature != 1.0:
            logits = logits / temperature
        return gather_token_logps(logits, targets)

    flat = logps(predicting[rows], batch.completion_ids[rows])
    out = torch.zeros(batch.completion_ids.shape, dtype=torch.float32, device=flat.device)
    return out.index_put(rows, flat)


@torch.no_grad()
def continuation_logps(model: Any, tokenizer: Any, contexts: Sequence[str], continuations: Sequence[str], *,
                       special: bool | Sequence[bool] = False, batch_size: int = 32) -> list[float]:
    """Summed log p(continuation | context) for each pair. Contexts are text read from its start: a chat
    template rendered to text, encoded as it is; or, where ``special`` is on (one flag, or one per context),
    plain text, which gets the tokenizer's BOS as generation and training give a plain-text prompt one."""
    flags = [special] * len(contexts) if isinstance(special, bool) else list(special)
    if len(flags) != len(contexts):
        raise ValueError(f"{len(flags)} special flags for {len(contexts)} contexts")
    examples = []
    for context, continuation, plain in zip(contexts, continuations, flags, strict=True):
        ctx = encode_text(tokenizer, context, special=plain)
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        if not cont:
            raise ValueError(f"continuation {continuation!r} has no tokens")
        examples.append(TokenizedExample(ctx + cont, [False] * len(ctx) + [True] * len(cont)))
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for start in range(0, len(examples), batch_size):
            batch = pad_batch(examples[start:start + batch_size], tokenizer.pad_token_id, model.device)
            logps = completion_logps(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
            out.extend(logps.sequence_logps.float().tolist())
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def next_token_logps(model: Any, tokenizer: Any, contexts: Sequence[str], token_ids: Sequence[int], *,
                     batch_size: int = 32) -> list[list[float]]:
    """log p(t | context) for every ``t`` in ``token_ids`` after each context: one forward per context, where
    :func:`continuation_logps` takes one per (context, continuation). Only each row's last hidden state goes
    through the output head."""
    examples = [TokenizedExample(ids, [False] * len(ids))
                for ids in (list(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in contexts)]
    if any(not e.input_ids for e in examples):
        raise ValueError("a context has no tokens")
    wanted = torch.tensor(list(token_ids), dtype=torch.long)
    was_training = model.training
    model.eval()
    out: list[list[float]] = []
    try:
        for start in range(0, len(examples), batch_size):
            batch = pad_batch(examples[start:start + batch_size], tokenizer.pad_token_id, model.device)
            hidden, head, softcap = hidden_and_head(model, batch.input_ids, batch.attention_mask)
            last = batch.attention_mask.sum(-1) - 1
            logits = head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last]).float()
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            out.extend(torch.log_softmax(logits, -1)[:, wanted.to(logits.device)].tolist())
    finally:
        model.train(was_training)
    return out
