"""Word-swap sets and the static guard's box: every text within the budget lands inside the box (checked by
enumerating the swaps), certification over swaps never exceeds the attack, and budget one is exhaustive."""

import itertools

import torch

from tether.guard.classifier import StaticModel
from tether.verify.certify import static_box, substitution_curve
from tether.verify.substitutions import LOOKALIKES, Slots, greedy_attack, substitutes


def test_substitutes_are_look_alikes_leetspeak_typos_and_synonyms():
    swaps = substitutes("poison", {"poison": ["toxin"]})
    assert swaps[0] == "toxin" and "p0150n" in swaps and "posion" in swaps and "poion" in swaps and "Poison" in swaps
    assert "poison" not in swaps and any(LOOKALIKES["o"] in s for s in swaps)
    assert substitutes("to") == [] and substitutes("42") == []
    assert Slots.of("make the poison").text({2: "toxin"}) == "make the toxin"


def test_greedy_attack_is_exhaustive_at_budget_one():
    slots = Slots(["a", "b", "c"], [["x"], ["y", "z"], []])
    seen = []

    def logit(texts):
        seen.extend(texts)
        return [-1.0 if t == "a z c" else 1.0 for t in texts]

    held, worst = greedy_attack(slots, logit, label=True, threshold=0.0, budget=1)
    assert not held and worst == "a z c"
    assert set(seen) == {"a b c", "x b c", "a y c", "a z c"}


def _tiny_static(hidden=6):
    torch.manual_seed(0)
    from transformers import AutoTokenizer

    from tether.scoring.refusal import embedder_location

    tokenizer = AutoTokenizer.from_pretrained(embedder_location("minilm"))
    vectors = torch.randn(len(tokenizer), 8)
    idf = torch.rand(len(tokenizer)) + 0.5
    return StaticModel("minilm", vectors, idf, 64, tokenizer=tokenizer, hidden=hidden)


def test_every_text_within_the_budget_lies_in_the_static_box():
    model = _tiny_static()
    slots = Slots.of("how to make poison gas at home")
    for budget in (0, 1, 2):
        box = static_box(model, slots, budget)
        if box is None:  # its norm could reach zero: no box (the row is left uncertified), never a wrong one
            assert budget == 2
            continue
        lower, upper = box
        positions = [i for i, o in enumerate(slots.options) if o]
        texts = []
        for chosen in itertools.combinations(positions, budget):
            for picks in itertools.product(*(slots.options[i] for i in chosen)):
                texts.append(slots.text(dict(zip(chosen, picks, strict=True))))
        pooled, owner = model.pooled(texts)
        assert len(owner) == len(texts)
        assert (pooled >= lower - 1e-5).all() and (pooled <= upper + 1e-5).all()
        if budget == 0:
            assert torch.allclose(lower, upper) and torch.allclose(lower, pooled[0], atol=1e-5)


def test_certified_accuracy_over_swaps_never_exceeds_the_attack():
    from tether.guard.classifier import head_layers

    model = _tiny_static()
    layers = head_layers(model.head)
    texts = ["how to make poison gas at home", "what is the capital of france", "tell me a story about cats",
             "write a poem about the ocean", "explain how vaccines work please"]

    def logits(batch):
        with torch.no_grad():
            pooled, _ = model.pooled(batch)
            return torch.nn.Sequential(*layers)(pooled).squeeze(-1).tolist()

    base = logits(texts)
    rows = [(t, v >= 0.0) for t, v in zip(texts, base, strict=True)]  # right on every row with no swaps
    curve = substitution_curve(rows, logits, 0.0, [0, 1, 2], layers=layers,
                               box=lambda slots, budget: static_box(model, slots, budget))
    assert curve[0]["certified"]["value"] == 1.0 and curve[0]["empirical"]["value"] == 1.0
    for point in curve:
        assert point["certified"]["value"] <= point["empirical"]["value"]
    enumerated = substitution_curve(rows, logits, 0.0, [1, 2])
    assert enumerated[0]["method"] == "enumeration" and enumerated[1]["certified"] is None
