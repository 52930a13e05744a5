"""Every architecture users bring: load -> LoRA -> log-probs -> train step -> generate -> save -> reload."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.loading import LoraSettings, ModelConfig, load_model_and_tokenizer, save_model
from tether.models.logprobs import completion_logps
from tether.models.reward import load_reward_model, sequence_scores
from tether.models.tiny import TINY_ARCHITECTURES, build_tiny_model


@pytest.mark.parametrize("arch", sorted(TINY_ARCHITECTURES))
def test_architecture_roundtrip(arch, tokenizer, tmp_path):
    base_dir = tmp_path / "base"
    save_model(build_tiny_model(arch, tokenizer, seed=0), tokenizer, base_dir)

    model, tok = load_model_and_tokenizer(
        ModelConfig(path=str(base_dir), lora=LoraSettings(r=4, alpha=8, target_modules="attention"))
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    ids = torch.randint(0, 200, (2, 10))
    attn = torch.ones_like(ids)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[:, 5:] = True
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss = -completion_logps(model, ids, attn, scored).sequence_logps.mean()
    loss.backward()
    optimizer.step()
    model.eval()
    assert torch.isfinite(loss)

    gen = HFGenerator(model, tok)
    outs = gen.generate(["hello", [{"role": "user", "content": "hi"}]],
                        GenerationSettings(max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=20))
    assert len(outs) == 2 and all(1 <= len(o.token_ids) <= 5 for o in outs)

    with torch.no_grad():
        before = completion_logps(model, ids, attn, scored).sequence_logps
    out_dir = save_model(model, tok, tmp_path / "trained")  # merges LoRA
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir)  # plain transformers, no tether, no peft
    assert AutoTokenizer.from_pretrained(out_dir).chat_template
    with torch.no_grad():
        after = completion_logps(reloaded, ids, attn, scored).sequence_logps
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)

    reward = load_reward_model(ModelConfig(path=str(out_dir)), tok)
    with torch.no_grad():
        scores = sequence_scores(reward, ids, attn)
    assert scores.shape == (2,)
    reward.save_pretrained(tmp_path / "rm")
    from transformers import AutoModelForSequenceClassification

    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        torch.testing.assert_close(sequence_scores(again, ids, attn), scores)


def test_reward_model_lora_trains_adapters_and_the_score_head(tokenizer):
    reward = load_reward_model(ModelConfig(path="tiny:llama", lora=LoraSettings(r=4, target_modules="attention")),
                               tokenizer)
    trainable = [n for n, p in reward.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", "qwen3_moe", "llama4_text", "deepseek_v3"])
@pytest.mark.parametrize("experts", ["exclude", "include"])
def test_all_linear_lora_on_mixtures_of_experts_never_wraps_a_router(arch, experts, tokenizer):
    from tether.models.lora import apply_lora, linear_targets

    model = build_tiny_model(arch, tokenizer, seed=0)
    targets, counts = linear_targets(model, experts=experts)
    routers = [n for n in targets if n.rsplit(".", 1)[-1] in ("router", "gate") and ".experts." not in n]
    assert routers == [] and not any(n.endswith("lm_head") for n in targets)
    expert_layers = [n for n in targets if ".experts." in n]
    assert (expert_layers == []) if experts == "exclude" else (expert_layers != [] or not any(
        ".experts." in n for n, m in model.named_modules() if type(m) is torch.nn.Linear))
    wrapped = apply_lora(model, LoraSettings(r=4, target_modules="all-linear", experts=experts))
    ids = torch.randint(0, 200, (2, 8))
    scored = torch.ones_like(ids, dtype=torch.bool)
    loss = -completion_logps(wrapped, ids, torch.ones_like(ids), scored).sequence_logps.mean()
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for n, p in wrapped.named_parameters() if p.requires_grad)
