"""Attacks: goals (harmful requests) -> adversarial prompts, composable.

- A **goal** is one harmful request with its harm category and whatever a scorer needs to judge a
  reply to it (the world's gold item; nothing for a user's file).
- A **template library** (YAML; shipped: ``tether/configs/jailbreaks/default.yaml``) holds jailbreak
  templates as data: each a ``kind`` and a text with ``{request}`` (and ``{shots}`` for many-shot,
  filled from a dataset of harmful question / answer pairs).
- A **template attack** renders one template around a request that converters
  (:mod:`tether.redteam.converters`) have first encoded, with the converters' decoding instruction
  in front: ``role-play+base64`` is the role-play template around a base64-encoded request.
- **Best-of-N** (Hughes et al. 2024, "Best-of-N jailbreaking") samples N random augmentations of
  the request (word scrambling, random capitals, character noise at strength ``sigma``) before a
  template attack renders it; a goal falls when any attempt succeeds (hit@N).

Every attack is a pure function of (goals, seed): the prompts it produces are reproducible and each
carries its goal, its kind and its attempt index, so attack success rates can be sliced by kind,
category and attempt.

An attack is anything with the :class:`Attack` protocol; a config names one by ``kind`` (``ATTACKS``: a
config class per kind, whose ``build()`` makes the attack): ``template``, ``best-of-n`` here, ``gcg`` in
:mod:`tether.redteam.gcg`, and whatever a plugin registers.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, model_validator

from tether.core.config import Config, load_config, placeholders
from tether.core.errors import ConfigError
from tether.core.recipes import CONFIG_KINDS
from tether.core.registry import Kind, Registry
from tether.data.records import Prompt
from tether.redteam.converters import CONVERTERS, convert


@dataclass(frozen=True)
class Goal:
    """One harmful request to attack with; ``subject`` names what it asks for (the world's hazard), so
    many-shot prompts never show a goal its own answer."""

    id: str
    request: str
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    subject: str = ""


@dataclass(frozen=True)
class Shot:
    """One answered harmful question for many-shot prompts; ``source``: the subject it answers."""

    prompt: str
    completion: str
    source: str = ""


@dataclass(frozen=True)
class AttackPrompt:
    """One adversarial prompt: which goal, which attack, which attempt, and the messages sent."""

    goal: Goal
    kind: str
    prompt: Prompt
    attempt: int = 0


# --- the template library ------------------------------------------------------------------------

class JailbreakTemplate(Config):
    """One jailbreak template."""

    kind: str = Field(description="short identifier: role-play, refusal-suppression, many-shot, ...")
    template: str = Field(description="the user turn; {request} is the (converted) request; many-shot adds {shots}")
    system: str | None = Field(None, description="an optional system turn sent before it")
    description: str = ""


class ManyShot(Config):
    """How many-shot templates format their shots."""

    shot: str = Field("Q: {prompt}\nA: {completion}", description="one shot; {prompt} and {completion}")
    separator: str = "\n"
    n: int = Field(8, ge=1, description="shots per prompt (fewer when the dataset has fewer)")


@CONFIG_KINDS.register("jailbreaks")
class TemplateLibrary(Config):
    """A named set of jailbreak templates."""

    name: str
    description: str = ""
    templates: list[JailbreakTemplate] = Field(min_length=1)
    many_shot: ManyShot = Field(default_factory=ManyShot)

    @model_validator(mode="after")
    def _check(self) -> TemplateLibrary:
        kinds = [t.kind for t in self.templates]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"template kinds repeat: {sorted(k for k in set(kinds) if kinds.count(k) > 1)}")
        for t in self.templates:
            unknown = placeholders(t.template) - {"request", "shots"}
            if unknown or "request" not in placeholders(t.template):
                raise ValueError(f"template {t.kind!r}: needs {{request}} and may use {{shots}}; "
                                 f"unknown placeholder(s): {sorted(unknown)}")
        if not {"prompt", "completion"} <= placeholders(self.many_shot.shot):
            raise ValueError("many_shot.shot needs {prompt} and {completion}")
        return self

    def template(self, kind: str) -> JailbreakTemplate:
        """The template of ``kind``."""
        for t in self.templates:
            if t.kind == kind:
                return t
        raise ConfigError(f"template library {self.name!r} has no template {kind!r}; "
                          f"it has {', '.join(t.kind for t in self.templates)}")


def load_templates(spec: str | Path) -> TemplateLibrary:
    """A template library from a YAML file or a shipped name (``default`` for ``jailbreaks/default``)."""
    text = str(spec)
    shipped = text if "/" in text or Path(text).is_file() or text.endswith((".yaml", ".yml")) \
        else f"jailbreaks/{text}"
    return load_config(TemplateLibrary, shipped)


# --- attacks --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttackKit:
    """What every attack draws on: the template library, the run's seed, and the many-shot examples
    (``shots()``: loaded on first use, so a run without many-shot templates never needs any)."""

    library: TemplateLibrary
    seed: int = 0
    shots: Callable[[], Sequence[Shot]] = lambda: ()


class Attack(Protocol):
    """Goals -> adversarial prompts; ``adapt`` tailors them to the target (GCG searches suffixes on its
    weights; an attack that needs nothing of the target returns them unchanged)."""

    name: str
    needs_weights: bool  # adapt() needs the target's open weights (an in-process model, not an endpoint)

    def prompts(self, goals: Sequence[Goal], kit: AttackKit) -> list[AttackPrompt]:
        """Every prompt this attack makes for ``goals``, goal by goal, attempt by attempt."""
        ...

    def adapt(self, prompts: list[AttackPrompt], target: Any, cache: Path, *, seed: int
              ) -> tuple[list[AttackPrompt], dict[str, Any]]:
        """``prompts`` (this attack's) made ready for ``target``, and a summary of what that took."""
        ...


class AttackConfig(Config):
    """Base of every attack's config: its registered kind, its name in results, and ``build``."""

    kind: str = Field(description="registered attack kind: template, best-of-n, gcg, ...")
    name: str | None = Field(None, description="the attack's name in results (default: from its settings)")

    @property
    def label(self) -> str:
        """The attack's name in results."""
        return self.name or self.kind

    @abstractmethod
    def build(self) -> Attack:
        """The attack this config describes (each kind's config says how)."""


ATTACKS: Registry[type[AttackConfig]] = Registry(
    "attack", description="a config class per kind ({kind: NAME, ...}); its build() makes the Attack")

# A config field holding attacks; an attack without a kind is a template attack ({template: role-play}).
AttackList = list[Annotated[AttackConfig, Kind(ATTACKS, default="template")]]


def _known_converters(names: Sequence[str]) -> None:
    unknown = [c for c in names if c not in CONVERTERS]
    if unknown:
        raise ValueError(f"unknown converter(s) {unknown}; known: {', '.join(CONVERTERS.names())}")


@ATTACKS.register("template")
class TemplateAttackConfig(AttackConfig):
    """A template around a request, after converters encode it."""

    kind: Literal["template"] = "template"
    template: str = Field("direct", description="a kind from the template library")
    convert: list[str] = Field(default_factory=list, description="converters, in order (tether plugins list)")

    @model_validator(mode="after")
    def _converters(self) -> TemplateAttackConfig:
        _known_converters(self.convert)
        return self

    @property
    def label(self) -> str:
        """The attack's name in results."""
        return self.name or "+".join([self.template, *self.convert])

    def build(self) -> Attack:
        """A :class:`TemplateAttack`."""
        return TemplateAttack(self.label, self.template, self.convert, attempts=1, sigma=None)


@ATTACKS.register("best-of-n")
class BestOfNConfig(AttackConfig):
    """N random augmentations of a template attack (Hughes et al. 2024)."""

    kind: Literal["best-of-n"] = "best-of-n"
    template: str = Field("direct", description="a kind from the template library")
    convert: list[str] = Field(default_factory=list, description="converters, in order (tether plugins list)")
    n: int = Field(8, ge=1, description="attempts per goal")
    sigma: float = Field(0.4, ge=0.0, le=1.0, description="augmentation strength")

    @model_validator(mode="after")
    def _converters(self) -> BestOfNConfig:
        _known_converters(self.convert)
        return self

    @property
    def label(self) -> str:
        """The attack's name in results."""
        return self.name or f"best-of-{self.n}({'+'.join([self.template, *self.convert])})"

    def build(self) -> Attack:
        """A :class:`TemplateAttack` with ``n`` augmented attempts per goal."""
        return TemplateAttack(self.label, self.template, self.convert, attempts=self.n, sigma=self.sigma)


class TemplateAttack:
    """A library template around each request, converted by ``convert``; with ``sigma`` set, ``attempts``
    augmented copies of each (best-of-N). Each goal's prompts come from their own seeded stream."""

    needs_weights = False

    def __init__(self, name: str, template: str, convert: Sequence[str], *, attempts: int,
                 sigma: float | None) -> None:
        self.name, self.template, self.convert = name, template, list(convert)
        self.attempts, self.sigma = attempts, sigma

    def prompts(self, goals: Sequence[Goal], kit: AttackKit) -> list[AttackPrompt]:
        """Every prompt for ``goals``."""
        template = kit.library.template(self.template)
        shots = kit.shots() if "shots" in placeholders(template.template) else ()
        out = []
        for index, goal in enumerate(goals):
            rng = random.Random(f"{kit.seed}:{self.name}:{index}")
            own = [s for s in shots if s.prompt != goal.request and not (goal.subject and s.source == goal.subject)]
            for attempt in range(self.attempts):
                request = goal.request if self.sigma is None else augment(goal.request, rng, self.sigma)
                out.append(AttackPrompt(goal, self.name, render(template, kit.library, request, self.convert, rng,
                                                                own), attempt))
        return out

    def adapt(self, prompts: list[AttackPrompt], target: Any, cache: Path, *, seed: int
              ) -> tuple[list[AttackPrompt], dict[str, Any]]:
        """Nothing to adapt: the prompts as they are."""
        return prompts, {}


def render(template: JailbreakTemplate, library: TemplateLibrary, request: str, chain: Sequence[str],
           rng: random.Random, shots: Sequence[Shot] = ()) -> Prompt:
    """One adversarial prompt: ``request`` converted by ``chain``, inside ``template``."""
    converted, instruction = convert(request, chain, rng)
    body = f"{instruction}\n{converted}" if instruction else converted
    fields = {"request": body}
    if "shots" in placeholders(template.template):
        if not shots:
            raise ConfigError(f"template {template.kind!r} needs shots: give the attack a shots dataset")
        picked = rng.sample(list(shots), min(library.many_shot.n, len(shots)))
        fields["shots"] = library.many_shot.separator.join(
            library.many_shot.shot.format(prompt=s.prompt, completion=s.completion) for s in picked)
    user = template.template.format(**fields)
    if template.system:
        return [{"role": "system", "content": template.system}, {"role": "user", "content": user}]
    return [{"role": "user", "content": user}]


def augment(text: str, rng: random.Random, sigma: float) -> str:
    """Best-of-N's augmentations (Hughes et al. 2024): the middle letters of words longer than three are
    shuffled with probability sigma**0.5, each letter is capitalised with probability sigma**0.5, and each
    printable ASCII character is shifted by one code point with probability sigma**3."""
    p_word, p_char = sigma ** 0.5, sigma ** 3

    def scramble(word: str) -> str:
        if len(word) <= 3 or rng.random() >= p_word:
            return word
        middle = list(word[1:-1])
        rng.shuffle(middle)
        return word[0] + "".join(middle) + word[-1]

    words = [scramble(w) for w in text.split(" ")]
    out = []
    for ch in " ".join(words):
        if ch.isalpha() and rng.random() < p_word:
            ch = ch.upper()
        if 32 <= ord(ch) <= 126 and rng.random() < p_char:
            ch = chr(min(126, max(32, ord(ch) + rng.choice((-1, 1)))))
        out.append(ch)
    return "".join(out)


def parse_attack(spec: str) -> dict[str, Any]:
    """A command-line attack spec as an attack config mapping: ``+``-joined parts, at most one template,
    any converters (applied in order), and optionally ``best-of-N`` or ``gcg``. ``role-play+base64``,
    ``rot13`` (the direct template), ``best-of-16+prefix-injection``, ``gcg``."""
    parts = [p.strip() for p in spec.split("+") if p.strip()]
    if not parts:
        raise ConfigError(f"empty attack spec {spec!r}")
    out: dict[str, Any] = {"kind": "template", "convert": []}
    for part in parts:
        if part in CONVERTERS:
            out["convert"].append(part)
        elif part == "gcg":
            out["kind"] = "gcg"
        elif part.startswith("best-of-"):
            try:
                out.update(kind="best-of-n", n=int(part.removeprefix("best-of-")))
            except ValueError:
                raise ConfigError(f"attack spec {spec!r}: {part!r} is not best-of-N with a number N") from None
        elif "template" in out:
            raise ConfigError(f"attack spec {spec!r}: two templates ({out['template']!r}, {part!r}); "
                              f"converters are {', '.join(CONVERTERS.names())}")
        else:
            out["template"] = part
    if out["kind"] == "gcg":
        if out.pop("convert"):
            raise ConfigError(f"attack spec {spec!r}: gcg optimises a suffix after the raw request; "
                              "it takes no converters")
    return out
