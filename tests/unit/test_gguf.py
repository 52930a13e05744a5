"""A model given as a .gguf file (llama.cpp's format) loads through the same ModelConfig as a directory: a tiny
llama written as GGUF here, the way llama.cpp's converter writes one (query and key rows permuted, a byte-level
BPE vocabulary), comes back with the same tokens and the same logits; a missing file is one clear line."""

import gguf
import numpy as np
import pytest
import torch

from tether.core.errors import UserError
from tether.models.loading import ModelConfig, load_model_and_tokenizer
from tether.models.tiny import build_tiny_model
from tether.models.tokenizer import build_tokenizer


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's query/key row order (transformers undoes it when it reads the file)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_llama_gguf(model, tokenizer, path) -> None:
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if token.startswith("<|") else gguf.TokenType.NORMAL
                            for token, _ in vocab])
    writer.add_token_scores([0.0] * len(vocab))
    writer.add_token_merges([])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
        for ours, theirs in names.items():
            writer.add_tensor(f"blk.{i}.{ours}.weight", weights[layer + theirs + ".weight"])
        writer.add_tensor(f"blk.{i}.attn_q.weight",
                          _permute(weights[layer + "self_attn.q_proj.weight"], config.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight",
                          _permute(weights[layer + "self_attn.k_proj.weight"], config.num_key_value_heads))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_file_loads_with_its_tokenizer_and_the_same_logits(tmp_path):
    tokenizer = build_tokenizer()
    source = build_tiny_model("llama", tokenizer).eval()
    write_llama_gguf(source, tokenizer, tmp_path / "tiny.gguf")
    model, loaded = load_model_and_tokenizer(ModelConfig(path=str(tmp_path / "tiny.gguf"), device="cpu"))
    text = loaded.apply_chat_template([{"role": "user", "content": "hello there, world"}], tokenize=False,
                                      add_generation_prompt=True)
    assert text == tokenizer.apply_chat_template([{"role": "user", "content": "hello there, world"}],
                                                 tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text)["input_ids"]
    assert loaded(text)["input_ids"] == ids
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token is not None
    with torch.no_grad():
        expected = source(torch.tensor([ids])).logits
        got = model.eval()(torch.tensor([ids])).logits
    assert torch.allclose(expected, got, atol=1e-5)


def test_a_missing_gguf_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model_and_tokenizer(ModelConfig(path=str(tmp_path / "nowhere.gguf")))
    (tmp_path / "model.gguf").mkdir()
    with pytest.raises(UserError, match="not a GGUF file"):
        load_model_and_tokenizer(ModelConfig(path=str(tmp_path / "model.gguf")))
