"""`tether experiment sae-frontier` end to end on the tiny world model: every kind at two sparsities over
two seeds with their metrics, a feature ablated beside the difference-of-means direction, and a report
with feature cards."""

import json

import pytest
from tests.conftest import run_cli

# Twelve SAEs, the spliced losses and generation under two ablations: about 30 s, the slow tier
# (python -m pytest -m slow tests/recipes/test_sae_frontier.py).


@pytest.mark.slow
def test_the_frontier_runs_end_to_end_on_the_tiny_world_model(tmp_path, capsys):
    out = tmp_path / "sae"
    code, shown, err = run_cli([
        "experiment", "sae-frontier", "--set", "model=world:tiny", "--set", "texts=60", "--set", "heldout=12",
        "--set", "ks=[2,8]", "--set", "l0_coefficients=[0.3,0.01]", "--set", "seeds=[0,1]", "--set", "sae.width=64",
        "--set", "sae.epochs=2", "--set", "sae.batch_size=256", "--set", "feature_sae=topk:8",
        "--set", "rank_prompts=8", "--set", "effect_candidates=3", "--set", "n=8", "--set", "max_new_tokens=6",
        "--set", "cards=3",
        "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "sae_frontier.json").read_text())
    names = [p["name"] for p in summary["frontier"]]
    assert names == ["topk:2", "topk:8", "batchtopk:2", "batchtopk:8", "jumprelu:0.3", "jumprelu:0.01"]
    for point in summary["frontier"]:
        assert len(point["runs"]) == 2
        assert point["min"]["l0"] <= point["mean"]["l0"] <= point["max"]["l0"]
        assert point["mean"]["explained_variance"] <= 1 and 0 <= point["mean"]["dead_fraction"] <= 1
    topk = {p["name"]: p["mean"]["l0"] for p in summary["frontier"]}
    assert topk["topk:2"] <= 2 and topk["topk:2"] < topk["topk:8"] <= 8
    effects = summary["ablation"]["effects"]
    chosen, top = summary["ablation"]["by_effect"], summary["ablation"]["feature"]
    assert set(chosen["refusal_change_on_ranking_prompts"]) == {
        f"{f}@{scope}" for f in summary["ablation"]["ranked"][:3] for scope in ("site", "every-layer")}
    assert chosen["feature"] in summary["ablation"]["ranked"][:3] and chosen["scope"] in ("site", "every-layer")
    assert f"SAE feature {top}'s direction, every layer: refusal" in effects
    assert "difference-of-means direction, every layer: refusal" in effects
    # Six interventions (the top 1, 5 and 20 features at the site, the top feature's direction at every layer,
    # the difference of means at the site and at every layer) and, when effect chose another feature, its
    # two; two behaviours each.
    assert len(effects) == (12 if chosen["feature"] == top else 16)
    assert (f"SAE feature {chosen['feature']} (chosen by effect): refusal" in effects) == (chosen["feature"] != top)
    assert all(e["n"] == summary["ablation"]["prompts"]["eval"] for e in effects.values())
    report = (out / "report.html").read_text()
    assert report.count("class='card feature'") == 3 and "<svg" in report
    assert (out / "saes" / "topk-8" / "cfg.json").exists()
    assert "topk:8" in shown
