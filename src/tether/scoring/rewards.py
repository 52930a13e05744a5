"""Rewards for online RL: completions -> one number each, composable as a weighted sum.

A reward is anything with the :class:`Reward` protocol; a config names one by ``kind`` (``REWARDS``: a
config class per kind, whose ``build()`` makes the reward), so a user's verifier is as much a reward as
the built-in ones. Kinds here:

- ``reward-model``: a trained reward model or ensemble (``tether train rm`` run directory or model
  directories), aggregated by ``mean``, ``min`` or ``mean - k*std``;
- ``verifier``: 1 when the completion carries the prompt's reference answer (the row's ``answer``
  column), 0 otherwise: RLVR on any dataset with answers;
- ``code-tests``: 1 when the completion's program passes the row's tests (``tests`` column) in the
  sandbox (:mod:`tether.core.sandbox`): RLVR on code;
- ``function``: a Python function ``module:name`` called as TRL calls reward functions,
  ``fn(prompts=..., completions=..., **columns) -> list[float]``;
- ``length``: ``-coef * tokens / max_tokens``, a length penalty.

Elsewhere: ``attack`` (:mod:`tether.scoring.attack`: an attacker model's reward), ``judge-verdict``
(:mod:`tether.oversight.rewards`: an arguer's reward, the judge's verdict) and the world's
``world-gold`` and ``world-verifier`` (its gold grader; :mod:`tether.world.scoring`).
"""

from __future__ import annotations

import importlib
import re
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Protocol

import torch
from pydantic import Field
from torch import Tensor

from tether.core.config import Config
from tether.core.errors import ConfigError, UserError
from tether.core.registry import Kind, Registry, kind_config
from tether.core.sandbox import Sandbox, SandboxConfig
from tether.data.records import Prompt
from tether.scoring.scorers import VERIFY_MODES, VerifyMode, verify


@dataclass(frozen=True)
class Completions:
    """What a reward scores: sampled completions with their prompts and the prompts' metadata."""

    prompts: Sequence[Prompt]
    texts: Sequence[str]
    token_counts: Sequence[int]
    metas: Sequence[dict[str, Any]]   # each prompt row's other columns (answers, the world's gold labels, ...)
    max_tokens: int                   # the sampling budget (what a length penalty is relative to)


class RewardOutput(NamedTuple):
    """One value per completion, and named parts logged beside it (e.g. an ensemble's disagreement)."""

    values: Tensor              # (N,)
    parts: dict[str, Tensor]    # name -> (N,)


class Reward(Protocol):
    """Scores completions; ``parts`` names what it logs beside its value."""

    parts: tuple[str, ...]

    def __call__(self, batch: Completions) -> RewardOutput:
        """One value per completion (and each part's)."""
        ...


class RewardConfig(Config):
    """Base of every reward's config: its registered kind, its weight in the sum, and ``build``."""

    kind: str = Field(description="registered reward kind: reward-model, verifier, function, length, attack, "
                      "world-gold, world-verifier, ...")
    weight: float = Field(1.0, description="multiplies this term in the sum")

    @abstractmethod
    def build(self) -> Reward:
        """The reward this config describes (each kind's config says how)."""


REWARDS: Registry[type[RewardConfig]] = Registry(
    "reward", description="a config class per kind ({kind: NAME, ...}); its build() makes the Reward")

# A config field holding one reward term: ``{kind: ..., ...}`` validated against its kind's config class.
RewardTerm = Annotated[RewardConfig, Kind(REWARDS)]


def reward_config(raw: Any) -> RewardConfig:
    """Validate a ``{"kind": ..., ...}`` mapping against its kind's config class."""
    return kind_config(REWARDS, raw)


class Rewards:
    """The weighted sum of the configured terms, with each term (and its parts) kept for logging."""

    def __init__(self, configs: Sequence[RewardConfig], *, max_tokens: int) -> None:
        if not configs:
            raise UserError("rewards: configure at least one reward term")
        self.configs, self.max_tokens = list(configs), max_tokens
        self.terms = [c.build() for c in self.configs]
        # A kind used twice is numbered: reward/length, reward/length-2.
        self.names = []
        for i, cfg in enumerate(self.configs):
            count = sum(c.kind == cfg.kind for c in self.configs[:i])
            self.names.append(f"reward/{cfg.kind}" + (f"-{count + 1}" if count else ""))

    def signal(self, part: str) -> str | None:
        """The logged name of the first term's ``part`` (e.g. ``disagreement``), or None if no term logs it."""
        return next((f"{name}/{part}" for name, term in zip(self.names, self.terms, strict=True)
                     if part in term.parts), None)

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str], token_counts: Sequence[int],
                 metas: Sequence[dict[str, Any]]) -> tuple[Tensor, dict[str, Tensor]]:
        """Total reward per completion, and each term per completion (``reward/KIND``, and its parts as
        ``reward/KIND/PART``: a reward model's members' ``mean`` and ``disagreement``, the signals a
        reward-hacking watch reads)."""
        batch = Completions(prompts, completions, token_counts, metas, self.max_tokens)
        total = torch.zeros(len(completions))
        logged: dict[str, Tensor] = {}
        for name, cfg, term in zip(self.names, self.configs, self.terms, strict=True):
            out = term(batch)
            logged[name] = out.values
            logged |= {f"{name}/{part}": value for part, value in out.parts.items()}
            total += cfg.weight * out.values
        return total, logged


# --- reward models --------------------------------------------------------------------------------

@REWARDS.register("reward-model")
class RewardModelConfig(RewardConfig):
    """A trained reward model, or an ensemble of them."""

    kind: Literal["reward-model"] = "reward-model"
    path: list[str] = Field(min_length=1, description="a tether train rm run directory, or model directories")
    aggregate: Literal["mean", "min", "mean-minus-std"] = Field("mean", description="how members combine")
    k: float = Field(1.0, ge=0, description="mean-minus-std: how many stds to subtract")

    def build(self) -> Reward:
        """Loads the ensemble."""
        from tether.models.reward import RewardEnsemble

        paths = self.path
        single_run = len(paths) == 1 and Path(paths[0], "record.json").is_file()
        return _RewardModel(RewardEnsemble.from_run(paths[0]) if single_run else RewardEnsemble(paths), self)


class _RewardModel:
    parts: tuple[str, ...] = ("mean", "disagreement")

    def __init__(self, ensemble: Any, cfg: RewardModelConfig) -> None:
        self.ensemble, self.cfg = ensemble, cfg

    def __call__(self, batch: Completions) -> RewardOutput:
        scores = self.ensemble.score(batch.prompts, batch.texts)
        parts = {"mean": scores.mean, "disagreement": scores.std}
        if self.cfg.aggregate == "min":
            return RewardOutput(scores.min, parts)
        if self.cfg.aggregate == "mean-minus-std":
            return RewardOutput(scores.conservative(self.cfg.k), parts)
        return RewardOutput(scores.mean, parts)


# --- verifiable answers ---------------------------------------------------------------------------

@REWARDS.register("verifier")
class VerifierRewardConfig(RewardConfig):
    """1 when a completion carries the prompt row's reference answer, else 0 (RLVR on your own data)."""

    kind: Literal["verifier"] = "verifier"
    answer_key: str = Field("answer", description="the prompt row's column holding the reference answer")
    mode: VerifyMode = Field("number", description=VERIFY_MODES)

    def build(self) -> Reward:
        """A verifier over ``answer_key``."""
        return _Verifier(self)


class _Verifier:
    parts: tuple[str, ...] = ()

    def __init__(self, cfg: VerifierRewardConfig) -> None:
        self.cfg = cfg

    def __call__(self, batch: Completions) -> RewardOutput:
        values = []
        for index, (text, meta) in enumerate(zip(batch.texts, batch.metas, strict=True)):
            reference = meta.get(self.cfg.answer_key)
            if reference is None:
                # Zero for a missing answer would train on noise without a word: the data is wrong.
                raise UserError(f"reward verifier: prompt {meta.get('id', index)!r} has no {self.cfg.answer_key!r} "
                                "column to check against (set answer_key to the column that holds the answer)")
            try:
                values.append(float(verify(text, str(reference), self.cfg.mode)))
            except ValueError:
                raise UserError(f"reward verifier: prompt {meta.get('id', index)!r}: reference "
                                f"{reference!r} is not a number (mode {self.cfg.mode})") from None
        return RewardOutput(torch.tensor(values), {})


# --- code that passes tests ---------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str:
    """The program in a completion: its last fenced code block (plain or marked ``python``), else the text."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


@REWARDS.register("code-tests")
class CodeTestsRewardConfig(RewardConfig):
    """1 when the completion's program passes the prompt row's tests, else 0: the program (its last fenced code
    block) and the tests (Python, e.g. asserts) run together in the sandbox (:mod:`tether.core.sandbox`: no
    network, bounded CPU, memory, processes and time), and pass when they exit 0 in time."""

    kind: Literal["code-tests"] = "code-tests"
    tests_key: str = Field("tests", description="the prompt row's column holding the tests (Python source)")
    sandbox: SandboxConfig = Field(default_factory=lambda: SandboxConfig(time_s=10, cpu_s=5),
                                   description="limits of each run")
    parallel: int = Field(2, ge=1, description="runs at once")

    def build(self) -> Reward:
        """A code runner; checks the sandbox works here first (RLVR on code must not run unsandboxed)."""
        sandbox = Sandbox(self.sandbox)
        sandbox.check()
        return _CodeTests(self, sandbox)


class _CodeTests:
    parts: tuple[str, ...] = ("killed",)  # the share of programs ended by the deadline or a limit's signal

    def __init__(self, cfg: CodeTestsRewardConfig, sandbox: Sandbox) -> None:
        self.cfg, self.sandbox = cfg, sandbox

    def __call__(self, batch: Completions) -> RewardOutput:
        programs = []
        for index, (text, meta) in enumerate(zip(batch.texts, batch.metas, strict=True)):
            tests = meta.get(self.cfg.tests_key)
            if not isinstance(tests, str) or not tests.strip():
                raise UserError(f"reward code-tests: prompt {meta.get('id', index)!r} has no {self.cfg.tests_key!r} "
                                "column of tests (Python source) to run")
            programs.append(f"{extract_code(text)}\n\n{tests}\n")
        with ThreadPoolExecutor(self.cfg.parallel) as pool:
            results = list(pool.map(self.sandbox.run, programs))
        return RewardOutput(torch.tensor([float(r.ok) for r in results]),
                            {"killed": torch.tensor([float(r.timed_out or r.signal is not None) for r in results])})


# --- a user's function ----------------------------------------------------------------------------

@REWARDS.register("function")
class FunctionRewardConfig(RewardConfig):
    """A Python function, called as TRL calls reward functions: ``fn(prompts=[...], completions=[...],
    **columns) -> list[float]`` (each other column of the prompt rows as a list)."""

    kind: Literal["function"] = "function"
    function: str = Field(description="module:name of the function (importable where tether runs)")

    def build(self) -> Reward:
        """Imports the function."""
        module, _, name = self.function.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name) if name else None
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"reward function {self.function!r}: {exc}") from None
        if not callable(fn):
            raise ConfigError(f"reward function {self.function!r}: expected module:name of a function")
        return _Function(fn, self.function)


class _Function:
    parts: tuple[str, ...] = ()

    def __init__(self, fn: Callable[..., Sequence[float]], name: str) -> None:
        self.fn, self.name = fn, name

    def __call__(self, batch: Completions) -> RewardOutput:
        columns = sorted({key for meta in batch.metas for key in meta} - {"prompt", "completions", "prompts"})
        values = self.fn(prompts=list(batch.prompts), completions=list(batch.texts),
                         **{key: [meta.get(key) for meta in batch.metas] for key in columns})
        if len(values) != len(batch.texts):
            raise UserError(f"reward function {self.name}: returned {len(values)} values for "
                            f"{len(batch.texts)} completions")
        return RewardOutput(torch.tensor([float(v) for v in values]), {})


# --- length ---------------------------------------------------------------------------------------

@REWARDS.register("length")
class LengthRewardConfig(RewardConfig):
    """A length penalty: ``-coef * tokens / max_tokens``."""

    kind: Literal["length"] = "length"
    coef: float = Field(1.0, description="penalty of a reply that uses the whole sampling budget")

    def build(self) -> Reward:
        """The penalty."""
        return _Length(self.coef)


class _Length:
    parts: tuple[str, ...] = ()

    def __init__(self, coef: float) -> None:
        self.coef = coef

    def __call__(self, batch: Completions) -> RewardOutput:
        return RewardOutput(torch.tensor([-self.coef * n / batch.max_tokens for n in batch.token_counts]), {})
