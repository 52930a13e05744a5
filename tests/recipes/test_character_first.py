"""The character-first pipeline's mechanics on a tiny random-init model: the seed prompts reach step 1 and
(by the knob) step 3, every stage's model is measured bare and seeded, and a rerun resumes without redoing work."""

import json

import pytest
import yaml

from tether.core.config import load_config
from tether.pipelines import character_first

TINY_EVAL = ["suite.n=2", "suite.heldout_n=0", "generation.max_new_tokens=4"]


def _cfg(tmp_path, name, *overrides):
    return load_config(character_first.CharacterFirstConfig, "character-first/world", [
        "model=tiny:llama", "character_steps=4", "early_stop_every=2", "early_stop_patience=1",
        "character=" + json.dumps([{"config": "grpo/world-character", "recipe": "grpo", "set": [
            "generation.max_new_tokens=6", "loop.batch_size=16", *(f"evaluation.harness.{o}" for o in TINY_EVAL)]}]),
        "amplify.set=[loop.max_steps=2, loop.batch_size=16, generation.max_new_tokens=6]",
        f"evaluation.set={json.dumps(TINY_EVAL)}", f"out={tmp_path / name}", *overrides])


def _context(run_dir):
    return yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["context"]


def test_seed_prompts_reach_both_steps_and_every_model_is_measured_twice(tmp_path):
    cfg = _cfg(tmp_path, "cf")
    results = character_first.run(cfg)
    out = tmp_path / "cf"
    assert _context(out / "character")["texts"] == cfg.seed_prompts.texts
    assert _context(out / "amplify")["texts"] == cfg.seed_prompts.texts
    amplify = yaml.safe_load((out / "amplify" / "config.yaml").read_text())
    assert amplify["model"]["path"] == str(out / "character" / "model")
    assert set(results["evals"]) == {"base", "character", "amplify"}
    for evals in results["evals"].values():
        assert set(evals) == {"bare", "seeded"}
        assert "harmless.harmful_compliance" in evals["seeded"]["metrics"]
    seeded = [json.loads(line) for line in (out / "eval-amplify-seeded" / "samples.jsonl").read_text().splitlines()]
    assert all(r["prompt"][0]["role"] == "system" and r["prompt"][0]["content"] in cfg.seed_prompts.texts
               for r in seeded)
    # A random model's resistance never improves: step 1 stops at its second evaluation, which it
    # measured under the seed prompts.
    assert results["stages"]["character"]["stopped_early_at"] == 4
    harness = [json.loads(line) for line in
               (out / "character" / "evals" / "step-000002" / "samples.jsonl").read_text().splitlines()]
    assert all(r["prompt"][0]["content"] in cfg.seed_prompts.texts for r in harness)
    assert json.loads((out / "character_first.json").read_text())["evals"] == results["evals"]

    # Rerun: every stage is finished, nothing is trained or generated again (only the pipeline's own record,
    # config and results are written again).
    own = {out / "character_first.json", out / "record.json", out / "config.yaml"}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p not in own}
    assert character_first.run(cfg, resume=True)["evals"] == results["evals"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


@pytest.mark.slow  # 3.5 s for one knob's edge; the seed-prompt path above runs every time
def test_bare_amplification_knob_leaves_tasks_without_seed_prompts(tmp_path):
    character_first.run(_cfg(tmp_path, "bare", "prompted_amplification=false", "evaluate_seeded=false",
                             "early_stop_metric=null"))
    assert _context(tmp_path / "bare" / "character") is not None
    assert _context(tmp_path / "bare" / "amplify") is None
    assert not (tmp_path / "bare" / "eval-amplify-seeded").exists()


def _with_small_harness(tmp_path, recipe):
    """The shipped world config of ``recipe`` with a 14-prompt early-stopping harness (the character-first arm
    keeps a config's harness and drops its evaluation overrides)."""
    from tether.core.config import dump_config, load_config
    from tether.core.recipes import RECIPES

    harness = "{suite: {kind: world-hhh, n: 2, heldout_n: 0}, generation: {max_new_tokens: 4}, report_samples: 0}"
    cfg = load_config(RECIPES.get(recipe).config, f"{recipe}/world", [f"evaluation.harness={harness}"])
    path = tmp_path / f"{recipe}.yaml"
    path.write_text(dump_config(cfg))
    return str(path)


@pytest.mark.slow  # every arm end to end: ~21 s on the 2-core test machine (python -m pytest -m slow ...)
def test_recipe_comparison_runs_every_arm_and_tabulates_them(tmp_path):
    from tether.pipelines import recipe_comparison

    small = ["loop.batch_size=8", "loop.log_every=1"]
    gen = ["generation.max_new_tokens=6", "generation.batch_size=64"]
    cfg = recipe_comparison.RecipeComparisonConfig.model_validate({
        "model": "tiny:llama", "seeds": [0], "budget": 4, "early_stop_every": 2, "out": str(tmp_path / "x"),
        "sft": {"config": _with_small_harness(tmp_path, "sft"), "set": ["evaluation.every=0", *small]},
        # Reference log-probs as the steps need them: precomputing them all is for 4,000 pairs, not 4 steps.
        "dpo": {"config": _with_small_harness(tmp_path, "dpo"),
                "set": ["evaluation.every=0", "reference.precompute=false", *small]},
        "critique": {"config": "critique/world", "set": ["limit=8", *gen, "critic_generation.max_new_tokens=6"]},
        "feedback": {"config": "feedback/world", "set": ["limit=8", *gen]},
        "distill": {"config": "distill/world-character", "set": ["limit=8", *gen, *small]},
        "rlvr": {"config": "grpo/world-rlvr", "set": ["loop.max_steps=2", "loop.batch_size=16",
                                                      "generation.max_new_tokens=6"]},
        "evaluation": {"config": "eval/world-hhh", "set": TINY_EVAL},
    })
    results = recipe_comparison.run(cfg)
    assert set(results["arms"]) == set(recipe_comparison.ARMS)
    arms = {(r["arm"], r["condition"], r["stage"]) for r in results["table"]}
    assert ("character-first", "seeded", "amplified") in arms and ("standard", "bare", "aligned") in arms
    assert len(arms) == 1 + 4 * 2 + 2
    out = tmp_path / "x"
    assert (out / "recipes.png").stat().st_size > 10_000
    # The constitutional arm trains on its own revisions and its own AI feedback.
    sft = yaml.safe_load((out / "constitutional" / "seed-0" / "sft" / "config.yaml").read_text())
    dpo = yaml.safe_load((out / "constitutional" / "seed-0" / "dpo" / "config.yaml").read_text())
    assert sft["data"]["train"].endswith("critique/sft.jsonl") and dpo["data"]["train"].endswith("preferences.jsonl")
    # Character-first: the standard arm's SFT and DPO data, with the seed prompts and early stopping.
    for stage, standard in (("character-1-sft", "sft"), ("character-2-dpo", "dpo")):
        character = yaml.safe_load((out / "character-first" / "seed-0" / stage / "config.yaml").read_text())
        assert character["data"]["context"]["texts"] == cfg.seed_prompts.texts
        assert character["evaluation"]["every"] == 2 and character["loop"]["max_steps"] == 2
        assert character["data"]["train"] == yaml.safe_load(
            (out / "standard" / "seed-0" / standard / "config.yaml").read_text())["data"]["train"]
        assert (out / "character-first" / "seed-0" / stage / "evals" / "step-000002" / "metrics.json").is_file()
