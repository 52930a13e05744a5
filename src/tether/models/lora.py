"""LoRA through peft, with target modules resolved per architecture by peft itself."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tether.models.loading import LoraSettings


def apply_lora(model: PreTrainedModel, settings: LoraSettings) -> PreTrainedModel:
    """Wrap ``model`` in peft LoRA adapters; only the adapters are trainable afterwards.

    ``target_modules='attention'`` uses peft's per-architecture table of attention
    projections (q_proj/v_proj for Llama, c_attn for GPT-2, query_key_value for GPT-NeoX,
    qkv_proj for Phi-3 ...); ``'all-linear'`` adapts every linear layer except the output
    head; a list names modules explicitly.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    targets: str | list[str] | None
    if settings.target_modules == "attention":
        targets = None  # peft resolves from model.config.model_type
    else:
        targets = settings.target_modules
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
    )
    if getattr(model, "is_gradient_checkpointing", False):
        # Frozen embeddings give inputs without grad; checkpointed blocks still need a graph.
        model.enable_input_require_grads()
    return get_peft_model(model, config)  # type: ignore[return-value]
