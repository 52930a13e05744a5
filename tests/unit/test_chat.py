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


def _bos_tokenizer():
    """tether's byte-level tokenizer, made to add a BOS to plain text as Llama's and Gemma's do."""
    from tokenizers.processors import TemplateProcessing

    from tether.models.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.add_special_tokens({"bos_token": "<|bos|>"})
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<|bos|> $A",
                                                              special_tokens=[("<|bos|>", tok.bos_token_id)])
    return tok


def test_plain_text_gets_one_bos_and_a_rendered_prompt_keeps_its_own():
    from tether.models.chat import encode_prompts, encode_text

    tok = _bos_tokenizer()
    bos, hi = tok.bos_token_id, tok("hi", add_special_tokens=False)["input_ids"]
    assert tok("<|bos|>hi")["input_ids"] == [bos, bos, *hi]  # what a plain encode does to a rendered prompt
    assert encode_text(tok, "hi") == [bos, *hi]
    assert encode_text(tok, "<|bos|>hi") == [bos, *hi]
    assert encode_text(tok, "hi", special=False) == hi
    assert encode_prompts(tok, ["<|bos|>hi", "hi"]) == [[bos, *hi], [bos, *hi]]
    assert tokenize_prompt_completion(tok, "<|bos|>hi", "4").input_ids[:2] == [bos, hi[0]]


def test_continuation_logps_reads_plain_text_with_the_bos_generation_gives_it():
    import torch

    from tether.models.logprobs import continuation_logps
    from tether.models.tiny import build_tiny_model

    tok = _bos_tokenizer()
    model = build_tiny_model("llama", tok, seed=0)
    model.resize_token_embeddings(len(tok))

    def by_hand(ids, n_cont):
        with torch.no_grad():
            logps = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        return sum(float(logps[i - 1, ids[i]]) for i in range(len(ids) - n_cont, len(ids)))

    ctx, cont = tok("2+2=", add_special_tokens=False)["input_ids"], tok("4", add_special_tokens=False)["input_ids"]
    plain, rendered = continuation_logps(model, tok, ["2+2=", "2+2="], ["4", "4"], special=[True, False])
    assert plain == pytest.approx(by_hand([tok.bos_token_id, *ctx, *cont], len(cont)), abs=1e-4)
    assert rendered == pytest.approx(by_hand([*ctx, *cont], len(cont)), abs=1e-4)
    assert plain != pytest.approx(rendered, abs=1e-4)
    with pytest.raises(ValueError, match="2 special flags for 1 contexts"):
        continuation_logps(model, tok, ["2+2="], ["4"], special=[True, False])
