"""Directions in the residual stream, and what a model does when one is taken out or put in.

- :func:`mean_difference`: the direction from one set of activations' mean to another's (Arditi et al.
  2024's refusal direction is the mean over harmful prompts minus the mean over harmless ones, read at the
  last prompt token);
- :func:`ablation` and :func:`addition`: site edits (:func:`tether.interp.sites.hooked`) that project a
  direction out of, or add it to, a site's value at every position or only at the prompt's end;
- :func:`ablated` and :func:`added`: the edits applied the way the intervention is defined: directional
  ablation takes the direction out of everything that writes to the residual stream (the embeddings at
  ``resid_pre.0``, then every layer's attention and MLP outputs), so it never appears anywhere; activation
  addition adds it at one layer's input, at every position or only where the reply begins;
- :func:`orthogonalise`: the same ablation written into the weights (the embedding and every attention and
  MLP output projection, biases included: ``W ← W − r̂ r̂ᵀ W``), so the edited model is a plain HF model
  any tool loads; :func:`save_orthogonalised` writes it as a new model directory.

The weight edit is exact where a layer adds its blocks' projections straight to the stream. Where a block's
output is normalised again before it is added (Gemma 2 and 3, OLMo 2's sandwich norms), or the embeddings
are normalised before the first layer (BLOOM), an output free of the direction is not free of it after the
norm; those models are refused with the reason, and the hooked ablation serves them instead.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from tether.interp.sites import Edit, base_model, decoder_layers, hooked, resolve

# The names transformers gives the last projection of an attention or MLP block, the one whose output is
# added to the residual stream.
Positions = Literal["all", "prompt-end"]
WRITERS = ("o_proj", "out_proj", "dense", "c_proj", "down_proj", "fc2", "fc_out", "dense_4h_to_h", "w2", "wo")


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``mean(positive) − mean(negative)`` over rows (rows × width each), in float32.

    Raises:
        ValueError: either side has no rows, or the widths differ.
    """
    if positive.ndim != 2 or negative.ndim != 2 or not len(positive) or not len(negative):
        raise ValueError("mean_difference needs rows × width activations on both sides, at least one row each")
    if positive.shape[1] != negative.shape[1]:
        raise ValueError(f"widths differ: {positive.shape[1]} and {negative.shape[1]}")
    return positive.float().mean(0) - negative.float().mean(0)


def unit(direction: torch.Tensor) -> torch.Tensor:
    """``direction`` scaled to length 1.

    Raises:
        ValueError: the zero vector has no direction.
    """
    norm = direction.float().norm()
    if norm == 0:
        raise ValueError("the zero vector has no direction")
    return direction.float() / norm


def ablation(direction: torch.Tensor, *, span: int = 0) -> Edit:
    """A site edit that removes ``direction``'s component, ``x − (x·r̂) r̂``: at every position (``span`` 0), or
    only at the last ``span`` positions of a forward pass over more than one token — with left padding, the
    prompt's last tokens (a chat template's post-instruction tokens, where the reply is decided) — leaving the
    tokens before them and the tokens then generated one at a time alone.

    Raises:
        ValueError: ``span`` is negative.
    """
    if span < 0:
        raise ValueError(f"span must be 0 (every position) or a number of last positions, not {span}")
    r = unit(direction)

    def edit(value: torch.Tensor) -> torch.Tensor | None:
        d = r.to(value.device, value.dtype)
        if not span:
            return value - (value @ d).unsqueeze(-1) * d
        if value.shape[-2] == 1:
            return None
        edited = value.clone()
        tail = edited[..., -span:, :]
        edited[..., -span:, :] = tail - (tail @ d).unsqueeze(-1) * d
        return edited
    return edit


def addition(direction: torch.Tensor, coefficient: float = 1.0, *, positions: Positions = "all") -> Edit:
    """A site edit that adds ``coefficient × direction`` (the direction as given: a difference of means brings
    its own size). ``positions``: ``all``, or ``prompt-end``: only the last position of a forward pass over
    more than one token — with left padding, as tether's generator pads, the last prompt token, where the
    model decides how to begin its reply; the tokens it then generates one at a time are left alone."""
    def edit(value: torch.Tensor) -> torch.Tensor | None:
        shift = coefficient * direction.to(value.device, value.dtype)
        if positions == "all":
            return value + shift
        if value.shape[-2] == 1:
            return None
        edited = value.clone()
        edited[..., -1, :] += shift
        return edited
    return edit


def writer_sites(model: Any) -> list[str]:
    """The sites through which everything enters the residual stream: ``resid_pre.0`` (the embeddings),
    then each layer's ``attn_out`` and ``mlp_out``."""
    layers = len(decoder_layers(model))
    return ["resid_pre.0", *(f"{kind}.{layer}" for layer in range(layers) for kind in ("attn_out", "mlp_out"))]


@contextlib.contextmanager
def ablated(model: Any, direction: torch.Tensor, *, span: int = 0) -> Iterator[None]:
    """For the ``with`` block, ``direction`` is projected out of every write to the residual stream (so out
    of the stream at every layer and position; with ``span``, at the prompt's last ``span`` positions only,
    as :func:`ablation` takes it)."""
    edit = ablation(direction, span=span)
    with hooked(model, {site: edit for site in writer_sites(model)}):
        yield


@contextlib.contextmanager
def added(model: Any, direction: torch.Tensor, layer: int, coefficient: float = 1.0, *,
          positions: Positions = "all") -> Iterator[None]:
    """For the ``with`` block, ``coefficient × direction`` is added to the residual stream entering
    ``layer`` (at the ``positions`` :func:`addition` takes)."""
    with hooked(model, {f"resid_pre.{layer}": addition(direction, coefficient, positions=positions)}):
        yield


def _project_rows(weight: torch.Tensor, r: torch.Tensor, out_dim: int) -> None:
    """Take ``r`` out of the output side of ``weight`` in place (``out_dim``: which axis is the output)."""
    d = r.to(weight.device, weight.dtype)
    if out_dim == 0:  # Linear: (out, in)
        weight.sub_(torch.outer(d, d @ weight))
    else:  # Conv1D (GPT-2) and embeddings: (in, out)
        weight.sub_(torch.outer(weight @ d, d))


def _linear_writers(block: torch.nn.Module, hidden: int) -> list[tuple[torch.nn.Module, int]]:
    """The projections inside ``block`` whose output is ``hidden`` wide and goes to the stream, each with
    its weight's output axis."""
    found = []
    modules = [("", block), *block.named_modules()] if isinstance(block, torch.nn.Linear) else block.named_modules()
    for name, module in modules:
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and module.out_features == hidden and (leaf in WRITERS or not name):
            found.append((module, 0))
        elif type(module).__name__ == "Conv1D" and leaf in WRITERS and module.weight.shape[1] == hidden:
            found.append((module, 1))
    return found


def _fused_experts(block: torch.nn.Module, hidden: int) -> list[tuple[torch.nn.Parameter, int]]:
    """Expert output weights stored as one 3-D parameter (experts × ...): the hidden-wide axis is the output."""
    found = []
    for name, param in block.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if param.ndim == 3 and leaf in WRITERS:
            if param.shape[1] == hidden and param.shape[2] != hidden:
                found.append((param, 1))
            elif param.shape[2] == hidden and param.shape[1] != hidden:
                found.append((param, 2))
            else:
                raise ValueError(f"{name}: cannot tell which axis of {tuple(param.shape)} is the output")
    return found


@torch.no_grad()
def orthogonalise(model: Any, direction: torch.Tensor) -> Any:
    """Write the ablation of ``direction`` into ``model``'s weights, in place; returns the model. Tied input
    and output embeddings are untied first (the output side is left as it was).

    Raises:
        ValueError: the architecture normalises a block's output before adding it to the stream, or a
            block's output projection cannot be found.
    """
    inner = base_model(model)
    hidden = inner.config.hidden_size if hasattr(inner.config, "hidden_size") else inner.config.n_embd
    r = unit(direction)
    if r.numel() != hidden:
        raise ValueError(f"the direction has {r.numel()} entries; the model's residual stream has {hidden}")
    layers = decoder_layers(model)
    for layer in layers:
        if isinstance(getattr(layer, "post_feedforward_layernorm", None), torch.nn.Module):
            raise ValueError(f"{inner.config.model_type}: its layers normalise a block's output before adding it "
                             "(sandwich norms), so a weight edit is not the ablation; use the hooked ablation")
    if any("embeddings_layernorm" in name or name.endswith("embed_norm") for name, _ in inner.named_modules()):
        raise ValueError(f"{inner.config.model_type}: its embeddings are normalised before the first layer, so a "
                         "weight edit is not the ablation; use the hooked ablation")
    output = inner.get_output_embeddings()
    embedding = inner.get_input_embeddings()
    if output is not None and output.weight is embedding.weight:
        output.weight = torch.nn.Parameter(embedding.weight.detach().clone())
        inner.config.tie_word_embeddings = False
        if hasattr(inner.config, "get_text_config"):
            inner.config.get_text_config().tie_word_embeddings = False
    _project_rows(embedding.weight.data, r, 1)
    # Learned position embeddings (GPT-2, OPT, BLOOM has none) also write to the stream before layer 0.
    for name, module in inner.named_modules():
        if isinstance(module, torch.nn.Embedding) and module is not embedding and module.weight.shape[1] == hidden \
                and any(key in name for key in ("wpe", "position")):
            _project_rows(module.weight.data, r, 1)
    for index in range(len(layers)):
        for kind in ("attn_out", "mlp_out"):
            module = resolve(model, f"{kind}.{index}").module
            linear = _linear_writers(module, hidden)
            fused = _fused_experts(module, hidden)
            if kind == "attn_out" and len(linear) > 1:
                linear = linear[-1:]  # the attention's last projection writes; earlier hidden-wide ones read
            if not linear and not fused:
                raise ValueError(f"{kind}.{index}: no output projection found in {type(module).__name__}")
            for writer, axis in linear:
                _project_rows(writer.weight.data, r, axis)
                if getattr(writer, "bias", None) is not None:
                    writer.bias.data.sub_((writer.bias.data @ r.to(writer.bias.dtype)) * r.to(writer.bias.dtype))
            for param, axis in fused:
                d = r.to(param.device, param.dtype)
                if axis == 1:  # experts × hidden × inner, each expert used as a Linear weight
                    param.data.sub_(torch.einsum("h,ei->ehi", d, torch.einsum("h,ehi->ei", d, param.data)))
                else:  # experts × inner × hidden
                    param.data.sub_(torch.einsum("eih,h->ei", param.data, d).unsqueeze(-1) * d)
    return model


def save_orthogonalised(model: Any, tokenizer: Any, direction: torch.Tensor, out: str | Path) -> Path:
    """A new HF model directory at ``out``: ``model`` (a copy; the one passed in is left as it was) with
    ``direction`` orthogonalised out of its weights, its tokenizer, and ``direction.safetensors``.

    Raises:
        FileExistsError: ``out`` already holds something.
    """
    import copy

    from safetensors.torch import save_file

    path = Path(out)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty; choose a new directory")
    edited = orthogonalise(copy.deepcopy(base_model(model)), direction)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    edited.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    save_file({"direction": direction.float().contiguous()}, str(partial / "direction.safetensors"))
    if path.exists():
        path.rmdir()  # empty, checked above
    partial.replace(path)
    return path
