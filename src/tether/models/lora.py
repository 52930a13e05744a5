"""LoRA through peft, with target modules resolved per architecture by peft itself."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tether.models.loading import LoraSettings


# Attention projections for architectures missing from peft's table (peft's own wins where present).
_EXTRA_ATTENTION_MODULES: dict[str, list[str]] = {
    "phi3": ["qkv_proj", "o_proj"],
}


def attention_modules(model_type: str) -> list[str] | None:
    """The attention projection names LoRA adapts for ``model_type``; None if neither table knows it."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TABLE

    found = PEFT_TABLE.get(model_type) or _EXTRA_ATTENTION_MODULES.get(model_type)
    return list(found) if found else None


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
        targets = attention_modules(model_type)
        if targets is None:
            from tether.core.errors import UserError

            raise UserError(f"no known attention modules for architecture {model_type!r}; set "
                            "model.lora.target_modules to 'all-linear' or a list of module names")
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
