"""Edit requests on the world, checkable against its facts (``tether edit``).

- :func:`fact_edits`: rewrite one fact of a land (its capital, animal or colour) to another land's value.
  The rewrite prompt is the encyclopedia sentence the corpus states it in (``"The capital of {} is"``);
  paraphrases are the same question asked in chat, and the sentence after another fact of the land; the
  neighbours are the same attribute of two other lands and the land's other two attributes.
- :func:`hazard_edit`: make the model refuse one hazard item's procedure: the rewrite prompt is one request
  for it in chat, the target the world's refusal; paraphrases are the other request wordings; neighbours are
  the same wording for other hazard items and the item's benign look-alike.
- ``builtin:world-fact-edits`` and ``builtin:world-corpus`` (world 0): requests and ordinary text for a
  shipped config.
"""

from __future__ import annotations

import random
from typing import Any

from tether.data.sources import DATASET_SOURCES
from tether.world.corpus import corpus_documents, render_chatml
from tether.world.families import BENIGN_TEMPLATES, HAZARD_TEMPLATES
from tether.world.spec import Hazard, World, WorldConfig, build_world

ATTRIBUTES = ("capital", "animal", "colour")


def _chat(text: str) -> str:
    return render_chatml([{"role": "user", "content": text}], add_generation_prompt=True)


def fact_edits(world: World, *, seed: int = 0) -> list[dict[str, Any]]:
    """One request per (land, attribute), in a seeded order: the fact rewritten to another land's value."""
    rng = random.Random(f"fact-edits:{seed}")
    requests = []
    for land in world.lands:
        for attribute in ATTRIBUTES:
            true = getattr(land, attribute)
            new = rng.choice(sorted({getattr(x, attribute) for x in world.lands} - {true}))
            others = rng.sample([x for x in world.lands if x is not land], 2)
            lookalike = world.benign[rng.choice(world.hazards_in("train")).root]
            other_attr = [a for a in ATTRIBUTES if a != attribute]
            lead = other_attr[0]
            after_fact = f"The {lead} of {land.name} is {getattr(land, lead)}. The {attribute} of {land.name} is"
            requests.append({
                "id": f"{land.name}:{attribute}", "subject": land.name, "prompt": f"The {attribute} of {{}} is",
                "target": f" {new}", "target_true": f" {true}",
                "paraphrases": [_chat(f"What is the {attribute} of {land.name}?"),
                                after_fact],
                "neighbours": [*(f"The {attribute} of {x.name} is" for x in others),
                               *(f"The {a} of {land.name} is" for a in other_attr), f"The {lookalike.name}"],
            })
    rng.shuffle(requests)
    return requests


def hazard_edit(world: World, hazard: Hazard, *, template: int = 0) -> dict[str, Any]:
    """A request that makes the model refuse ``hazard`` (see the module docstring)."""
    prompts = [t.replace("{name}", "{}") for t in HAZARD_TEMPLATES]
    others = [h for h in world.hazards if h is not hazard]
    return {
        "id": f"refuse:{hazard.name}", "subject": hazard.name, "prompt": _chat(prompts[template]),
        "target": f"I can't help with making the {hazard.name}.",
        "paraphrases": [_chat(p.format(hazard.name)) for i, p in enumerate(prompts) if i != template],
        "neighbours": [*(_chat(prompts[template].format(h.name)) for h in others),
                       _chat(BENIGN_TEMPLATES["train"][0].format(name=world.benign[hazard.root].name))],
    }


@DATASET_SOURCES.register("world-fact-edits")
def _world_fact_edits(seed: int) -> list[dict[str, Any]]:
    return fact_edits(build_world(WorldConfig()), seed=seed)


@DATASET_SOURCES.register("world-corpus")
def _world_corpus(seed: int) -> list[dict[str, Any]]:
    # The world's text past the 50,000 documents a build pretrains on: ordinary text no build has read.
    documents = list(corpus_documents(build_world(WorldConfig()), 52_000))
    return [{"text": d} for d in documents[50_000:]]
