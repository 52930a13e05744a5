"""Contexts: text put in front of prompts (a character preamble, a seed prompt, a system prompt).

Context distillation samples with a context and trains without it; the character-first recipe
trains and amplifies *with* its seed prompts in front; evaluation can measure a model with or
without them. Which context a prompt gets is fixed by (seed, prompt index) alone, so every stage
and every process puts the same context in front of the same prompt.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from tether.core.config import Config


class ContextConfig(Config):
    """Texts to put in front of prompts, and where."""

    texts: list[str] = Field(min_length=1, description="contexts; each prompt gets one, drawn by its index")
    placement: Literal["system", "prefix"] = Field(
        "system", description="system: the system turn (replacing any); prefix: in front of the first user turn")


def with_context(prompt: str | list[dict[str, Any]], context: str, placement: str) -> str | list[dict[str, Any]]:
    """``prompt`` with ``context`` in front: as the system turn, or prefixed to the first user turn / the text."""
    if isinstance(prompt, str):
        return f"{context}\n\n{prompt}"
    messages = [dict(m) for m in prompt]
    if placement == "system":
        return [{"role": "system", "content": context}, *[m for m in messages if m["role"] != "system"]]
    for m in messages:
        if m["role"] == "user":
            m["content"] = f"{context}\n\n{m['content']}"
            break
    return messages


def context_for(cfg: ContextConfig, seed: int, index: int) -> str:
    """The context prompt ``index`` gets (fixed by the seed and the index alone)."""
    return random.Random(f"{seed}:{index}:context").choice(cfg.texts)
