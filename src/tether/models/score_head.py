"""A score head over any causal LM's backbone, for architectures transformers gives none.

Reward models, value heads and classifiers in tether are ``AutoModelForSequenceClassification``
models. transformers has no such class for some causal LMs (Cohere, Granite, Llama 4's text
model, ...). For those, :func:`register_score_head` registers a generic one with the Auto class:
the architecture's own backbone (``AutoModel``) and a bias-free linear ``score`` head read at each
row's last non-padding token, as transformers' own ``*ForSequenceClassification`` classes do. It
saves as an ordinary model directory (``config.json`` names the class
``Tether<Arch>ForSequenceClassification``, weights in safetensors); to load one, import
``tether.models.score_head`` and call :func:`register_score_head` with the config class (tether's
``load_reward_model`` does both), then ``AutoModelForSequenceClassification.from_pretrained(DIR)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

_REGISTERED: dict[type[PretrainedConfig], type[PreTrainedModel]] = {}


class GenericScoreModel(PreTrainedModel):
    """The backbone of any causal LM and a linear score head (see the module docstring)."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        self.model = AutoModel.from_config(config)
        self.score = nn.Linear(config.get_text_config(decoder=True).hidden_size, int(config.num_labels or 1),
                               bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        """The backbone's token embeddings."""
        return self.model.get_input_embeddings()  # type: ignore[no-any-return]

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the backbone's token embeddings."""
        self.model.set_input_embeddings(value)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, labels: Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutputWithPast:
        """Scores at each row's last non-padding token.  (B, T) -> logits (B, num_labels)"""
        kwargs.pop("use_cache", None)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **kwargs).last_hidden_state
        logits = self.score(hidden)                                                  # (B, T, K)
        if input_ids is None or self.config.pad_token_id is None:
            last = torch.full((logits.shape[0],), logits.shape[1] - 1, device=logits.device)
        else:  # the rightmost non-padding token, whichever side the padding is on
            real = (input_ids != self.config.pad_token_id).long()
            last = (torch.arange(input_ids.shape[1], device=input_ids.device) * real).argmax(-1)
        return SequenceClassifierOutputWithPast(logits=logits[torch.arange(logits.shape[0]), last])


def register_score_head(config_class: type[PretrainedConfig]) -> type[PreTrainedModel]:
    """Register (once) a :class:`GenericScoreModel` for ``config_class`` with
    ``AutoModelForSequenceClassification``; return the class."""
    if config_class not in _REGISTERED:
        name = config_class.__name__.removesuffix("Config")
        cls = type(f"Tether{name}ForSequenceClassification", (GenericScoreModel,), {"config_class": config_class})
        AutoModelForSequenceClassification.register(config_class, cls, exist_ok=True)
        _REGISTERED[config_class] = cls
    return _REGISTERED[config_class]


def has_score_head(config: PretrainedConfig) -> bool:
    """Whether transformers (or an earlier registration) has a sequence-classification class for ``config``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    return type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
