"""``tether models``: create tiny models, and generate from any model."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Create and try models.", no_args_is_help=True)


@app.command()
def init(
    arch: str = typer.Option("llama", help="llama, qwen2, qwen3, mistral, gemma2, phi3, gpt2, gpt_neox, opt"),
    out: Path = typer.Option(..., "--out", "-o", help="directory to write the HF model into"),
    seed: int = typer.Option(0, help="initialisation seed"),
) -> None:
    """Write a tiny random-init model of an architecture (byte-level tokenizer, ChatML template).

    Example: tether models init --arch qwen3 --out runs/tiny-qwen3
    """
    from tether.models.loading import save_model
    from tether.models.tiny import build_tiny_model
    from tether.models.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    model = build_tiny_model(arch, tokenizer, seed=seed)
    save_model(model, tokenizer, out)
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"{out}: {arch}, {n:,} parameters")


@app.command()
def generate(
    model: str = typer.Option(..., "--model", "-m", help="model directory, hub id, or tiny:ARCH"),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="prompt text (repeatable)"),
    chat: bool = typer.Option(True, help="wrap each prompt as a user turn through the chat template"),
    max_new_tokens: int = typer.Option(64, help="tokens to generate at most"),
    temperature: float = typer.Option(0.0, help="0: greedy"),
    seed: int = typer.Option(0, help="sampling seed"),
) -> None:
    """Generate completions for prompts with tether's batched sampler.

    Example: tether models generate -m runs/sft-demo/model -p "What is 12 + 30?"
    """
    from tether.models.generation import GenerationSettings, HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer

    lm, tokenizer = load_model_and_tokenizer(ModelConfig(path=model))
    prompts = [[{"role": "user", "content": p}] if chat else p for p in prompt]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    for text, completion in zip(prompt, HFGenerator(lm, tokenizer).generate(prompts, settings), strict=True):
        typer.echo(f"> {text}\n{completion.text}  [{completion.finish_reason}, {len(completion.token_ids)} tokens]")
