"""Chat templates and turning conversations into token ids with training masks.

Conventions (the same as TRL's):
- A *conversational* prompt (a list of ``{"role", "content"}`` messages) is rendered with
  the tokenizer's chat template; a *plain-text* prompt is used as it is.
- Tokenizers without a chat template get :data:`DEFAULT_CHAT_TEMPLATE` (ChatML:
  ``<|im_start|>role\\ncontent<|im_end|>\\n``), with a warning, so conversations still render.
- Prompt and completion are tokenized separately and concatenated, so the boundary is
  exact and matches generation (where the prompt is tokenized alone and the model continues).
- Plain-text completions get the EOS token appended; templated ones end as the template ends a turn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tether.core.errors import DataError
from tether.data.records import Messages, Prompt, TokenizedExample
from tether.models.tokenizer import DEFAULT_CHAT_TEMPLATE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give ``tokenizer`` the default ChatML template if it has none of its own."""
    if not getattr(tokenizer, "chat_template", None):
        log.warning("tokenizer has no chat template; using tether's default ChatML template")
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def render(tokenizer: PreTrainedTokenizerBase, messages: Messages, *, add_generation_prompt: bool) -> str:
    """The chat template's text for ``messages``."""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return str(text)


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> str:
    """A prompt ready for generation: plain text as is, messages rendered with the assistant turn opened.

    Messages that end with an assistant turn are a reply begun for the model (a prefill): the template
    renders that turn left open, and the model continues it (``continue_final_message``, as in transformers).
    """
    if isinstance(prompt, str):
        return prompt
    if prompt and prompt[-1]["role"] == "assistant":
        return str(tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                                 continue_final_message=True))
    return render(tokenizer, prompt, add_generation_prompt=True)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, *, special: bool = True) -> list[int]:
    """``text``'s token ids as a model reads it from its start: with the tokenizer's special tokens (its BOS,
    where it adds one) when ``special`` is on, unless the text already opens with the BOS text (a chat template
    rendered to text brings its own; a second BOS is a sequence the model never saw)."""
    bos = getattr(tokenizer, "bos_token", None)
    special = special and not (isinstance(bos, str) and bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids a generator starts from, per prompt: plain text gets the tokenizer's special tokens (once),
    chat templates bring their own."""
    return [encode_text(tokenizer, prompt_text(tokenizer, p), special=isinstance(p, str)) for p in prompts]


def completion_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completion: str | Messages) -> str:
    """The text that follows ``prompt_text(prompt)`` when the model answers ``completion``."""
    if isinstance(prompt, str):
        if not isinstance(completion, str):
            raise DataError("a plain-text prompt needs a plain-text completion, got messages")
        return completion + (tokenizer.eos_token or "")
    turns = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else list(completion)
    before = render(tokenizer, prompt, add_generation_prompt=True)
    full = render(tokenizer, [*prompt, *turns], add_generation_prompt=False)
    if not full.startswith(before):
        raise DataError("the chat template is not prefix-stable: the prompt's rendering is not a prefix of "
                        "the conversation's, so the completion cannot be located")
    return full[len(before):]


def tokenize_prompt_completion(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completion: str | Messages
) -> TokenizedExample:
    """Ids of prompt + completion, with the mask on completion tokens only."""
    p_text = prompt_text(tokenizer, prompt)
    c_text = completion_text(tokenizer, prompt, completion)
    # Plain-text prompts get the tokenizer's BOS (if it adds one); templates write their own.
    p_ids = encode_text(tokenizer, p_text, special=isinstance(prompt, str))
    c_ids = tokenizer(c_text, add_special_tokens=False)["input_ids"]
    return TokenizedExample(list(p_ids) + list(c_ids), [False] * len(p_ids) + [True] * len(c_ids))


def tokenize_conversation(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> TokenizedExample:
    """Ids of a multi-turn conversation with the mask on every assistant turn (and only there).

    The conversation is split at each assistant turn's boundaries (found by rendering
    prefixes of the conversation) and each piece is tokenized on its own.
    """
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not before.startswith(done) or not upto.startswith(before):
            raise DataError("the chat template is not prefix-stable, so assistant turns cannot be masked")
        pieces += [(before[len(done):], False), (upto[len(before):], True)]
        done = upto
    rest = render(tokenizer, messages, add_generation_prompt=False)
    pieces.append((rest[len(done):], False))
    ids: list[int] = []
    mask: list[bool] = []
    for text, trained in pieces:
        if not text:
            continue
        piece_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        mask += [trained] * len(piece_ids)
    return TokenizedExample(ids, mask)
