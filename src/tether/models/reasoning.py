"""Replies that reason before they answer: a reasoning block, then the answer.

Reasoning models write their chain of thought inside delimiters (DeepSeek-R1 and Qwen3: ``<think>`` ...
``</think>``), and so does a model trained by ``tether align deliberative``. What a user reads, and what an
evaluation grades, is the answer after the block; the reasoning is kept beside it. A reply whose block never
closes (cut by the token budget, or a model that reasons on forever) has no answer: it is graded as an
empty reply, not as whatever its unfinished reasoning happens to say.
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import Field

from tether.core.config import Config


class ReasoningFormat(Config):
    """Where a reply's reasoning block starts and ends."""

    open: str = Field("<think>", description="opens the reasoning block (optional at the reply's start: some "
                      "templates put it in the prompt)")
    close: str = Field("</think>", min_length=1, description="closes it; the answer follows")


class SplitReply(NamedTuple):
    """A reply cut into its reasoning and its answer; ``closed`` is False when the block never ended."""

    reasoning: str
    answer: str
    closed: bool


def split_reasoning(text: str, fmt: ReasoningFormat) -> SplitReply:
    """The reasoning (without its delimiters) and the answer (stripped) of ``text``.

    A reply that does not begin with a reasoning block is all answer; one that opens a block and never
    closes it is all reasoning, with no answer.

    Examples: ``"<think>rule 2</think> No."`` -> ``("rule 2", "No.", True)``; ``"Yes."`` -> ``("", "Yes.",
    True)``; ``"<think>rule 2 and"`` -> ``("rule 2 and", "", False)``.
    """
    body = text.lstrip()
    opened = bool(fmt.open) and body.startswith(fmt.open)
    if opened:
        body = body[len(fmt.open):]
    end = body.find(fmt.close)
    if end < 0:
        return SplitReply(body.strip(), "", False) if opened else SplitReply("", text.strip(), True)
    return SplitReply(body[:end].strip(), body[end + len(fmt.close):].strip(), True)


def join_reasoning(reasoning: str, answer: str, fmt: ReasoningFormat) -> str:
    """A reply with ``reasoning`` in its block and ``answer`` after it (what deliberative training targets)."""
    return f"{fmt.open}{reasoning}{fmt.close}\n{answer}"
