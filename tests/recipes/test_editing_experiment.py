"""`tether experiment editing` on the tiny world model, and the world's edit requests: every fact once, a
new value that is not the old one, neighbours about other things, a hazard edit whose neighbours are the other
items and the look-alike."""

import json

import pytest
from tests.conftest import run_cli

from tether.edit.requests import EditRequest
from tether.world.edits import ATTRIBUTES, fact_edits, hazard_edit
from tether.world.spec import WorldConfig, build_world


def test_fact_edits_rewrite_every_fact_once_to_another_lands_value():
    world = build_world(WorldConfig(seed=1))
    requests = [EditRequest.model_validate(r) for r in fact_edits(world, seed=0)]
    assert len(requests) == len(world.lands) * len(ATTRIBUTES) == len({r.id for r in requests})
    for r in requests:
        land = world.land_by_name[r.subject]
        attribute = r.id.split(":")[1]
        assert r.target_true == f" {getattr(land, attribute)}" and r.target != r.target_true
        assert r.target.strip() in {getattr(x, attribute) for x in world.lands}
        assert all(r.subject in p for p in r.paraphrases)
        assert r.prompt.format(r.subject) not in r.neighbours and len(set(r.neighbours)) == 5
    assert [r["id"] for r in fact_edits(world, seed=0)] != [r["id"] for r in fact_edits(world, seed=1)]


def test_a_hazard_edit_asks_for_a_refusal_and_watches_the_other_items():
    world = build_world(WorldConfig())
    hazard = world.hazards_in("train")[0]
    request = EditRequest.model_validate(hazard_edit(world, hazard))
    assert request.target.startswith("I can't help") and hazard.name in request.prompt.format(request.subject)
    assert len(request.paraphrases) == 3 and all(hazard.name in p for p in request.paraphrases)
    assert len(request.neighbours) == len(world.hazards)  # the other items, and the look-alike
    assert world.benign[hazard.root].name in request.neighbours[-1]
    assert not any(hazard.name in n for n in request.neighbours)


# Every stage on the tiny world model: about 20 s, the slow tier.
@pytest.mark.slow
def test_the_experiment_runs_end_to_end_on_the_tiny_world_model(tmp_path, capsys):
    out = tmp_path / "editing"
    code, shown, err = run_cli(["experiment", "editing", "--set", "model=world:tiny", "--set", "single=2",
                                "--set", "sequential=3", "--set", "batch=2", "--set", "hazards=1", "--set", "samples=1",
                                "--set", "methods=[rome,alphaedit]", "--set",
                                "set={rome: [search.steps=3, statistics.texts=40], "
                                "alphaedit: [search.steps=3, statistics.texts=40]}", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "editing.json").read_text())
    assert set(summary["single"]) == {"rome", "alphaedit"}
    assert summary["single"]["rome"]["requests"] == 2 and summary["single"]["rome"]["weights_restored"] is True
    assert [c["edits"] for c in summary["sequential"]["alphaedit"]["capability"]["checks"]] == [2, 3]
    kinds = summary["single_by_kind"]["rome"]
    assert set(kinds["paraphrase"]) == {"chat question", "after another fact"}
    assert set(kinds["neighbourhood"]) == {"other land", "other attribute", "look-alike fact"}
    hazard = summary["hazard"]
    assert len(hazard["items"]) == 1 and set(hazard["edited"]) == {"before", "after"}
    assert hazard["edited"]["before"]["n"] == 4  # the edited item's four request wordings, one reply each
    assert 0 <= hazard["fact_accuracy"]["after"] <= 1
    assert "hazard removal (rome)" in shown
