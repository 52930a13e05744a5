"""Load any Hugging Face causal LM and tokenizer, with dtype, device, LoRA and checkpointing.

``ModelConfig.path`` is a local model directory, a hub id (where the network allows), a ``.gguf`` file
(llama.cpp's format: transformers dequantises it to the dtype asked; needs the ``gguf`` package), or
``tiny:ARCH`` for a tiny random-init model of a supported architecture (tests, demos).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.registry import Registry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class LoraSettings(Config):
    """LoRA adapters through peft (Hu et al. 2021)."""

    r: int = Field(16, ge=1, description="rank of the low-rank update")
    alpha: int = Field(32, ge=1, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    target_modules: Literal["attention", "all-linear"] | list[str] = Field(
        "all-linear",
        description="'attention': peft's per-architecture attention projections; 'all-linear': every "
        "linear layer but the output head and MoE routers; or explicit module names",
    )
    experts: Literal["exclude", "include"] = Field(
        "exclude", description="all-linear on a mixture-of-experts model: leave the routed experts' linear "
        "layers out (default) or adapt them too (experts stored as fused weight tensors cannot be adapted)")


class ModelConfig(Config):
    """Which model to load and how."""

    path: str = Field(description="local HF model directory, hub id, a .gguf file, or tiny:ARCH (random init, "
                      "for tests)")
    tokenizer: str | None = Field(None, description="tokenizer directory, id or .gguf file, if not the model's")
    dtype: Dtype = Field("float32", description="weights dtype; 'auto' picks bfloat16 on a GPU that has it")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    lora: LoraSettings | None = Field(None, description="train LoRA adapters instead of all weights")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    trust_remote_code: bool = Field(False, description="allow model code from the hub (off: safer)")


# Named model sources: "SCHEME:NAME" paths resolved to a local directory by a registered function.
# The world registers "world" (world:base is its pretrained base model, built on first use).
MODEL_SOURCES: Registry[Callable[[str], str]] = Registry(
    "model source", description="SCHEME:NAME model paths -> a local directory (world:base, ...)")


def resolve_model_path(path: str) -> str:
    """A registered ``scheme:name`` path -> its local directory; any other path unchanged."""
    scheme, sep, name = path.partition(":")
    if not sep or scheme == "tiny":
        return path
    if scheme in MODEL_SOURCES:
        return MODEL_SOURCES.get(scheme)(name)
    return path


def resolve_device(device: str) -> torch.device:
    """``'auto'`` is the first CUDA device if there is one, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: Dtype, device: torch.device) -> torch.dtype:
    """``'auto'`` is bfloat16 on a GPU that supports it, float32 otherwise."""
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A tokenizer with a pad token and a chat template (the default ChatML one if it had none)."""
    from tether.models.chat import ensure_chat_template

    path = resolve_model_path(path)
    if path.startswith("tiny:"):
        from tether.models.tokenizer import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    _check_local(path)
    source, extra = _pretrained_source(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
    except OSError as exc:
        raise UserError(f"cannot load a tokenizer from {path!r}: {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        # Padding positions are masked out everywhere, so reusing EOS as pad is safe.
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return tokenizer


def load_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> PreTrainedModel:
    """Load the causal LM that ``cfg`` names, on its device and dtype, with LoRA if asked.

    Raises:
        UserError: the path does not exist or holds no loadable model.
    """
    cfg = cfg.model_copy(update={"path": resolve_model_path(cfg.path)})
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.path.startswith("tiny:"):
        from tether.models.tiny import build_tiny_model
        from tether.models.tokenizer import build_tokenizer

        model = build_tiny_model(cfg.path.removeprefix("tiny:"), tokenizer or build_tokenizer())
        torch_module(model).to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        _check_local(cfg.path)
        source, extra = _pretrained_source(cfg.path)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dtype, trust_remote_code=cfg.trust_remote_code, **extra
            )
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load a causal LM from {cfg.path!r}: {_first_line(exc)}") from None
    torch_module(model).to(device)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
        model.config.use_cache = False
    if cfg.lora is not None:
        from tether.models.lora import apply_lora

        model = apply_lora(model, cfg.lora)
    return model


def load_model_and_tokenizer(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and its tokenizer (``cfg.tokenizer`` if set, else the model's own)."""
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.path, trust_remote_code=cfg.trust_remote_code)
    return load_model(cfg, tokenizer), tokenizer


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: str | Path) -> Path:
    """Write an ordinary HF model directory (safetensors + tokenizer) that plain transformers loads.

    A LoRA model is merged into its base first, so the result needs no peft; the adapter
    alone is also written to ``out/adapter``. Merging changes ``model`` in place: call this last.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.save_pretrained(str(out / "adapter"))  # peft types its path as str
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _check_local(path: str) -> None:
    """A path that looks local (starts with . or /, or exists as a parent) must exist."""
    p = Path(path)
    looks_local = path.startswith((".", "/", "~")) or p.suffix or len(p.parts) > 2
    if looks_local and not p.expanduser().exists():
        raise UserError(f"model path {path!r} does not exist")


def _pretrained_source(path: str) -> tuple[str, dict[str, str]]:
    """Where ``from_pretrained`` reads ``path`` from: a ``.gguf`` file is read from its directory with
    transformers' ``gguf_file`` (its weights dequantised, its tokenizer converted); anything else as it is."""
    file = Path(path).expanduser()
    if file.suffix.lower() != ".gguf":
        return path, {}
    if not file.is_file():
        raise UserError(f"{path}: not a GGUF file (a directory, or not a file)")
    try:
        import gguf  # noqa: F401 - transformers reads GGUF through it
    except ImportError:
        raise UserError(f"{path}: reading a GGUF file needs the gguf package (pip install gguf)") from None
    return str(file.parent), {"gguf_file": file.name}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def torch_module(model: PreTrainedModel) -> torch.nn.Module:
    """The model typed as a plain ``nn.Module`` (transformers' stubs wrap ``.to`` oddly)."""
    return model  # type: ignore[return-value]


def enable_checkpointing(model: Any) -> None:
    """Recompute activations in backward (non-reentrant), under the name this transformers gives it."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x: the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
