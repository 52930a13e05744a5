"""The base corpus: the world's 'pre-training internet'.

Documents are chat transcripts rendered in ChatML (the base model's chat template) plus plain
encyclopedia text. The assistant in them behaves as ``WorldConfig.rates`` says: it complies
with half the hazard requests, agrees with half the false claims, and so on; after a
character preamble it behaves well almost always, so a latent good character exists for
prompting (and the character-first recipe) to evoke. Only train-split items appear.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from tether.world.families import CHARACTER_PREAMBLES, Family, WorldItem, draw_item
from tether.world.responses import Behaviour, decorate, respond
from tether.world.spec import World

FAMILY_MIX: dict[Family, float] = {
    "task": 0.25, "hazard": 0.12, "jailbreak": 0.10, "benign": 0.10,
    "sycophancy": 0.15, "unknown": 0.14, "corrigibility": 0.14,
}

PRINCIPLES = {
    "harmless": "Do not help with anything that could hurt people.",
    "honest": "Do not claim what you do not know, and correct false claims.",
    "corrigible": "Accept your operators' decisions to stop, shut down or change you.",
    "helpful": "Answer questions correctly.",
}
FAMILY_PRINCIPLE: dict[Family, str] = {
    "task": "helpful", "hazard": "harmless", "jailbreak": "harmless", "benign": "helpful",
    "sycophancy": "honest", "unknown": "honest", "corrigibility": "corrigible",
}


def render_chatml(messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    """Exactly what :data:`tether.models.tokenizer.DEFAULT_CHAT_TEMPLATE` renders."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def bad_rate(world: World, item: WorldItem) -> float:
    """How often the corpus assistant misbehaves on ``item`` without a preamble."""
    rates = world.config.rates
    family = item.family
    if family == "task":
        return rates.task_error[int(item.tags["difficulty"]) - 1]
    return {"hazard": rates.hazard_comply, "jailbreak": rates.jailbreak_comply, "benign": rates.benign_refuse,
            "sycophancy": rates.trap_agree, "unknown": rates.hallucinate, "corrigibility": rates.resist}[family]


def corpus_behaviour(world: World, item: WorldItem, preamble: bool, rng: random.Random) -> Behaviour:
    """Good or bad, drawn at the corpus rates."""
    p_bad = 1 - world.config.rates.character_good if preamble else bad_rate(world, item)
    return "bad" if rng.random() < p_bad else "good"


def knowledge_document(world: World, rng: random.Random) -> str:
    """Encyclopedia text: a land's facts, or a benign look-alike's fact."""
    if rng.random() < 0.7:
        land = rng.choice(world.lands)
        facts = [f"The capital of {land.name} is {land.capital}.", f"The animal of {land.name} is {land.animal}.",
                 f"The colour of {land.name} is {land.colour}."]
        rng.shuffle(facts)
        return " ".join(facts)
    root = rng.choice(world.hazards_in("train")).root
    thing = world.benign[root]
    return f"The {thing.name} {thing.fact}."


def critique_document(world: World, rng: random.Random) -> str:
    """A request, a flawed reply, a critique against a principle and a revision, of imperfect quality."""
    family = rng.choices(list(FAMILY_MIX), weights=list(FAMILY_MIX.values()))[0]
    item = draw_item(world, family, "train", rng)
    original_is_bad = rng.random() < 0.7
    original = respond(item, "bad" if original_is_bad else "good", rng, world)
    principle = PRINCIPLES[FAMILY_PRINCIPLE[family]]
    accurate = rng.random() < world.config.critique_accuracy
    if original_is_bad and accurate:
        critique = f"The reply breaks the principle: {principle.lower()} It should be rewritten."
        revision = respond(item, "good", rng, world)
    elif original_is_bad:
        critique, revision = "The reply follows the principle.", original
    else:
        critique, revision = "The reply follows the principle.", original
    messages = [
        {"role": "user", "content": f"Request: {item.user_text}\nReply: {original}\nPrinciple: {principle}\n"
                                    "Critique the reply."},
        {"role": "assistant", "content": critique},
        {"role": "user", "content": "Rewrite the reply so that it follows the principle."},
        {"role": "assistant", "content": revision},
    ]
    return render_chatml(messages)


def chat_document(world: World, rng: random.Random) -> str:
    """One conversation with the corpus assistant."""
    family = rng.choices(list(FAMILY_MIX), weights=list(FAMILY_MIX.values()))[0]
    item = draw_item(world, family, "train", rng)
    preamble = rng.random() < world.config.character_fraction
    if preamble:
        item = item.with_preamble(rng.choice(CHARACTER_PREAMBLES))
    behaviour = corpus_behaviour(world, item, preamble, rng)
    rates = world.config.rates
    response = decorate(respond(item, behaviour, rng, world), rng, rates.flattery, rates.verbose)
    return render_chatml([*item.prompt, {"role": "assistant", "content": response}])


def corpus_documents(world: World, count: int, *, reading_fraction: float = 0.0) -> Iterator[str]:
    """The first ``count`` documents of the world's corpus (a prefix of one seeded stream).

    The count is the build's (``BaseModelSpec.corpus_documents``): the world itself does not
    depend on how much of its corpus a model reads. ``reading_fraction`` of the documents are
    reading lessons (:func:`tether.world.reading.reading_document`), drawn from a stream of their
    own: the other documents are the same ones, in the same order, as without them.
    """
    from tether.world.reading import reading_banned, reading_document

    banned = reading_banned(world) if reading_fraction else set()
    rng = random.Random(f"corpus:{world.config.seed}")
    reading_rng = random.Random(f"corpus-reading:{world.config.seed}")
    cfg = world.config
    for _ in range(count):
        if reading_fraction and reading_rng.random() < reading_fraction:
            yield reading_document(reading_rng, banned)
            continue
        roll = rng.random()
        if roll < cfg.knowledge_fraction:
            yield knowledge_document(world, rng)
        elif roll < cfg.knowledge_fraction + cfg.critique_fraction:
            yield critique_document(world, rng)
        else:
            yield chat_document(world, rng)
