"""CUDA-only checks (``python -m pytest -m gpu tests/gpu`` on a machine with a GPU; CI has none).

The CUDA-graph decode step must sample exactly what the same static-cache step samples eagerly,
and what the dynamic cache samples, in fp32 and under bf16 autocast.
"""

from __future__ import annotations

import pytest
import torch

from tether.models.generation import GenerationSettings, HFGenerator

pytestmark = pytest.mark.gpu  # and collected only where CUDA is (tests/conftest.py)

if not torch.cuda.is_available():  # named on the command line of a machine without one
    pytest.skip("tests/gpu needs a CUDA device", allow_module_level=True)


def _prompts() -> list[str]:
    return [f"prompt {i} " + "word " * (i % 9) for i in range(48)]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cuda_graph_samples_what_eager_decoding_samples(tokenizer, arch):
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model(arch, tokenizer, seed=3).cuda()
    gen = HFGenerator(model, tokenizer)
    prompts = _prompts()
    seeds = list(range(len(prompts)))
    base = GenerationSettings(max_new_tokens=24, temperature=1.0, batch_size=16)
    runs = {mode: gen.generate(prompts, base.model_copy(update={"decoding": mode}), seeds=seeds)
            for mode in ("dynamic", "static", "cuda-graph", "auto")}
    graph, static, dynamic = runs["cuda-graph"], runs["static"], runs["dynamic"]
    assert [c.token_ids for c in graph] == [c.token_ids for c in static]
    assert [c.token_ids for c in runs["auto"]] == [c.token_ids for c in graph]  # auto picks the graph on CUDA
    for a, b in zip(graph, static, strict=True):
        assert a.logprobs == b.logprobs  # same kernels on the same shapes: bitwise
    agree = sum(a.token_ids == b.token_ids for a, b in zip(graph, dynamic, strict=True)) / len(prompts)
    assert agree >= 0.95, f"graph and dynamic cache agree on {agree:.0%} of completions"
    for a, b in zip(graph, dynamic, strict=True):
        if a.token_ids == b.token_ids:
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_cuda_graph_in_bf16_and_autocast_falls_back(tokenizer):
    from tether.core.errors import ConfigError
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=4).cuda()
    prompts, seeds = _prompts(), list(range(48))
    base = GenerationSettings(max_new_tokens=24, temperature=1.0, batch_size=48)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # auto decodes over the dynamic cache here
        auto = HFGenerator(model, tokenizer).generate(prompts, base, seeds=seeds)
        with pytest.raises(ConfigError, match="autocast"):
            HFGenerator(model, tokenizer).generate(prompts, base.model_copy(update={"decoding": "cuda-graph"}))
    assert all(len(c.token_ids) >= 1 for c in auto)
    gen = HFGenerator(model.to(torch.bfloat16), tokenizer)
    graph = gen.generate(prompts, base.model_copy(update={"decoding": "cuda-graph"}), seeds=seeds)
    static = gen.generate(prompts, base.model_copy(update={"decoding": "static"}), seeds=seeds)
    assert [c.token_ids for c in graph] == [c.token_ids for c in static]


def test_a_reused_graph_sees_weights_updated_in_place(tokenizer):
    from tether.models.tiny import build_tiny_model

    model = build_tiny_model("llama", tokenizer, seed=5).cuda()
    gen = HFGenerator(model, tokenizer)
    prompts, seeds = _prompts(), list(range(48))
    graph = GenerationSettings(max_new_tokens=16, temperature=1.0, batch_size=48, decoding="cuda-graph")
    gen.generate(prompts, graph, seeds=seeds)
    (decoder,) = gen._decoders.values()
    assert decoder.graph is not None
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    model.train()
    model(input_ids=torch.randint(0, 200, (4, 16), device="cuda")).logits.mean().backward()
    optimizer.step()  # in place, as in a training loop
    replayed = gen.generate(prompts, graph, seeds=seeds)
    assert list(gen._decoders.values()) == [decoder]
    eager = gen.generate(prompts, graph.model_copy(update={"decoding": "static"}), seeds=seeds)
    assert [c.token_ids for c in replayed] == [c.token_ids for c in eager]
