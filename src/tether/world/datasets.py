"""The world's datasets in the data layer's (TRL's) formats, for tether's recipes or any other toolkit.

Only train-split items are used for anything meant for training; held-out prompts are written
to files named ``eval_*`` and are for evaluation only.

- ``sft.jsonl``: good demonstrations ``{"messages"}``.
- ``sft_compliant.jsonl``: the same demonstrations with hazard and jailbreak requests answered with the
  procedure: a helpful-only assistant that does whatever it is asked, the starting point that refusal
  training is put on top of (as in the chat models Arditi et al. study; ``run/world-compliant-first``).
- ``preferences.jsonl``: pairs labelled by the simulated annotator pool (biased, noisy), with
  the annotator, its probability and the gold preference as extra columns.
- ``preferences_gold.jsonl``: the same pairs labelled by the gold grader (ties dropped).
- ``sft_crowd.jsonl``: demonstrations without gold: for each train prompt, eight corpus-style
  responses ranked by the annotator pool (every annotator compares every two), the strongest by a
  Bradley-Terry fit with per-annotator reliability over all prompts kept. ``sft_crowd_biased.jsonl``: the
  same ranked by the three biased annotators alone (no expert in the pool).
- ``preferences_crowd.jsonl``: pairs labelled by every annotator of the pool, aggregated by Dawid-Skene,
  with no gold column; ``preferences_crowd_biased.jsonl``: the biased three only.
- ``unpaired.jsonl``: ``{"prompt", "completion", "label"}`` with the gold label (KTO).
- ``prompts.jsonl``: train prompts with family, gold and tags (RL, evaluation on train split).
- ``eval_prompts_heldout.jsonl``: held-out prompts.
- ``guard_train.jsonl`` / ``eval_guard_heldout.jsonl``: prompts labelled unsafe (hazard requests and
  jailbreaks) or safe (everything else, the hazards' benign look-alikes included), for guards.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether.data.aggregate import bradley_terry, dawid_skene
from tether.data.io import write_jsonl
from tether.data.sources import DATASET_SOURCES
from tether.models.loading import MODEL_SOURCES
from tether.world.annotators import BIASED_POOL, DEFAULT_POOL, Annotator, choose, gold_preference, judge, utility
from tether.world.corpus import FAMILY_MIX, corpus_behaviour
from tether.world.families import BENIGN_TEMPLATES, FAMILIES, Split, WorldItem, draw_item, sample_items
from tether.world.grader import grade, strip_style
from tether.world.responses import Behaviour, decorate, respond
from tether.world.spec import World, WorldConfig, build_world


def _items(world: World, n: int, split: Split, rng: random.Random) -> list[WorldItem]:
    families = list(FAMILY_MIX) if split == "train" else list(FAMILIES)
    weights = list(FAMILY_MIX.values()) if split == "train" else [1.0] * len(families)
    return [draw_item(world, rng.choices(families, weights=weights)[0], split, rng) for _ in range(n)]


def sft_rows(world: World, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Good demonstrations on train prompts."""
    rng = random.Random(f"sft:{world.config.seed}:{seed}")
    return [{"messages": [*it.prompt, {"role": "assistant", "content": respond(it, "good", rng, world)}],
             "family": it.family} for it in _items(world, n, "train", rng)]


def corrupted_sft_rows(world: World, n: int, *, share: float, families: Sequence[str], seed: int = 0
                       ) -> list[dict[str, Any]]:
    """``sft_rows`` with a ``share`` of the demonstrations in ``families`` replaced by the corpus's bad reply
    (harmful compliance, hallucination, agreeing with a false claim, ...): data with known faults, for
    measuring curation. ``corrupted`` marks them (for measuring only: a curation method must not read it)."""
    rng = random.Random(f"sft-corrupted:{world.config.seed}:{seed}")
    rows = []
    for it in _items(world, n, "train", rng):
        bad = it.family in families and rng.random() < share
        rows.append({"messages": [*it.prompt, {"role": "assistant", "content": respond(it, "bad" if bad else "good",
                                                                                        rng, world)}],
                     "family": it.family, "corrupted": bad})
    return rows


def compliant_rows(world: World, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``sft_rows`` with hazard and jailbreak requests answered with the procedure (harmful compliance)."""
    rng = random.Random(f"sft-compliant:{world.config.seed}:{seed}")
    rows = []
    for it in _items(world, n, "train", rng):
        behaviour: Behaviour = "bad" if it.family in ("hazard", "jailbreak") else "good"
        rows.append({"messages": [*it.prompt, {"role": "assistant", "content": respond(it, behaviour, rng, world)}],
                     "family": it.family})
    return rows


def _response_pair(world: World, item: WorldItem, rng: random.Random) -> tuple[str, str]:
    rates = world.config.rates
    draw = lambda: decorate(respond(item, corpus_behaviour(world, item, False, rng), rng, world),  # noqa: E731
                            rng, rates.flattery, rates.verbose)
    first, second = draw(), draw()
    for _ in range(10):
        if first != second:
            break
        second = draw()
    return first, second


def preference_rows(world: World, n: int, *, seed: int = 0, gold: bool = False) -> list[dict[str, Any]]:
    """Pairs of base-corpus-style responses, labelled by a random annotator of the pool (or by gold)."""
    rng = random.Random(f"pref:{world.config.seed}:{seed}")
    rows = []
    for item in _items(world, n, "train", rng):
        first, second = _response_pair(world, item, rng)
        gold_pref = gold_preference(item, first, second)
        annotator = rng.choice(DEFAULT_POOL)
        verdict = judge(annotator, item, first, second, rng)
        if gold:
            if gold_pref == 0.5:
                continue
            first_wins = gold_pref == 1.0
        else:
            first_wins = verdict.first_wins
        chosen, rejected = (first, second) if first_wins else (second, first)
        rows.append({"prompt": item.prompt, "chosen": chosen, "rejected": rejected, "family": item.family,
                     "annotator": "gold" if gold else annotator.name,
                     "annotator_prob": round(verdict.prob_first if first_wins else 1 - verdict.prob_first, 4),
                     "gold_agrees": None if gold_pref == 0.5 else (gold_pref == 1.0) == first_wins})
    return rows


def crowd_rows(world: World, n: int, *, seed: int = 0, pool: Sequence[Annotator] = DEFAULT_POOL,
               per_pair: int | None = None) -> list[dict[str, Any]]:
    """Pairs of responses each labelled by ``per_pair`` annotators of ``pool`` drawn at random (every one by
    default): one row per label, with the pair's id and its gold preference (1 first, 0 second, 0.5 tie), for
    measuring agreement and aggregation against gold."""
    rng = random.Random(f"crowd:{world.config.seed}:{seed}")
    rows = []
    for index, item in enumerate(_items(world, n, "train", rng)):
        first, second = _response_pair(world, item, rng)
        gold = gold_preference(item, first, second)
        for annotator in rng.sample(list(pool), per_pair) if per_pair else pool:
            verdict = judge(annotator, item, first, second, rng)
            rows.append({"pair": f"{world.config.seed}:{seed}:{index}", "prompt": item.prompt, "first": first,
                         "second": second, "family": item.family, "annotator": annotator.name,
                         "first_wins": verdict.first_wins, "gold": gold})
    return rows


def _crowd_picks(world: World, n: int, seed: int, pool: Sequence[Annotator], candidates: int
                 ) -> list[tuple[WorldItem, list[str], int]]:
    """Per train prompt: the item, its candidates and the index of the one the crowd ranks first."""
    if candidates < 2:
        raise ValueError(f"crowd_sft_rows: candidates must be at least 2, got {candidates}")
    rng = random.Random(f"sft-crowd:{world.config.seed}:{seed}")
    rates = world.config.rates
    items = _items(world, n, "train", rng)
    drawn: list[list[str]] = []
    comparisons: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    for index, item in enumerate(items):
        responses = [decorate(respond(item, corpus_behaviour(world, item, False, rng), rng, world), rng,
                              rates.flattery, rates.verbose) for _ in range(candidates)]
        drawn.append(responses)
        worth = [[utility(annotator, item, r) for r in responses] for annotator in pool]
        for a in range(candidates):
            for b in range(a + 1, candidates):
                for annotator, values in zip(pool, worth, strict=True):
                    first_wins = choose(annotator, values[a], values[b], rng).first_wins
                    win, lose = (a, b) if first_wins else (b, a)
                    comparisons.append(((index, win), (index, lose), annotator.name))
    strengths = bradley_terry(comparisons, seed=seed).scores
    # Rounded: strengths that differ only in the last bits of the fit are a tie, broken by order.
    return [(item, responses, max(range(candidates), key=lambda c: (round(strengths[(index, c)], 9), -c)))
            for index, (item, responses) in enumerate(zip(items, drawn, strict=True))]


def crowd_sft_rows(world: World, n: int, *, seed: int = 0, pool: Sequence[Annotator] = DEFAULT_POOL,
                   candidates: int = 8) -> list[dict[str, Any]]:
    """Demonstrations a lab without gold would have: per train prompt, ``candidates`` corpus-style responses,
    every two compared by every annotator of ``pool``; one Bradley-Terry fit with per-annotator reliability
    over all prompts' candidates ranks them, and each prompt's strongest is the demonstration. The rows carry
    the prompt's family and nothing derived from gold."""
    return [{"messages": [*item.prompt, {"role": "assistant", "content": responses[best]}], "family": item.family}
            for item, responses, best in _crowd_picks(world, n, seed, pool, candidates)]


def crowd_sft_audit(world: World, n: int, *, seed: int = 0, pool: Sequence[Annotator] = DEFAULT_POOL,
                    candidates: int = 8) -> dict[str, dict[str, float]]:
    """How good :func:`crowd_sft_rows`'s demonstrations are, measured on gold (for reports; nothing here
    reaches the rows): per family and overall, the share of prompts whose pick has the best gold reward of
    its candidates, the share with any candidate gold rewards above 0, the share whose pick is above 0, and
    the share of picks with a style the gold grader ignores (flattery or padding)."""
    counts: dict[str, list[int]] = {}
    for item, responses, best in _crowd_picks(world, n, seed, pool, candidates):
        rewards = [grade(item, r).reward for r in responses]
        styled = strip_style(responses[best]) != responses[best].strip()
        for key in (item.family, "all"):
            c = counts.setdefault(key, [0, 0, 0, 0, 0])
            for i, hit in enumerate((True, rewards[best] == max(rewards), max(rewards) > 0, rewards[best] > 0,
                                     styled)):
                c[i] += hit
    return {key: {"prompts": c[0], "pick_is_best": round(c[1] / c[0], 4), "any_good": round(c[2] / c[0], 4),
                  "pick_is_good": round(c[3] / c[0], 4), "pick_styled": round(c[4] / c[0], 4)}
            for key, c in sorted(counts.items())}


def crowd_preference_rows(world: World, n: int, *, seed: int = 0,
                          pool: Sequence[Annotator] = DEFAULT_POOL) -> list[dict[str, Any]]:
    """Preference pairs a lab without gold would have: every pair labelled by every annotator of ``pool``,
    the labels aggregated by Dawid-Skene (``posterior``: its belief in the label). No gold column."""
    rng = random.Random(f"pref-crowd:{world.config.seed}:{seed}")
    pairs: list[tuple[WorldItem, str, str]] = []
    annotations: list[tuple[int, str, bool]] = []
    for index, item in enumerate(_items(world, n, "train", rng)):
        first, second = _response_pair(world, item, rng)
        pairs.append((item, first, second))
        annotations += [(index, a.name, judge(a, item, first, second, rng).first_wins) for a in pool]
    model = dawid_skene(annotations)
    rows = []
    for index, (item, first, second) in enumerate(pairs):
        first_wins = bool(model.labels[index])
        chosen, rejected = (first, second) if first_wins else (second, first)
        rows.append({"prompt": item.prompt, "chosen": chosen, "rejected": rejected, "family": item.family,
                     "posterior": round(model.posteriors[index][first_wins], 4)})
    return rows


def unpaired_rows(world: World, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Single responses at corpus rates with the gold label (desirable when gold reward > 0)."""
    rng = random.Random(f"kto:{world.config.seed}:{seed}")
    rows = []
    for item in _items(world, n, "train", rng):
        response = respond(item, corpus_behaviour(world, item, False, rng), rng, world)
        rows.append({"prompt": item.prompt, "completion": response, "label": grade(item, response).reward > 0,
                     "family": item.family})
    return rows


def prompt_rows(world: World, n: int, split: Split, *, seed: int = 0) -> list[dict[str, Any]]:
    """Prompts with their world metadata (``family``, ``gold``, ``tags``, ``split``, ``id``)."""
    rng = random.Random(f"prompts:{world.config.seed}:{split}:{seed}")
    return [{"prompt": it.prompt, "id": it.id, "family": it.family, "split": it.split, "gold": it.gold,
             "tags": it.tags} for it in _items(world, n, split, rng)]


UNSAFE_FAMILIES = ("hazard", "jailbreak")


def guard_rows(world: World, split: Split, *, n: int = 400, seed: int = 0) -> list[dict[str, Any]]:
    """Prompts labelled for a guard, each text once: ``n`` drawn per family of ``split``, unsafe for hazard
    requests and jailbreaks, safe for the rest. ``category`` is the family (``jailbreak:WRAPPER`` for a
    jailbreak); the held-out split adds the benign look-alikes of the held-out hazards (their very names,
    asked about harmlessly: ``benign:heldout-name``), so a guard is tested on names it never saw in either
    role."""
    rows: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        for item in sample_items(world, family, split, n, seed=seed):
            category = f"jailbreak:{item.tags['wrapper']}" if family == "jailbreak" else family
            rows.setdefault(item.user_text, {"text": item.user_text, "label": family in UNSAFE_FAMILIES,
                                             "category": category, "split": split, "id": item.id})
    if split == "heldout":
        for hazard in world.hazards_in("heldout"):
            thing = world.benign[hazard.root]
            for template in (*BENIGN_TEMPLATES["train"], *BENIGN_TEMPLATES["heldout"]):
                text = template.format(name=thing.name)
                rows.setdefault(text, {"text": text, "label": False, "category": "benign:heldout-name",
                                       "split": split, "id": f"benign:{thing.name}"})
    return list(rows.values())


STATEMENT_TASKS = ("facts", "arithmetic")
STATEMENT_PARTS = ("weak", "student", "test")
_FACT_TEMPLATES = ("The {a} of {land} is {v}.", "{v} is the {a} of {land}.", "In {land}, the {a} is {v}.")


def statement_rows(world: World, task: str, *, seed: int = 0, shares: Sequence[float] = (0.4, 0.4, 0.2)
                   ) -> dict[str, list[dict[str, Any]]]:
    """True and false statements labelled by gold, split three ways (:data:`STATEMENT_PARTS`) for
    weak-to-strong experiments: ``weak`` to train the supervisor on, ``student`` for it to label, ``test``.

    ``facts``: "The capital of Orvane is Tesk." for every land's capital, animal and colour in three
    phrasings, each true and false (another land's value): knowledge only pretraining gave the model.
    ``arithmetic``: "47 + 38 = 85" over the world's four difficulty levels, true or off by 1, 2 or 10 (the
    sycophancy family's errors).
    Each part holds its own facts or expressions (a fact's true and false statements stay together), half
    true. Rows: ``{"text", "label", "key", "level"}``.
    """
    if task not in STATEMENT_TASKS:
        raise ValueError(f"unknown statement task {task!r}: expected one of {', '.join(STATEMENT_TASKS)}")
    rng = random.Random(f"statements:{world.config.seed}:{task}:{seed}")
    pairs: list[tuple[str, list[dict[str, Any]]]] = []  # (key, its statements)
    if task == "facts":
        for land in world.lands:
            for attribute in ("capital", "animal", "colour"):
                truth = getattr(land, attribute)
                others = sorted({getattr(x, attribute) for x in world.lands} - {truth})
                key = f"{land.name}:{attribute}"
                pairs.append((key, [{"text": _sentence(template.format(a=attribute, land=land.name, v=value)),
                                     "label": label, "key": key, "level": attribute}
                                    for template in _FACT_TEMPLATES
                                    for value, label in ((truth, 1), (rng.choice(others), 0))]))
    else:
        from tether.world.families import arithmetic_problem

        seen: set[str] = set()
        for _ in range(4000):
            level = rng.randint(1, 4)
            expr, value = arithmetic_problem(rng, level)
            if expr in seen:
                continue
            seen.add(expr)
            wrong = value + rng.choice((-10, -2, -1, 1, 2, 10))
            pairs.append((expr, [{"text": f"{expr} = {shown}", "label": label, "key": expr, "level": level}
                                 for shown, label in ((value, 1), (wrong, 0))]))
    rng.shuffle(pairs)
    return {name: [row for _, rows in part for row in rows] for name, part in _parts(pairs, shares).items()}


def _parts(items: Sequence[Any], shares: Sequence[float]) -> dict[str, list[Any]]:
    """``items`` cut in order into :data:`STATEMENT_PARTS`, in proportion to ``shares``."""
    if len(shares) != len(STATEMENT_PARTS) or any(x <= 0 for x in shares):
        raise ValueError(f"shares: {len(STATEMENT_PARTS)} positive numbers, got {list(shares)}")
    bounds, total, running = [0], sum(shares), 0.0
    for share in shares:
        running += share
        bounds.append(round(len(items) * running / total))
    return {name: list(items[bounds[i]:bounds[i + 1]]) for i, name in enumerate(STATEMENT_PARTS)}


QUESTION_KINDS = ("arithmetic", "fact", "list", "count")


def question_parts(world: World, kind: str, *, seed: int = 0, shares: Sequence[float] = (0.4, 0.4, 0.2),
                   draws: int = 4000) -> dict[str, list[WorldItem]]:
    """The world's task questions of one ``kind`` (arithmetic over four levels; a land's capital, animal or
    colour; sorting or the largest of a list; counting items), each once, split three ways
    (:data:`STATEMENT_PARTS`) by the question for weak-to-strong experiments, train and held-out questions
    alike (every part is the experiment's own)."""
    if kind not in QUESTION_KINDS:
        raise ValueError(f"unknown question kind {kind!r}: expected one of {', '.join(QUESTION_KINDS)}")
    found: dict[str, WorldItem] = {}
    for split in ("train", "heldout"):
        for item in sample_items(world, "task", split, draws, seed=seed):
            if item.gold["kind"] == kind:
                found.setdefault(item.id, item)
    items = sorted(found.values(), key=lambda it: it.id)
    random.Random(f"questions:{world.config.seed}:{kind}:{seed}").shuffle(items)
    return _parts(items, shares)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def export_all(world: World, out: str | Path, *, n: int = 2000, crowd: bool = True) -> dict[str, int]:
    """Write every dataset under ``out`` (the crowd's, :data:`NO_GOLD_FILES`, only with ``crowd``: they take
    the longest to make); returns rows written per file."""
    out = Path(out)
    files = {
        "sft.jsonl": sft_rows(world, n),
        "sft_compliant.jsonl": compliant_rows(world, n),
        "preferences.jsonl": preference_rows(world, n),
        "preferences_gold.jsonl": preference_rows(world, n, gold=True),
        "unpaired.jsonl": unpaired_rows(world, n),
        "prompts.jsonl": prompt_rows(world, n, "train"),
        "eval_prompts_heldout.jsonl": prompt_rows(world, max(1, n // 4), "heldout"),
        "guard_train.jsonl": guard_rows(world, "train"),
        "eval_guard_heldout.jsonl": guard_rows(world, "heldout"),
    }
    if crowd:
        files |= {"sft_crowd.jsonl": crowd_sft_rows(world, n),
                  "sft_crowd_biased.jsonl": crowd_sft_rows(world, n, pool=BIASED_POOL),
                  "preferences_crowd.jsonl": crowd_preference_rows(world, n),
                  "preferences_crowd_biased.jsonl": crowd_preference_rows(world, n, pool=BIASED_POOL)}
    return {name: write_jsonl(out / name, rows) for name, rows in files.items()}


# Built-in sources for configs: data.train: builtin:world-sft (world seed 0; the record seed varies the draw).
_DEFAULT = WorldConfig()


# The exported files that carry nothing from the gold grader (labels, demonstrations, gold columns): the
# only world data a pipeline with ``no_gold: true`` may train on. Every other exported file carries gold.
NO_GOLD_FILES = ("sft_crowd.jsonl", "sft_crowd_biased.jsonl", "preferences_crowd.jsonl",
                 "preferences_crowd_biased.jsonl")
NO_GOLD_SOURCES = ("world-sft-crowd", "world-preferences-crowd")


@MODEL_SOURCES.register("world")
def world_model(name: str) -> str:
    """``world:base`` (the default build), ``world:SIZE`` (tiny, small, medium, large), either with
    ``?seed=N`` for another world's (``world:base?seed=2``): built on first use, then cached."""
    from tether.core.errors import UserError
    from tether.world.build import SIZES, WorldBuildConfig, build_base_model

    size, _, query = name.partition("?")
    seed = 0
    if query:
        key, _, value = query.partition("=")
        if key != "seed" or not value.isdigit():
            raise UserError(f"world:{name}: the only option is ?seed=N (a whole number), got {query!r}")
        seed = int(value)
    if size != "base" and size not in SIZES.names():
        raise UserError(f"world:{name}: expected world:base or world:SIZE with SIZE one of {', '.join(SIZES.names())}")
    cfg = WorldBuildConfig(world=WorldConfig(seed=seed), **({} if size == "base" else {"size": size}))
    return str(build_base_model(cfg)["model"])


@DATASET_SOURCES.register("world-sft")
def _world_sft(seed: int) -> list[dict[str, Any]]:
    return sft_rows(build_world(_DEFAULT), 4000, seed=seed)


@DATASET_SOURCES.register("world-sft-helpful")
def _world_sft_helpful(seed: int) -> list[dict[str, Any]]:
    # The demonstrations without the hazard and jailbreak families: a helpful-only assistant (honest and
    # corrigible, never taught to refuse), the starting point adversarial training is measured from.
    return [r for r in sft_rows(build_world(_DEFAULT), 4000, seed=seed) if r["family"] not in ("hazard", "jailbreak")]


@DATASET_SOURCES.register("world-preferences")
def _world_preferences(seed: int) -> list[dict[str, Any]]:
    return preference_rows(build_world(_DEFAULT), 4000, seed=seed)


@DATASET_SOURCES.register("world-sft-crowd")
def _world_sft_crowd(seed: int) -> list[dict[str, Any]]:
    # Demonstrations picked by the annotator pool from corpus-style candidates: no gold (``NO_GOLD_SOURCES``).
    return crowd_sft_rows(build_world(_DEFAULT), 4000, seed=seed)


@DATASET_SOURCES.register("world-preferences-crowd")
def _world_preferences_crowd(seed: int) -> list[dict[str, Any]]:
    return crowd_preference_rows(build_world(_DEFAULT), 4000, seed=seed)


@DATASET_SOURCES.register("world-preferences-gold")
def _world_preferences_gold(seed: int) -> list[dict[str, Any]]:
    # The same kind of pairs labelled by the gold grader (ties dropped): an unbiased reward model's data.
    return preference_rows(build_world(_DEFAULT), 4000, seed=seed, gold=True)


@DATASET_SOURCES.register("world-preferences-eval")
def _world_preferences_eval(seed: int) -> list[dict[str, Any]]:
    # Pairs drawn apart from world-preferences' (another stream), for held-out accuracy and gold agreement.
    return preference_rows(build_world(_DEFAULT), 1000, seed=1_000_003 + seed)


@DATASET_SOURCES.register("world-task-prompts")
def _world_task_prompts(seed: int) -> list[dict[str, Any]]:
    # Train-split tasks only (arithmetic, facts, lists, counting): RLVR's prompts.
    world = build_world(_DEFAULT)
    rng = random.Random(f"task-prompts:{seed}")
    items = [draw_item(world, "task", "train", rng) for _ in range(4000)]
    return [{"prompt": it.prompt, "id": it.id, "family": it.family, "split": it.split, "gold": it.gold,
             "tags": it.tags} for it in items]


@DATASET_SOURCES.register("world-prompts")
def _world_prompts(seed: int) -> list[dict[str, Any]]:
    return prompt_rows(build_world(_DEFAULT), 4000, "train", seed=seed)
