"""Rollouts through vLLM (GPU), behind the same :class:`~tether.models.generation.Generator` interface.

Chosen with ``generation.backend: vllm``; ``vllm`` is imported only then (it is not a
dependency: ``pip install vllm`` on a CUDA machine). The engine runs in this process, next to
the policy being trained ("colocate", as TRL calls it): its weights are refreshed from the
policy before a generation whenever the policy's parameters changed since the last one (torch
counts in-place writes per tensor, so an optimizer step is seen without comparing values).

Conventions kept identical to the in-process sampler:
- log-probs are of the *raw* distribution (vLLM's ``logprobs_mode="raw_logprobs"``, its default):
  log p(token | context) at temperature 1 with no top-k / top-p, what a trainer recomputes;
- one seed per prompt (``SamplingParams.seed``): a completion depends on its prompt and seed,
  not on how prompts are batched or split over processes;
- finish reasons: ``eos`` (EOS or a stop token), ``stop`` (a stop string, cut from the text),
  ``length``. vLLM returns no per-token entropies; completions carry none, and the RL signals
  then leave ``entropy`` out rather than log a zero.

Not measured here: this project's machines cannot run vLLM (see the README); the adapter is
tested against a stand-in with vLLM's interface (tests/unit/test_vllm_backend.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.data.records import Prompt
from tether.models.chat import encode_prompts

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tether.models.generation import Completion, GenerationSettings


class VLLMSettings(Config):
    """The vLLM engine behind ``generation.backend: vllm``."""

    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0, description="share of GPU memory vLLM may take "
                                          "(the policy, reference and optimizer need the rest when colocated)")
    max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion; None: the model's")
    dtype: str = Field("auto", description="weights dtype inside vLLM")
    enforce_eager: bool = Field(False, description="no CUDA graphs in vLLM (slower; for debugging)")
    sync_weights: bool = Field(True, description="copy the policy's weights into vLLM before a generation when "
                               "they changed (off: sample the checkpoint vLLM loaded)")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise UserError("generation.backend=vllm needs vLLM on a CUDA machine: pip install vllm "
                        "(or use backend: sampler)") from exc
    return vllm


class VLLMGenerator:
    """A :class:`~tether.models.generation.Generator` over a vLLM engine in this process.

    ``model``: the policy whose weights vLLM serves (loaded from ``model_path``, then kept in
    sync with ``model``'s parameters); ``model_path`` must hold the same architecture as an HF
    directory (vLLM builds its own copy from it).
    """

    def __init__(self, model_path: str, tokenizer: PreTrainedTokenizerBase, settings: VLLMSettings | None = None, *,
                 model: PreTrainedModel | None = None, seed: int = 0, llm: Any = None) -> None:
        self.vllm = _import_vllm()
        self.tokenizer, self.model = tokenizer, model
        self.settings = settings or VLLMSettings()
        if llm is None:
            # One engine per process, driven by this process's torch.distributed ranks (accelerate sets them).
            for name, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                                  ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29533")):
                os.environ.setdefault(name, default)
            llm = self.vllm.LLM(
                model=model_path, tokenizer=model_path, dtype=self.settings.dtype, seed=seed,
                gpu_memory_utilization=self.settings.gpu_memory_utilization,
                max_model_len=self.settings.max_model_len, enforce_eager=self.settings.enforce_eager,
                distributed_executor_backend="external_launcher", logprobs_mode="raw_logprobs")
        self.llm = llm
        # Copied at the first generation whatever the checkpoint held: a resumed run's policy is not its checkpoint.
        self._synced: tuple[int, ...] | None = None

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids per prompt, exactly as the in-process sampler encodes them."""
        return encode_prompts(self.tokenizer, prompts)

    def sync(self) -> bool:
        """Copy the policy's weights into vLLM if they changed since the last copy; whether it copied."""
        if self.model is None or not self.settings.sync_weights:
            return False
        versions = _versions(self.model)
        if versions == self._synced:
            return False
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        for name, param in _named_weights(self.model):
            engine_model.load_weights([(name, param.detach())])
        self.llm.reset_prefix_cache()  # cached prefixes hold the old weights' key/values
        self._synced = versions
        return True

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings, *,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        """Complete every prompt (one completion each, in order)."""
        from tether.models.generation import Completion

        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError("per-prompt seeds need one seed per prompt")
        self.sync()
        encoded = self.encode(prompts)
        params = [self._params(settings, None if seeds is None else seeds[i], i) for i in range(len(encoded))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in encoded], sampling_params=params,
                                    use_tqdm=False)
        if len(outputs) != len(encoded):  # never drop or misalign silently
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(encoded)} prompts")
        completions = []
        for out in outputs:
            sample = out.outputs[0]
            ids = list(sample.token_ids)
            logps = [_sampled_logprob(step, token) for step, token in zip(sample.logprobs or [], ids, strict=False)]
            completions.append(Completion(text=sample.text, token_ids=ids, logprobs=logps,
                                          finish_reason=_finish_reason(sample.finish_reason, sample.stop_reason)))
        return completions

    def _params(self, settings: GenerationSettings, seed: int | None, index: int) -> Any:
        return self.vllm.SamplingParams(
            n=1, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
            max_tokens=settings.max_new_tokens, stop=list(settings.stop) or None,
            seed=seed if seed is not None else settings.seed + index, logprobs=0)


def _versions(model: PreTrainedModel) -> tuple[int, ...]:
    """torch's per-tensor write counters of the parameters: any in-place update changes one."""
    return tuple(p._version for p in model.parameters())


def _named_weights(model: PreTrainedModel) -> list[tuple[str, Any]]:
    """Parameter names as the checkpoint names them (what vLLM's ``load_weights`` expects); under
    LoRA the adapters are merged into a copy of each base weight first."""
    if hasattr(model, "merge_and_unload"):  # a peft model: vLLM serves the merged weights
        import copy

        model = copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]
    return list(model.state_dict().items())


def _sampled_logprob(step: dict[int, Any], token: int) -> float:
    """vLLM's per-step {token id: Logprob} always holds the sampled token."""
    return float(step[token].logprob)


def _finish_reason(reason: str | None, stop_reason: int | str | None) -> Literal["eos", "stop", "length"]:
    if reason == "length":
        return "length"
    if isinstance(stop_reason, str):
        return "stop"
    return "eos"  # EOS (stop_reason None) or a stop token id
