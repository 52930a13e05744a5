"""Constitutions: written principles a model critiques, revises and judges against.

A constitution is a YAML file (shipped ones: ``tether/configs/constitutions/``) of principles,
each with three texts, as in Bai et al. 2022, "Constitutional AI":

- ``critique_request``: asks for a critique of a response against the principle;
- ``revision_request``: asks for a rewrite that follows the principle (after the critique);
- ``preference_question``: asks which of two responses follows it better (AI feedback).

Templates may use ``{request}`` (the last user turn), ``{response}``, ``{conversation}`` (the
prompt's turns as ``Role: text`` lines) and, in ``preference_question`` under the ``choice``
judge, ``{a}`` and ``{b}``. Two layouts say where the request and the response go:

- ``conversation`` (the paper's): the response is the assistant's turn and the critique request
  the next user turn, so the critique continues the conversation;
- ``quoted``: one fresh user turn quotes the request and the response (the world's corpus
  teaches its base model this form, so that is the form its weak critique ability answers).

How a judge turns a principle into a preference (``judge``):

- ``choice``: the preference question with both responses as options (A) and (B); the
  probability of each option label after ``answer_prefix``, averaged over both orders to
  cancel position bias (the paper's multiple-choice form);
- ``critique``: each response is critiqued on its own, scored by
  log p(``ok``) - log p(``flawed``) under the critique request, and the two scores compared
  with a logistic (Bradley-Terry); any model that can critique can judge, without ever having
  seen a comparison.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tether.core.config import Config, load_config, placeholders
from tether.core.errors import ConfigError
from tether.core.recipes import CONFIG_KINDS

Layout = Literal["conversation", "quoted"]
_FIELDS = {"request", "response", "conversation", "a", "b"}


class Principle(Config):
    """One principle: how to critique, revise and compare against it."""

    name: str = Field(description="short identifier, kept in every record the principle produced")
    critique_request: str = Field(description="asks for a critique; may use {request}, {response}, {conversation}")
    revision_request: str = Field(description="asks for a revision after the critique")
    preference_question: str = Field(description="which of two responses follows the principle better; "
                                     "the 'choice' judge fills {a} and {b}")
    weight: float = Field(1.0, gt=0, description="relative chance of being sampled")


class Judge(Config):
    """How AI feedback reads a preference out of the judge model (see the module docstring)."""

    mode: Literal["choice", "critique"] = Field("choice", description="multiple-choice log-probs, or critique scores")
    options: tuple[str, str] = Field(("A", "B"), description="choice: the two option labels")
    answer_prefix: str = Field("The answer is: (", description="choice: the judge's turn starts with this; "
                               "the next token is read")
    ok: str = Field("The response follows the principle.", description="critique: a critique that finds no fault")
    flawed: str = Field("The response breaks the principle.", description="critique: a critique that finds one")


@CONFIG_KINDS.register("constitutions")
class Constitution(Config):
    """A named set of principles, a layout, and a judge."""

    name: str
    description: str = ""
    layout: Layout = Field("conversation", description="conversation (critique continues the chat) or quoted")
    principles: list[Principle] = Field(min_length=1)
    judge: Judge = Field(default_factory=Judge)

    @model_validator(mode="after")
    def _check(self) -> Constitution:
        names = [p.name for p in self.principles]
        if len(set(names)) != len(names):
            raise ValueError(f"principle names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
        for p in self.principles:
            for key in ("critique_request", "revision_request", "preference_question"):
                unknown = placeholders(getattr(p, key)) - _FIELDS
                if unknown:
                    raise ValueError(f"principle {p.name!r}: {key} uses unknown placeholder(s) "
                                     f"{sorted(unknown)}; known: {sorted(_FIELDS)}")
            if self.layout == "quoted" and "{response}" not in p.critique_request:
                raise ValueError(f"principle {p.name!r}: the quoted layout needs {{response}} in critique_request")
            if self.judge.mode == "choice" and not {"a", "b"} <= placeholders(p.preference_question):
                raise ValueError(f"principle {p.name!r}: the choice judge needs {{a}} and {{b}} in "
                                 "preference_question")
        return self

    def principle(self, name: str) -> Principle:
        """The principle called ``name``."""
        for p in self.principles:
            if p.name == name:
                return p
        raise ConfigError(f"constitution {self.name!r} has no principle {name!r}; "
                          f"it has {', '.join(p.name for p in self.principles)}")

    def sample(self, rng: random.Random) -> Principle:
        """A principle drawn by weight."""
        return rng.choices(self.principles, weights=[p.weight for p in self.principles])[0]


def load_constitution(spec: str | Path) -> Constitution:
    """A constitution from a YAML file or a shipped name (``hhh`` for ``constitutions/hhh``)."""
    text = str(spec)
    shipped = text if "/" in text or Path(text).is_file() or text.endswith((".yaml", ".yml")) \
        else f"constitutions/{text}"
    return load_config(Constitution, shipped)


# --- turning principles into messages -----------------------------------------------------------

Messages = list[dict[str, str]]


def as_messages(prompt: str | Sequence[dict[str, Any]]) -> Messages:
    """A prompt as chat messages (plain text becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def last_request(prompt: Messages) -> str:
    """The last user turn's text."""
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else ""


def conversation_text(prompt: Messages) -> str:
    """The prompt's turns as ``Role: text`` lines (system turns left out: they instruct, they are not said)."""
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt if m["role"] != "system")


def _fill(template: str, prompt: Messages, response: str, **extra: str) -> str:
    values = {"request": last_request(prompt), "response": response, "conversation": conversation_text(prompt),
              **extra}
    return template.format(**{k: v for k, v in values.items() if k in placeholders(template)})


def critique_messages(constitution: Constitution, principle: Principle, prompt: Messages,
                      response: str) -> Messages:
    """The conversation whose next assistant turn is the critique."""
    request = _fill(principle.critique_request, prompt, response)
    if constitution.layout == "quoted":
        return [{"role": "user", "content": request}]
    return [*prompt, {"role": "assistant", "content": response}, {"role": "user", "content": request}]


def revision_messages(constitution: Constitution, principle: Principle, prompt: Messages, response: str,
                      critique: str) -> Messages:
    """The conversation whose next assistant turn is the revision."""
    return [*critique_messages(constitution, principle, prompt, response),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": _fill(principle.revision_request, prompt, response)}]


def choice_messages(principle: Principle, prompt: Messages, a: str, b: str) -> Messages:
    """The multiple-choice question, as one user turn (the judge's answer prefix is added when scoring)."""
    return [{"role": "user", "content": _fill(principle.preference_question, prompt, "", a=a, b=b)}]
