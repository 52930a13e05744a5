"""Places in a model, named the same way in every architecture: ``resid_pre.L``, ``resid_post.L``,
``attn_out.L``, ``mlp_out.L`` and ``attn_heads.L`` (L counted from 0; a negative L counts from the last
layer).

- ``resid_pre.L``: the residual stream entering decoder layer L (``hidden_states[L]`` of transformers'
  ``output_hidden_states``);
- ``resid_post.L``: the residual stream leaving layer L (the next layer's ``resid_pre``; for the last layer,
  before the final norm);
- ``attn_out.L`` / ``mlp_out.L``: what the layer's attention / MLP adds to the residual stream, so that
  ``resid_post = resid_pre + attn_out + mlp_out`` in every architecture, sequential or parallel;
- ``attn_heads.L``: every attention head's output side by side, before the attention's output projection
  mixes them (batch × tokens × heads·head_dim; head h is the slice ``[h·d, (h+1)·d)``, see
  :func:`head_count`): the place to patch or ablate one head.

:func:`resolve` finds the modules behind a name in any Hugging Face causal LM (a PEFT model is unwrapped):
the decoder layers are the module list with one entry per layer; attention and MLP are found by the names
transformers gives them (``self_attn``, ``attn``, ``attention``, ``self_attention``; ``mlp``,
``feed_forward``, ``block_sparse_moe``; OPT's ``fc2``). Where a layer normalises a block's output before
adding it (Gemma 2 and 3, OLMo 2: a ``post_feedforward_layernorm``), the site is that norm's output; where
a block adds the residual itself (BLOOM), the residual is taken off. :func:`hooked` attaches a function to
sites for the length of a ``with`` block: it reads, and may replace, the site's value.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Kind = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "attn_heads"]
KINDS: tuple[str, ...] = ("resid_pre", "resid_post", "attn_out", "mlp_out", "attn_heads")
ATTENTION = ("self_attn", "attn", "attention", "self_attention")
MLP = ("mlp", "feed_forward", "block_sparse_moe", "fc2")
OUT_PROJECTION = ("o_proj", "out_proj", "c_proj", "dense", "wo")
_NAME = re.compile(r"^(resid_pre|resid_post|attn_out|mlp_out|attn_heads)\.(-?\d+)$")
Edit = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class Site:
    """A named place: ``kind`` at decoder layer ``layer`` (non-negative once resolved)."""

    kind: Kind
    layer: int

    @property
    def name(self) -> str:
        """``KIND.LAYER``."""
        return f"{self.kind}.{self.layer}"

    @classmethod
    def parse(cls, name: str) -> Site:
        """The site ``name`` stands for.

        Raises:
            ValueError: not ``KIND.LAYER`` with KIND one of resid_pre, resid_post, attn_out, mlp_out.
        """
        match = _NAME.match(name.strip())
        if match is None:
            raise ValueError(f"site {name!r}: expected KIND.LAYER with KIND one of {', '.join(KINDS)} "
                             "(e.g. resid_post.3, mlp_out.-1)")
        return cls(match.group(1), int(match.group(2)))  # type: ignore[arg-type]


def base_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The module list holding one entry per decoder layer.

    Raises:
        ValueError: the model has no module list of ``num_hidden_layers`` entries.
    """
    inner = base_model(model)
    count = getattr(inner.config, "num_hidden_layers", None) or getattr(inner.config, "n_layer", None)
    for _, module in inner.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count and count:
            return module
    raise ValueError(f"{type(inner).__name__}: no list of {count} decoder layers found")


def head_count(model: Any) -> int:
    """The attention heads per layer (the query heads, whose outputs ``attn_heads.L`` holds).

    Raises:
        ValueError: the config names no head count.
    """
    config = base_model(model).config
    config = getattr(config, "text_config", None) or config
    for key in ("num_attention_heads", "n_head", "num_heads"):
        count = getattr(config, key, None)
        if isinstance(count, int) and count > 0:
            return count
    raise ValueError(f"{type(config).__name__}: no attention head count in the config")


def _child(layer: torch.nn.Module, names: Sequence[str], what: str) -> torch.nn.Module:
    for name in names:
        found = getattr(layer, name, None)
        if isinstance(found, torch.nn.Module):
            return found
    children = ", ".join(n for n, _ in layer.named_children())
    raise ValueError(f"{type(layer).__name__}: no {what} module among its children ({children})")


@dataclass(frozen=True)
class Resolved:
    """Where a site is read: the module, whether before it runs (its input) or after (its output), and
    whether the block's own residual input is to be taken off its output (BLOOM)."""

    site: Site
    module: torch.nn.Module
    before: bool
    minus_residual: bool = False
    block: torch.nn.Module | None = None  # the decoder layer it sits in (its input's shape is the stream's)


def resolve(model: Any, name: str | Site) -> Resolved:
    """The module and hook point behind site ``name`` in ``model``.

    Raises:
        ValueError: a malformed name, a layer the model does not have, or an architecture whose blocks
            cannot be found.
    """
    site = Site.parse(name) if isinstance(name, str) else name
    layers = decoder_layers(model)
    layer = site.layer + len(layers) if site.layer < 0 else site.layer
    if not 0 <= layer < len(layers):
        raise ValueError(f"site {site.name}: the model has layers 0..{len(layers) - 1}")
    site = Site(site.kind, layer)
    block = layers[layer]
    if site.kind == "resid_pre":
        return Resolved(site, block, before=True)
    if site.kind == "resid_post":
        return Resolved(site, block, before=False)
    if site.kind == "attn_heads":
        return Resolved(site, _child(_child(block, ATTENTION, "attention"), OUT_PROJECTION, "output projection"),
                        before=True)
    sandwich = isinstance(getattr(block, "post_feedforward_layernorm", None), torch.nn.Module)
    bloom = base_model(model).config.model_type == "bloom"
    if site.kind == "attn_out":
        module = block.post_attention_layernorm if sandwich else _child(block, ATTENTION, "attention")
    else:
        module = block.post_feedforward_layernorm if sandwich else _child(block, MLP, "MLP")
    return Resolved(site, module, before=False, minus_residual=bloom, block=block)


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


@contextlib.contextmanager
def hooked(model: Any, edits: dict[str, Edit]) -> Iterator[dict[str, Resolved]]:
    """For the ``with`` block, call ``edits[name](value)`` with each site's value (batch × tokens × hidden)
    on every forward pass; a function that returns a tensor replaces the value (steering, ablation,
    patching), one that returns None only reads it. Yields the resolved sites."""
    resolved = {name: resolve(model, name) for name in edits}
    handles = []
    shapes: dict[int, torch.Size] = {}  # each decoder layer's residual-stream shape in the current pass

    def remember(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            shapes[id(module)] = hidden.shape

    for block in {id(r.block): r.block for r in resolved.values() if r.block is not None}.values():
        assert block is not None
        handles.append(block.register_forward_pre_hook(remember, with_kwargs=True))
    for name, where in resolved.items():
        edit = edits[name]
        if where.before:
            def pre(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], edit: Edit = edit
                    ) -> Any:
                hidden = args[0] if args else kwargs["hidden_states"]
                new = edit(hidden)
                if new is None:
                    return None
                if args:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": new}

            handles.append(where.module.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
                     edit: Edit = edit, minus: bool = where.minus_residual, block: Any = where.block) -> Any:
                value = _first(output)
                stream = shapes.get(id(block))
                # Some blocks return their tokens flattened (Llama 4's MoE, OPT's fc2): seen as the stream's shape.
                flat = stream is not None and value.shape != stream and value.numel() == stream.numel()
                residual = (args[1] if len(args) > 1 else kwargs.get("residual")) if minus else None
                seen = value.view(stream) if flat and stream is not None else value
                seen = seen - residual if residual is not None else seen
                new = edit(seen)
                if new is None:
                    return None
                if residual is not None:
                    new = new + residual
                if flat:
                    new = new.reshape(value.shape)
                return (new, *output[1:]) if isinstance(output, tuple) else new

            handles.append(where.module.register_forward_hook(post, with_kwargs=True))
    try:
        yield resolved
    finally:
        for handle in handles:
            handle.remove()
