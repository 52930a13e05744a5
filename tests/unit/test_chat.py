import pytest

from tether.core.errors import DataError
from tether.models.chat import ensure_chat_template, tokenize_conversation, tokenize_prompt_completion


def _masked_text(tokenizer, example):
    return tokenizer.decode([t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m])


def test_multi_turn_masks_assistant_turns_only(tokenizer):
    messages = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    example = tokenize_conversation(tokenizer, messages)
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    assert _masked_text(tokenizer, example) == "hello<|im_end|>\n4<|im_end|>\n"


def test_prompt_completion_plain_text_appends_eos(tokenizer):
    example = tokenize_prompt_completion(tokenizer, "2+2=", "4")
    assert _masked_text(tokenizer, example) == "4<|im_end|>"
    assert example.loss_mask[:4] == [False] * 4


def test_prompt_completion_conversational(tokenizer):
    example = tokenize_prompt_completion(tokenizer, [{"role": "user", "content": "q"}], "a")
    assert tokenizer.decode(example.input_ids).endswith("<|im_start|>assistant\na<|im_end|>\n")
    assert _masked_text(tokenizer, example) == "a<|im_end|>\n"


def test_template_that_is_not_prefix_stable_is_refused(tokenizer):
    # A template that renders the last message differently breaks prefix rendering.
    tok = tokenizer
    original = tok.chat_template
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}"
    try:
        with pytest.raises(DataError, match="not prefix-stable"):
            tokenize_conversation(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}])
    finally:
        tok.chat_template = original


def test_default_template_given_to_tokenizer_without_one(tokenizer):
    from tether.models.tokenizer import DEFAULT_CHAT_TEMPLATE, build_tokenizer

    bare = build_tokenizer()
    bare.chat_template = None
    ensure_chat_template(bare)
    assert bare.chat_template == DEFAULT_CHAT_TEMPLATE
