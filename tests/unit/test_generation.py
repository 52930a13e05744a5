import math

import pytest
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


def _mixed_prompts() -> list:
    return ["q", "a much longer prompt than the others, with padding to its left", [
        {"role": "user", "content": "hi there"}], "yy", "what is the capital of the moon"]


def test_static_cache_decoding_matches_the_dynamic_cache(tokenizer):
    """The static-cache path (the one a CUDA graph replays) samples the same tokens, with the same
    log-probs, ends and finish reasons, for left-padded batches of several architectures."""
    import pytest

    from tether.models.tiny import build_tiny_model

    for arch in ("llama", "gpt2", "qwen3"):
        gen = HFGenerator(build_tiny_model(arch, tokenizer, seed=1), tokenizer)
        prompts = _mixed_prompts() * 2
        seeds = list(range(len(prompts)))
        dynamic = GenerationSettings(max_new_tokens=16, temperature=1.0, batch_size=4, decoding="dynamic")
        free = gen.generate(prompts, dynamic, seeds=seeds)
        # End tokens that are sampled: make two of the free run's early tokens "EOS", and one a stop string.
        gen.eos_ids = sorted({free[0].token_ids[2], free[3].token_ids[4]})
        stop = [free[1].text[3:5]] if len(free[1].text) >= 5 else []
        for settings in (dynamic, dynamic.model_copy(update={"stop": stop})):
            ours = gen.generate(prompts, settings, seeds=seeds)
            static = gen.generate(prompts, settings.model_copy(update={"decoding": "static"}), seeds=seeds)
            assert [c.token_ids for c in static] == [c.token_ids for c in ours], arch
            assert [c.finish_reason for c in static] == [c.finish_reason for c in ours]
            assert [c.text for c in static] == [c.text for c in ours]
            for a, b in zip(static, ours, strict=True):
                assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
                assert a.entropies == pytest.approx(b.entropies, abs=1e-5)
        assert {c.finish_reason for c in ours} >= {"eos"}, "the test must exercise EOS"


def test_static_decoding_refuses_what_it_cannot_run(tokenizer):
    import pytest

    from tether.core.errors import ConfigError
    from tether.models.static_decode import StaticDecoder, static_decoding_supported
    from tether.models.tiny import build_tiny_model

    sliding = build_tiny_model("gemma2", tokenizer)
    assert not static_decoding_supported(sliding)
    gen = HFGenerator(sliding, tokenizer)
    auto = gen.generate(["q"], GenerationSettings(max_new_tokens=4))  # auto falls back to the dynamic cache
    assert len(auto[0].token_ids) >= 1
    with pytest.raises(ConfigError, match="static-cache support"):
        gen.generate(["q"], GenerationSettings(max_new_tokens=4, decoding="static"))
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecoder(build_tiny_model("llama", tokenizer), 1, 8, graph=True)


def test_static_decoders_are_reused_while_the_weights_stay_in_place(tokenizer):
    import pytest

    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=2)
    gen = HFGenerator(model, tokenizer)
    static = GenerationSettings(max_new_tokens=8, temperature=1.0, batch_size=5, decoding="static")
    dynamic = static.model_copy(update={"decoding": "dynamic"})
    prompts, seeds = _mixed_prompts(), list(range(5))
    gen.generate(prompts, static, seeds=seeds)
    (first,) = gen._decoders.values()
    with torch.no_grad():  # an optimizer step: the same tensors, new values
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    again = gen.generate(prompts, static, seeds=seeds)
    assert list(gen._decoders.values()) == [first]
    assert [c.token_ids for c in again] == [c.token_ids for c in gen.generate(prompts, dynamic, seeds=seeds)]
    model.to(torch.float64)  # new tensors: the old cache (and any graph) must not serve them
    assert not first.fits(model)
    fresh = gen.generate(prompts, static, seeds=seeds)
    assert list(gen._decoders.values()) != [first]
    reference = gen.generate(prompts, dynamic, seeds=seeds)
    assert [c.token_ids for c in fresh] == [c.token_ids for c in reference]
    for a, b in zip(fresh, reference, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-9)
    for size in range(1, 8):  # at most keep_decoders shapes are kept
        gen.generate(prompts[:1] * size, static.model_copy(update={"batch_size": size}))
    assert len(gen._decoders) == gen.keep_decoders


def test_equal_prompts_share_one_prefill_and_sample_as_they_would_alone(tiny_llama, tokenizer, monkeypatch):
    import tether.models.generation as generation

    prompts = ["tell me", "x", "tell me", "tell me", "x"]
    settings = GenerationSettings(max_new_tokens=12, temperature=1.0, batch_size=8)
    calls = []
    forward = tiny_llama.forward

    def counted(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_llama, "forward", counted)
    shared = HFGenerator(tiny_llama, tokenizer).generate(prompts, settings, seeds=[1, 2, 3, 4, 5])
    assert calls[0][0] == 2  # the prefill ran the two distinct prompts
    monkeypatch.setattr(generation, "prefix_sharing_supported", lambda *a, **k: False)
    calls.clear()
    alone = HFGenerator(tiny_llama, tokenizer).generate(prompts, settings, seeds=[1, 2, 3, 4, 5])
    assert calls[0][0] == 5
    assert [c.token_ids for c in shared] == [c.token_ids for c in alone]
    for a, b in zip(shared, alone, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_inverse_cdf_sampling_draws_the_distribution_and_never_a_cut_token():
    from tether.models.generation import inverse_cdf_sample

    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0]]).expand(100_000, 5)
    counts = torch.bincount(inverse_cdf_sample(probs, g), minlength=5) / 100_000
    assert counts[1] == 0 and counts[4] == 0  # zero-probability tokens (top-k / top-p cuts) never drawn
    torch.testing.assert_close(counts, probs[0], atol=0.006, rtol=0)  # ~4 standard errors
    one_hot = torch.zeros(3, 7)
    one_hot[torch.arange(3), torch.tensor([6, 0, 3])] = 1.0
    assert inverse_cdf_sample(one_hot, g).tolist() == [6, 0, 3]


@pytest.mark.parametrize("backend", ["sampler", "hf-generate"])
def test_on_token_reports_each_prompts_tokens_in_order_under_its_own_index(tiny_llama, tokenizer, backend):
    gen = HFGenerator(tiny_llama, tokenizer)
    # Prompts of different lengths are reordered and batched by length: indices must still be the caller's.
    prompts = ["a much longer prompt than the others", "hi", [{"role": "user", "content": "hello"}]]
    settings = GenerationSettings(max_new_tokens=9, temperature=1.0, seed=3, batch_size=2, backend=backend)
    reported: dict[int, list[int]] = {0: [], 1: [], 2: []}
    completions = gen.generate(prompts, settings, on_token=lambda i, token: reported[i].append(token))
    assert [reported[i] for i in range(3)] == [c.token_ids for c in completions]
    assert [c.token_ids for c in gen.generate(prompts, settings)] == [c.token_ids for c in completions]
