"""The vLLM backend's adapter, against a stand-in with vLLM's interface (vLLM itself needs a CUDA
machine and is not installed here).

The stand-in keeps vLLM's names where tether touches them — ``LLM(**engine_args)``,
``SamplingParams`` (keyword-only: a misspelt field fails), ``generate([{"prompt_token_ids"}],
sampling_params=[...], use_tqdm=False)`` returning request outputs whose ``outputs[0]`` has
``token_ids``, ``text``, ``logprobs`` ([{token_id: Logprob}]), ``finish_reason`` and
``stop_reason``, the in-process weight loader and ``reset_prefix_cache`` — and samples with
tether's own sampler, so a correct adapter reproduces the sampler exactly.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from tether.models.generation import GenerationSettings, HFGenerator, build_generator

ENGINE_ARGS = {"model", "tokenizer", "dtype", "seed", "gpu_memory_utilization", "max_model_len", "enforce_eager",
               "distributed_executor_backend", "logprobs_mode"}


@dataclass(kw_only=True)
class SamplingParams:  # the fields tether sets, as vllm/sampling_params.py (0.33) names them
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class _Weights:
    def __init__(self, model: Any) -> None:
        self.model, self.loads = model, 0

    def load_weights(self, weights: Any) -> None:
        state = self.model.state_dict()
        for name, tensor in weights:
            state[name].copy_(tensor)
            self.loads += 1


class LLM:
    instances: list[LLM] = []

    def __init__(self, model: str, **engine_args: Any) -> None:
        from tether.models.loading import ModelConfig, load_model_and_tokenizer

        unknown = set(engine_args) - ENGINE_ARGS
        assert not unknown, f"not an engine argument tether should pass: {unknown}"
        assert engine_args["logprobs_mode"] == "raw_logprobs"
        self.engine_args = engine_args
        self.model, tokenizer = load_model_and_tokenizer(ModelConfig(path=model))
        self.sampler = HFGenerator(self.model, tokenizer)
        self.weights = _Weights(self.model)
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
            driver_worker=types.SimpleNamespace(model_runner=types.SimpleNamespace(model=self.weights))))
        self.prefix_resets = 0
        LLM.instances.append(self)

    def reset_prefix_cache(self) -> bool:
        self.prefix_resets += 1
        return True

    def generate(self, prompts: list[dict[str, list[int]]], sampling_params: list[SamplingParams], *,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        assert use_tqdm is False and len(prompts) == len(sampling_params)
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            assert params.n == 1 and params.logprobs == 0
            settings = GenerationSettings(max_new_tokens=params.max_tokens, temperature=params.temperature,
                                          top_k=params.top_k, top_p=params.top_p, stop=params.stop or [])
            (done,) = self.sampler._sample([prompt["prompt_token_ids"]], settings, torch.Generator(), [params.seed])
            stop_reason = next((s for s in settings.stop if done.finish_reason == "stop"), None)
            outputs.append(RequestOutput(prompt["prompt_token_ids"], [CompletionOutput(
                0, done.text, done.token_ids, sum(done.logprobs),
                [{t: Logprob(lp, 1)} for t, lp in zip(done.token_ids, done.logprobs, strict=True)],
                "length" if done.finish_reason == "length" else "stop", stop_reason)]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    LLM.instances = []
    return module


def _policy(tokenizer):
    from tether.models.tiny import build_tiny_model

    return build_tiny_model("llama", tokenizer, seed=7)


def test_completions_match_the_in_process_sampler(fake_vllm, tokenizer, tmp_path):
    policy = _policy(tokenizer)
    policy.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    free = HFGenerator(policy, tokenizer).generate(["q"], GenerationSettings(max_new_tokens=12), seeds=[3])[0]
    settings = GenerationSettings(max_new_tokens=12, backend="vllm",
                                  stop=[free.text[2:4]] if len(free.text) > 4 else [])
    vllm_gen = build_generator(policy, tokenizer, settings, path=str(tmp_path / "m"), seed=1)
    prompts = ["q", [{"role": "user", "content": "hi there"}], "a longer prompt"]
    ours = vllm_gen.generate(prompts, settings, seeds=[3, 4, 5])
    sampler = HFGenerator(policy, tokenizer).generate(prompts, settings.model_copy(update={"backend": "sampler"}),
                                                      seeds=[3, 4, 5])
    assert [c.token_ids for c in ours] == [c.token_ids for c in sampler]
    assert [c.finish_reason for c in ours] == [c.finish_reason for c in sampler]
    assert [c.text for c in ours] == [c.text for c in sampler]
    for a, b in zip(ours, sampler, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-6)
        assert a.entropies == []  # vLLM reports none
    (engine,) = LLM.instances
    assert engine.engine_args["seed"] == 1
    assert engine.weights.loads == len(policy.state_dict())  # copied once, before the first generation


def test_weights_are_copied_only_after_they_change(fake_vllm, tokenizer, tmp_path):
    policy = _policy(tokenizer)
    policy.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    settings = GenerationSettings(max_new_tokens=8, backend="vllm")
    gen = build_generator(policy, tokenizer, settings, path=str(tmp_path / "m"))
    gen.generate(["q"], settings, seeds=[0])
    (engine,) = LLM.instances
    count = len(policy.state_dict())
    assert engine.weights.loads == count and engine.prefix_resets == 1
    gen.generate(["q"], settings, seeds=[0])
    assert engine.weights.loads == count  # unchanged weights are not copied again
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)  # an in-place update, as an optimizer makes
    after = gen.generate(["q", "r"], settings, seeds=[0, 1])
    assert engine.weights.loads == 2 * count and engine.prefix_resets == 2
    sampler = HFGenerator(policy, tokenizer).generate(["q", "r"], settings.model_copy(update={"backend": "sampler"}),
                                                      seeds=[0, 1])
    assert [c.token_ids for c in after] == [c.token_ids for c in sampler]
    gen.generate(["q"], settings, seeds=[0])
    assert engine.prefix_resets == 2  # nothing changed since


def test_grpo_with_the_vllm_backend_reproduces_the_sampler_run(fake_vllm, tmp_path):
    """The recipe end to end: if the weights were not synced before each rollout, the rollouts
    after the first update would come from stale weights and the runs would part."""
    from tether.core.config import load_config
    from tether.train import grpo

    def run(name: str, backend: str) -> list[dict[str, Any]]:
        grpo.run(load_config(grpo.GRPOConfig, None, [
            "model.path=tiny:llama", "data.train=builtin:world-prompts", "generation.max_new_tokens=12",
            "group_size=4", "loop.batch_size=8", "optim.lr=1e-2", "rewards=[{kind: length}]", "loop.max_steps=3",
            f"generation.backend={backend}", "seed=0", f"out={tmp_path / name}"]))
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    via_vllm, in_process = run("vllm", "vllm"), run("sampler", "sampler")
    (engine,) = LLM.instances
    assert engine.prefix_resets == 3  # before each of the 3 rollouts (the first: the policy over the checkpoint)
    for a, b in zip(via_vllm, in_process, strict=True):
        assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
        assert a["completion_tokens"] == b["completion_tokens"]
        assert "entropy" not in a and "entropy" in b


def test_a_missing_vllm_is_a_clear_user_error(monkeypatch, tokenizer):
    from tether.core.errors import UserError

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(UserError, match="pip install vllm"):
        build_generator(_policy(tokenizer), tokenizer, GenerationSettings(backend="vllm"), path="unused")


def test_the_in_process_generator_refuses_the_vllm_backend(tokenizer):
    from tether.core.errors import ConfigError

    with pytest.raises(ConfigError, match="RL recipes"):
        HFGenerator(_policy(tokenizer), tokenizer).generate(["q"], GenerationSettings(backend="vllm"))
