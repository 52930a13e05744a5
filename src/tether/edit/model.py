"""Where an edit reaches into a model and what it reads there.

Locate-then-edit methods rewrite the output projection of a decoder layer's MLP (Llama's ``down_proj``,
GPT-2's ``c_proj``, GPT-NeoX's ``dense_4h_to_h``, OPT's ``fc2``, ...): its input at a subject's last token
is the *key* that names the subject, its output the *value* the MLP writes for it. This module finds that
projection in any Hugging Face causal LM (:func:`projection`; a mixture-of-experts layer has no single one
and is refused), reads keys and their second moment over text, and searches for the value that makes the
model say a new target (:func:`search_delta`). The updates themselves are in :mod:`tether.edit.updates`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from tether.core.config import Config
from tether.core.errors import UserError
from tether.interp.sites import MLP, base_model, decoder_layers
from tether.models.chat import encode_text

# The MLP output projection's name in each family (down_proj: Llama, Mistral, Qwen, Gemma, Phi-3, OLMo;
# c_proj: GPT-2, StarCoder; dense_4h_to_h: GPT-NeoX, Falcon, BLOOM; fc2: OPT, Phi; fc_out: GPT-J).
OUTPUT_PROJECTIONS = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out", "w2")


@dataclass(frozen=True)
class Projection:
    """A decoder layer's MLP output projection. ``transposed``: the module stores its weight as
    ``d_in × d_out`` (GPT-2's Conv1D), the other way round from ``torch.nn.Linear``."""

    layer: int
    name: str
    module: torch.nn.Module
    transposed: bool

    def weight(self) -> Tensor:
        """``W`` as ``d_out × d_in`` in float32 (a copy)."""
        weight = self.module.weight.detach().float()
        return weight.T.clone() if self.transposed else weight.clone()

    def add(self, delta: Tensor) -> None:
        """``W += delta`` (``d_out × d_in``), in the module's own dtype."""
        with torch.no_grad():
            target = self.module.weight
            target.add_((delta.T if self.transposed else delta).to(target.dtype))


def projection(model: Any, layer: int) -> Projection:
    """The MLP output projection of decoder layer ``layer`` (negative: counted from the last).

    Raises:
        UserError: no such layer, a mixture-of-experts MLP (many output projections, chosen per token), or
            an MLP without a dense output projection.
    """
    layers = decoder_layers(model)
    index = layer + len(layers) if layer < 0 else layer
    if not 0 <= index < len(layers):
        raise UserError(f"edit layer {layer}: the model has layers 0..{len(layers) - 1}")
    block = layers[index]
    mlp = next((getattr(block, n) for n in MLP if isinstance(getattr(block, n, None), torch.nn.Module)), None)
    kind = base_model(model).config.model_type
    if mlp is None:
        raise UserError(f"{kind} layer {index}: no MLP found among {', '.join(n for n, _ in block.named_children())}")
    if hasattr(mlp, "experts"):
        raise UserError(f"{kind} layer {index}: its MLP ({type(mlp).__name__}) is a mixture of experts; ROME, "
                        "MEMIT and AlphaEdit rewrite one dense MLP output matrix, which this layer does not have "
                        "(pick a dense layer with edit.layers, if the model has one)")
    found = mlp if _is_dense(mlp) else next(
        (getattr(mlp, n) for n in OUTPUT_PROJECTIONS if _is_dense(getattr(mlp, n, None))), None)
    if found is None:
        raise UserError(f"{kind} layer {index}: no dense MLP output projection (looked for "
                        f"{', '.join(OUTPUT_PROJECTIONS)} in {type(mlp).__name__})")
    name = next(n for n, m in base_model(model).named_modules() if m is found)
    return Projection(index, name, found, transposed=type(found).__name__ == "Conv1D")


def _is_dense(module: Any) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


# --- token positions ------------------------------------------------------------------------------

# Where a request's key is read and its value written: the subject's last token (ROME's and MEMIT's
# default: the subject is recalled there in the GPT models they studied) or the prompt's last token, for
# models that gather the subject into the final position before looking the fact up.
Token = Literal["subject", "last"]


@dataclass(frozen=True)
class Row:
    """Token ids to run, the position of the subject's last token, and where the target's tokens are
    (``target_start``: the first target token's index; none for rows without a target)."""

    ids: list[int]
    subject: int
    target_start: int | None = None


def subject_row(tokenizer: Any, template: str, subject: str, *, prefix: str = "", target: str | None = None,
                token: Token = "subject") -> Row:
    """The row for ``prefix + template.format(subject)`` (then ``target``'s tokens, if given), edited at the
    subject's last token or, with ``token="last"``, at the prompt's last token.

    Raises:
        UserError: the template has no ``{}`` or the subject's last token cannot be found.
    """
    if template.count("{}") != 1:
        raise UserError(f"edit prompt {template!r}: needs exactly one {{}} where the subject goes")
    head = prefix + template[: template.index("{}")] + subject
    ids = encode_text(tokenizer, prefix + template.format(subject))
    last = len(encode_text(tokenizer, head)) - 1
    if not 0 <= last < len(ids):
        raise UserError(f"edit prompt {template!r}: the subject {subject!r} was not found in its tokens")
    if token == "last":
        last = len(ids) - 1
    if target is None:
        return Row(ids, last)
    return Row(ids + encode_text(tokenizer, target, special=False), last, len(ids))


def _batch(rows: Sequence[Row], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded ids and attention mask (positions keep their indices)."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        mask[i, : len(r.ids)] = 1
    return ids.to(device), mask.to(device)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


# --- hooks ------------------------------------------------------------------------------------------

def _as_stream(value: Tensor, shape: tuple[int, int]) -> Tensor:
    """A module's tensor as batch × tokens × features (some flatten the tokens: OPT's fc2)."""
    return value.view(*shape, -1) if value.dim() == 2 else value


@contextlib.contextmanager
def reading_input(module: torch.nn.Module, shape: tuple[int, int], store: list[Tensor]) -> Iterator[None]:
    """For the block, append ``module``'s input (batch × tokens × d_in) of every forward pass to ``store``."""

    def hook(_: torch.nn.Module, args: tuple[Any, ...]) -> None:
        store.append(_as_stream(args[0], shape))

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def adding(module: torch.nn.Module, shape: tuple[int, int], rows: Tensor, positions: Tensor,
           delta: Callable[[Tensor], Tensor], store: list[Tensor] | None = None) -> Iterator[None]:
    """For the block, add ``delta(original)`` to ``module``'s output (its first element, for a decoder layer's
    tuple) at ``(rows[i], positions[i])``; the originals there are appended to ``store``."""

    def hook(_: torch.nn.Module, __: tuple[Any, ...], output: Any) -> Any:
        value = output[0] if isinstance(output, tuple) else output
        stream = _as_stream(value, shape)
        original = stream[rows, positions]
        if store is not None:
            store.append(original.detach())
        changed = stream.clone()
        changed[rows, positions] = original + delta(original)
        changed = changed.view(value.shape)
        return (changed, *output[1:]) if isinstance(output, tuple) else changed

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _forward(model: Any, rows: Sequence[Row], pad: int) -> tuple[Any, Tensor]:
    device = next(model.parameters()).device
    ids, mask = _batch(rows, pad, device)
    return model(input_ids=ids, attention_mask=mask, use_cache=False), mask


# --- keys and their statistics --------------------------------------------------------------------

def keys(model: Any, tokenizer: Any, proj: Projection, rows: Sequence[Row]) -> Tensor:
    """The projection's input at each row's subject position (rows × d_in, float32)."""
    store: list[Tensor] = []
    width = max(len(r.ids) for r in rows)
    with torch.no_grad(), reading_input(proj.module, (len(rows), width), store):
        _forward(model, rows, _pad_id(tokenizer))
    at = torch.tensor([r.subject for r in rows])
    return store[0][torch.arange(len(rows)), at.to(store[0].device)].float()


def second_moment(model: Any, tokenizer: Any, projections: Sequence[Projection], texts: Sequence[str], *,
                  max_tokens: int = 256, batch_size: int = 16) -> dict[int, Tensor]:
    """``E[k kᵀ]`` of each projection's input over every token of ``texts`` (each cut at ``max_tokens``), by
    layer.

    Raises:
        UserError: no text with a token.
    """
    rows = [Row(ids[:max_tokens], 0) for ids in (encode_text(tokenizer, t) for t in texts) if ids]
    if not rows:
        raise UserError("edit statistics: no text to measure the keys on")
    sums = {p.layer: torch.zeros(0) for p in projections}
    count = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start: start + batch_size]
        shape = (len(chunk), max(len(r.ids) for r in chunk))
        stores: dict[int, list[Tensor]] = {p.layer: [] for p in projections}
        with torch.no_grad(), contextlib.ExitStack() as stack:
            for p in projections:
                stack.enter_context(reading_input(p.module, shape, stores[p.layer]))
            _, mask = _forward(model, chunk, _pad_id(tokenizer))
        kept = mask.bool()
        count += int(kept.sum())
        for p in projections:
            k = stores[p.layer][0][kept].double()
            sums[p.layer] = k.T @ k if sums[p.layer].numel() == 0 else sums[p.layer] + k.T @ k
    return {layer: (total / count).float().cpu() for layer, total in sums.items()}


# --- the value search -----------------------------------------------------------------------------

class ValueSearch(Config):
    """The gradient search for the vector that makes the model say the new target (Meng et al. 2022): a
    ``delta`` added where the edit writes, at the subject's last token, in every context."""

    steps: int = Field(25, ge=1, description="Adam steps")
    lr: float = Field(0.5, gt=0, description="Adam's step size")
    kl_weight: float = Field(0.0625, ge=0, description="weight of KL(original || edited) on the essence prompt's "
                             "next token: what the model says about the subject otherwise should stay")
    weight_decay: float = Field(1e-3, ge=0, description="penalty on ||delta||² relative to the original vector's")
    clamp: float = Field(4.0, gt=0, description="||delta|| is kept at most this times the original vector's norm")
    stop_loss: float = Field(0.05, ge=0, description="stop once the target's mean NLL is below this")


@dataclass(frozen=True)
class Delta:
    """A search's result: the vector to add, the original vector at the subject (unprefixed prompt) and the
    target's mean NLL at the end."""

    delta: Tensor
    original: Tensor
    loss: float


def search_delta(model: Any, tokenizer: Any, where: torch.nn.Module, rows: Sequence[Row], essence: Sequence[Row],
                 settings: ValueSearch) -> Delta:
    """The ``delta`` which, added to ``where``'s output at each row's subject position, makes each row's
    target likely (``rows[0]`` is the unprefixed prompt), while the essence rows' next-token distributions
    stay close to the original's.
    """
    pad = _pad_id(tokenizer)
    everything = [*rows, *essence]
    shape = (len(everything), max(len(r.ids) for r in everything))
    device = next(model.parameters()).device
    at = torch.tensor([r.subject for r in everything], device=device)
    row_index = torch.arange(len(everything), device=device)
    targets = [(i, r) for i, r in enumerate(rows) if r.target_start is not None]
    with torch.no_grad():
        originals: list[Tensor] = []
        with adding(where, shape, row_index, at, torch.zeros_like, originals):
            out, _ = _forward(model, everything, pad)
        before = _essence_logps(out.logits, essence, len(rows)) if essence else None
        original = originals[0][0].float()
    delta = torch.zeros_like(original, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=settings.lr)
    limit = settings.clamp * original.norm()
    loss_value = float("inf")
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(settings.steps):
            optimiser.zero_grad()
            with adding(where, shape, row_index, at, lambda o: delta.to(o.dtype).expand_as(o)):
                out, _ = _forward(model, everything, pad)
            logps = out.logits.float().log_softmax(-1)
            nll = torch.stack([_target_nll(logps[i], r) for i, r in targets]).mean()
            loss = nll + settings.weight_decay * delta.pow(2).sum() / original.pow(2).sum().clamp_min(1e-12)
            if before is not None:
                after = _essence_logps(out.logits, essence, len(rows))
                loss = loss + settings.kl_weight * torch.nn.functional.kl_div(
                    after, before, log_target=True, reduction="batchmean")
            loss_value = float(nll.detach())
            if loss_value < settings.stop_loss:
                break
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                norm = delta.norm()
                if norm > limit:
                    delta.mul_(limit / norm)
    finally:
        for p, flag in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
    return Delta(delta.detach(), original, loss_value)


def _target_nll(logps: Tensor, row: Row) -> Tensor:
    assert row.target_start is not None
    target = torch.tensor(row.ids[row.target_start:], device=logps.device)
    predicted = logps[row.target_start - 1: len(row.ids) - 1]
    return -predicted.gather(1, target[:, None]).mean()


def _essence_logps(logits: Tensor, essence: Sequence[Row], offset: int) -> Tensor:
    last = torch.tensor([len(r.ids) - 1 for r in essence], device=logits.device)
    index = torch.arange(offset, offset + len(essence), device=logits.device)
    return logits[index, last].float().log_softmax(-1)


def read_at(model: Any, tokenizer: Any, where: torch.nn.Module, rows: Sequence[Row]) -> Tensor:
    """``where``'s output at each row's subject position (rows × d, float32)."""
    store: list[Tensor] = []
    shape = (len(rows), max(len(r.ids) for r in rows))
    device = next(model.parameters()).device
    at = torch.tensor([r.subject for r in rows], device=device)
    with torch.no_grad(), adding(where, shape, torch.arange(len(rows), device=device), at, torch.zeros_like, store):
        _forward(model, rows, _pad_id(tokenizer))
    return store[0].float()
