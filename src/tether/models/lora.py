"""LoRA through peft, with target modules resolved per architecture by peft itself."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tether.models.loading import LoraSettings


log = logging.getLogger(__name__)

# Attention projections for architectures missing from peft's table (peft's own wins where present).
_EXTRA_ATTENTION_MODULES: dict[str, list[str]] = {
    "phi3": ["qkv_proj", "o_proj"],
}


def attention_modules(model_type: str) -> list[str] | None:
    """The attention projection names LoRA adapts for ``model_type``; None if neither table knows it."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TABLE

    found = PEFT_TABLE.get(model_type) or _EXTRA_ATTENTION_MODULES.get(model_type)
    return list(found) if found else None


# Leaf names of attention projections, looked for in the model itself when neither table knows its type.
_ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv",
                    "query", "key", "value", "out_proj", "dense")
# Output heads (never adapted by all-linear: the vocabulary / score projection), and MoE routers: a router
# picks experts, and some (Llama 4's) are Linear subclasses whose forward returns a tuple.
_HEADS = ("lm_head", "score", "classifier", "embed_out", "output")
_ROUTER_NAMES = ("router", "gate")
_EXPERT_CONTAINERS = ("experts",)


def linear_targets(model: Any, *, experts: str = "exclude") -> tuple[list[str], dict[str, int]]:
    """The full names of the linear layers ``all-linear`` adapts, and how many of each leaf name.

    Plain ``nn.Linear`` leaves only (subclasses may change what forward returns), never an output
    head or an MoE router; experts (layers under an ``experts`` container) only with ``experts='include'``.
    """
    from torch import nn

    names: list[str] = []
    counts: dict[str, int] = {}
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:  # exactly Linear: a router subclass with its own forward stays out
            continue
        parts = name.split(".")
        leaf = parts[-1]
        if leaf in _HEADS or leaf in _ROUTER_NAMES and _in_moe_block(model, parts):
            continue
        if experts == "exclude" and any(p in _EXPERT_CONTAINERS for p in parts[:-1]):
            continue
        names.append(name)
        counts[leaf] = counts.get(leaf, 0) + 1
    return names, counts


def _in_moe_block(model: Any, parts: list[str]) -> bool:
    """Whether the module ``parts`` names sits beside experts (its parent holds an ``experts`` child)."""
    parent = model.get_submodule(".".join(parts[:-1])) if len(parts) > 1 else model
    return any(child in _EXPERT_CONTAINERS for child, _ in parent.named_children())


def _found_attention(model: Any) -> list[str] | None:
    from torch import nn

    leaves = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    found = [n for n in _ATTENTION_NAMES[:4] if n in leaves] or [n for n in _ATTENTION_NAMES[4:] if n in leaves]
    return found or None


def apply_lora(model: PreTrainedModel, settings: LoraSettings, *, scalar_head: bool = False) -> PreTrainedModel:
    """Wrap ``model`` in peft LoRA adapters; only the adapters are trainable afterwards.

    ``target_modules='attention'`` uses peft's per-architecture table of attention
    projections (q_proj/v_proj for Llama, c_attn for GPT-2, query_key_value for GPT-NeoX,
    qkv_proj for Phi-3 ...); ``'all-linear'`` adapts every linear layer except the output
    head; a list names modules explicitly. ``scalar_head`` is for reward / value models: their
    score head stays trainable (peft's sequence-classification task).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    targets: str | list[str] | None
    if settings.target_modules == "attention":
        model_type = model.config.model_type
        targets = attention_modules(model_type) or _found_attention(model)
        if targets is None:
            from tether.core.errors import UserError

            raise UserError(f"no known attention modules for architecture {model_type!r}; set "
                            "model.lora.target_modules to 'all-linear' or a list of module names")
    elif settings.target_modules == "all-linear":
        targets, counts = linear_targets(model, experts=settings.experts)
        if not targets:
            from tether.core.errors import UserError

            raise UserError(f"all-linear found no plain linear layer to adapt in {type(model).__name__}; name "
                            "model.lora.target_modules explicitly")
        log.info("LoRA adapts %d linear layers (%s; MoE experts %sd, routers and output heads never)",
                 len(targets), ", ".join(f"{k} x{v}" for k, v in counts.items()), settings.experts)
    else:
        targets = settings.target_modules
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if scalar_head else TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
    )
    if getattr(model, "is_activation_checkpointing", False):
        # Frozen embeddings give inputs without grad; checkpointed blocks still need a graph.
        model.enable_input_require_grads()
    with warnings.catch_warnings():
        # peft reads transformers' deprecated ``is_gradient_checkpointing`` alias; the warning is peft's to
        # fix and says nothing to a tether user.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)  # type: ignore[return-value]
