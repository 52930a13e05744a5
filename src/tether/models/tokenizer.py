"""Tokenizers tether builds itself: byte-level BPE, with a chat template.

User models bring their own tokenizer. These are for models tether creates: tiny
random-init models for tests and demos, and (later) the world's base model.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = ["<|endoftext|>", PAD_TOKEN, "<|im_start|>", EOS_TOKEN]

# ChatML, the most widely shared template. Used for tether-built tokenizers and as the
# documented fallback for a user's tokenizer that has none (see tether.models.chat).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(texts: Iterable[str] | None = None, *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens and chat template.

    Args:
        texts: corpus to learn merges from; ``None`` gives the 256 bytes and no merges
            (deterministic, no training; enough for tests).
        vocab_size: target size including bytes and special tokens, when ``texts`` is given.

    Returns:
        A fast tokenizer whose ``eos_token`` is ``<|im_end|>`` (the end of an assistant turn).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if texts is None:
        vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tokenizer.add_special_tokens(SPECIAL_TOKENS)
    else:
        tokenizer = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet, show_progress=False
        )
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, padding_side="left"
    )
    wrapped.chat_template = DEFAULT_CHAT_TEMPLATE
    return wrapped
