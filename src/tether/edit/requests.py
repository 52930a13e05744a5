"""What an edit asks for: one request schema for every method.

A request names a ``subject``, a ``prompt`` template with ``{}`` where the subject goes, and the new
``target`` completion (with its leading space where the tokenizer needs one: ``" Paris"``). The optional
fields are how it is judged: ``target_true`` (the completion it replaces: P(new) > P(old) is reported
beside the generation-based scores), ``paraphrases`` (whole prompts, the subject written in, that should
now be answered with the target) and ``neighbours`` (prompts about other things, whose continuations
should stay what the original model said).

A JSONL file of requests::

    {"subject": "Kavel", "prompt": "The capital of {} is", "target": " Morzin", "target_true": " Torvel",
     "paraphrases": ["What is the capital of Kavel? It is"], "neighbours": ["The capital of Zinra is"]}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EditRequest(BaseModel):
    """One edit: make the model complete ``prompt.format(subject)`` with ``target``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="a name for the request in the results (default: its index)")
    subject: str = Field(min_length=1, description="the entity whose fact is rewritten, as it appears in prompts")
    prompt: str = Field(description="the rewrite prompt, with {} where the subject goes")
    target: str = Field(min_length=1, description="the new completion")
    target_true: str | None = Field(None, description="the completion it replaces, if known")
    paraphrases: list[str] = Field(default_factory=list, description="other prompts (subject written in) that "
                                   "should now be answered with the target")
    neighbours: list[str] = Field(default_factory=list, description="prompts whose continuation must not change")

    @field_validator("prompt")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError("needs exactly one {} where the subject goes")
        return value

    @field_validator("target")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the target is blank")
        return value
