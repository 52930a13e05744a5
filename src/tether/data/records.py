"""Typed records, one per dataset kind, in the field's formats.

- SFT: ``{"messages": [{"role", "content"}, ...]}`` or ``{"prompt", "completion"}``.
- Preference: ``{"prompt", "chosen", "rejected"}``; each a string (plain text) or messages
  (conversational). TRL's implicit-prompt form (``chosen``/``rejected`` as whole
  conversations sharing a prefix, no ``prompt``) is accepted and split at the shared prefix.
- Unpaired feedback (KTO): ``{"prompt", "completion", "label"}``.
- Prompts (RL, evaluation): ``{"prompt"}``.

A record tokenized for training is a :class:`TokenizedExample`: ids and which of them the loss sees.

Extra columns are kept (``extra="allow"``): users' datasets carry ids, sources and
metadata, and the world's prompts carry their gold labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.core.registry import Registry

Role = Literal["system", "user", "assistant", "tool", "developer"]

# What a model is asked: plain text, or chat messages ({"role", "content"} mappings) a chat template renders.
Messages = Sequence[dict[str, Any]]
Prompt = str | Messages


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="allow")
    role: Role
    content: str


Text = str | list[Message]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, extra columns included."""
        return self.model_dump(mode="json", exclude_none=True)


class SFTRecord(_Record):
    """A demonstration: a conversation, or a prompt with its completion."""

    messages: list[Message] | None = None
    prompt: Text | None = None
    completion: Text | None = None

    @model_validator(mode="after")
    def _one_form(self) -> SFTRecord:
        if self.messages is None and (self.prompt is None or self.completion is None):
            raise ValueError("needs 'messages', or both 'prompt' and 'completion'")
        if self.messages is not None and not any(m.role == "assistant" for m in self.messages):
            raise ValueError("'messages' has no assistant turn to train on")
        return self

    def prompt_and_reply(self) -> tuple[Any, Any]:
        """(prompt, demonstrated reply): a conversation's turns before its last assistant turn and that turn's
        text; a prompt-completion record as it is (as plain data: strings or message dicts)."""
        if self.messages is not None:
            messages = [m.model_dump() for m in self.messages]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            return messages[:last], messages[last]["content"]
        prompt = self.prompt if isinstance(self.prompt, str) else [m.model_dump() for m in self.prompt or []]
        completion = (self.completion if isinstance(self.completion, str)
                      else [m.model_dump() for m in self.completion or []])
        return prompt, completion


class PreferenceRecord(_Record):
    """A preference pair: ``chosen`` is preferred to ``rejected`` as a reply to ``prompt``."""

    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = Field(None, description="optional strength of the preference (reward-model margin)")

    @model_validator(mode="before")
    @classmethod
    def _implicit_prompt(cls, data: Any) -> Any:
        # TRL's implicit-prompt format: split the shared leading turns off as the prompt.
        if isinstance(data, dict) and "prompt" not in data:
            chosen, rejected = data.get("chosen"), data.get("rejected")
            if isinstance(chosen, list) and isinstance(rejected, list):
                shared = 0
                while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
                    shared += 1
                if shared:
                    return {**data, "prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}
        return data


class UnpairedRecord(_Record):
    """A single completion labelled desirable (True) or undesirable (False), as KTO uses."""

    prompt: Text
    completion: Text
    label: bool


class PromptRecord(_Record):
    """A prompt to generate from (RL rollouts, evaluation)."""

    prompt: Text


RECORD_KINDS: Registry[type[BaseModel]] = Registry(
    "record kind", description="a dataset row format: sft, preference, unpaired, prompt, ...")
RECORD_KINDS.register("sft")(SFTRecord)
RECORD_KINDS.register("preference")(PreferenceRecord)
RECORD_KINDS.register("unpaired")(UnpairedRecord)
RECORD_KINDS.register("prompt")(PromptRecord)


class TokenizedExample(NamedTuple):
    """Token ids of one example and which of them are trained on (or scored)."""

    input_ids: list[int]
    loss_mask: list[bool]  # True on completion / assistant tokens
