"""Tiny random-init models of the architectures users bring, built from configs (no downloads).

Used by tests (the architecture sweep), demos, and anyone who wants to check a pipeline's
mechanics in seconds before pointing it at a real model.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tether.core.registry import Registry

# Small enough to run a step in milliseconds on a CPU; each keeps the structural features
# of its family (grouped-query attention, head_dim overrides, soft-capping, fused qkv ...).
_GQA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024)
TINY_ARCHITECTURES: Registry[dict[str, Any]] = Registry(
    "tiny architecture", description="a transformers model type and the config of its tiny random-init model")
for _arch, _config in (
    ("llama", dict(_GQA)),
    ("qwen2", dict(_GQA)),
    ("qwen3", dict(_GQA, head_dim=16)),
    ("mistral", dict(_GQA, sliding_window=None)),
    ("gemma2", dict(_GQA, head_dim=16, query_pre_attn_scalar=16, sliding_window=64)),
    ("phi3", dict(_GQA)),
    ("gpt2", dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024)),
    ("gpt_neox", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=1024)),
    ("opt", dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=64,
                 max_position_embeddings=1024)),
    ("gemma", dict(_GQA, head_dim=16)),
    ("gemma3_text", dict(_GQA, head_dim=16, sliding_window=64, query_pre_attn_scalar=16)),
    ("stablelm", dict(_GQA)),
    ("falcon", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, new_decoder_architecture=True,
                    num_kv_heads=2, max_position_embeddings=1024)),
    ("phi", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=1024)),
    ("olmo2", dict(_GQA)),
    ("cohere", dict(_GQA)),        # no sequence-classification class in transformers: tether's own score head
    ("granite", dict(_GQA)),       # likewise
    ("smollm3", dict(_GQA)),
    ("gptj", dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024, rotary_dim=8)),
    ("bloom", dict(hidden_size=64, n_layer=2, n_head=4)),
    ("gpt_bigcode", dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024)),
    # Mixtures of experts: routed experts, shared experts, a router that is a Linear subclass (Llama 4).
    ("mixtral", dict(_GQA, num_local_experts=4, num_experts_per_tok=2)),
    ("qwen2_moe", dict(_GQA, moe_intermediate_size=32, shared_expert_intermediate_size=64, num_experts=4,
                       num_experts_per_tok=2)),
    ("qwen3_moe", dict(_GQA, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2)),
    ("llama4_text", dict(_GQA, head_dim=16, intermediate_size_mlp=128, num_local_experts=4,
                         num_experts_per_tok=1, interleave_moe_layer_step=1)),
    ("deepseek_v3", dict(_GQA, num_key_value_heads=4, moe_intermediate_size=32, n_routed_experts=4,
                         num_experts_per_tok=2,
                         n_shared_experts=1, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8,
                         qk_nope_head_dim=8, v_head_dim=16, first_k_dense_replace=1, n_group=1, topk_group=1)),
):
    TINY_ARCHITECTURES.register(_arch)(_config)


def tiny_config(arch: str, tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> Any:
    """A transformers config for a tiny ``arch`` model sized to ``tokenizer``'s vocabulary."""
    kwargs = dict(TINY_ARCHITECTURES.get(arch))
    kwargs.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    kwargs.update(overrides)
    return AutoConfig.for_model(arch, **kwargs)


def build_tiny_model(arch: str, tokenizer: PreTrainedTokenizerBase, *, seed: int = 0,
                     **overrides: Any) -> PreTrainedModel:
    """A randomly initialised tiny causal LM of ``arch``, deterministic in ``seed``."""
    import torch

    config = tiny_config(arch, tokenizer, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()  # as from_pretrained returns it: dropout off until a trainer turns it on
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
