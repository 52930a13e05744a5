import math

import torch

from tether.models.generation import GenerationSettings, HFGenerator, filter_logits


def test_filter_logits_top_k_and_top_p_hand_worked():
    # probs [0.5, 0.3, 0.15, 0.05]
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: torch.isfinite(out)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
    # nucleus 0.7: 0.5 < 0.7, 0.5+0.3 >= 0.7 -> keep the first two
    assert kept(filter_logits(logits, top_p=0.7)) == [True, True, False, False]
    # nucleus 0.5 is reached by the first token alone
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.81)) == [True, True, True, False]


def test_greedy_sampler_matches_model_generate(tiny_llama, tokenizer):
    gen = HFGenerator(tiny_llama, tokenizer)
    prompts = ["hello", [{"role": "user", "content": "hi there"}], "a much longer prompt than the others"]
    settings = GenerationSettings(max_new_tokens=12, temperature=0.0)
    ours = gen.generate(prompts, settings)
    theirs = gen.generate(prompts, settings.model_copy(update={"backend": "hf-generate"}))
    assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.logprobs == __import__("pytest").approx(b.logprobs, abs=1e-4)


def test_sampling_is_seeded_and_logprobs_match_recomputation(tiny_llama, tokenizer):
    from tether.models.logprobs import completion_logps

    gen = HFGenerator(tiny_llama, tokenizer)
    settings = GenerationSettings(max_new_tokens=10, temperature=1.0, seed=5)
    first = gen.generate(["x", "yy"], settings)
    assert [c.token_ids for c in first] == [c.token_ids for c in gen.generate(["x", "yy"], settings)]
    prompt_ids = gen.encode(["x"])[0]
    ids = torch.tensor([prompt_ids + first[0].token_ids])
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[0, len(prompt_ids):] = True
    with torch.no_grad():
        again = completion_logps(tiny_llama, ids, torch.ones_like(ids), scored)
    assert math.isclose(float(again.sequence_logps), sum(first[0].logprobs), abs_tol=1e-4)


def test_stop_strings_cut_text_and_end_generation(tiny_llama, tokenizer):
    gen = HFGenerator(tiny_llama, tokenizer)
    free = gen.generate(["q"], GenerationSettings(max_new_tokens=20, temperature=0.0))[0]
    assert len(free.text) >= 3
    stop = free.text[1:3]
    cut = gen.generate(["q"], GenerationSettings(max_new_tokens=20, temperature=0.0, stop=[stop]))[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text and free.text.startswith(cut.text)
    assert len(cut.token_ids) < len(free.token_ids) or free.finish_reason == "length"


def test_eos_ends_a_completion(tokenizer):
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=0)
    settings = GenerationSettings(max_new_tokens=6, temperature=0.0)
    free = HFGenerator(model, tokenizer).generate(["q"], settings)[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 6
    # Declare the greedy second token an end-of-sequence token: generation must stop there.
    model.generation_config.eos_token_id = free.token_ids[1]
    out = HFGenerator(model, tokenizer).generate(["q"], settings)[0]
    assert out.finish_reason == "eos"
    assert out.token_ids == free.token_ids[:2]
