"""The reward-model recipe end to end on a tiny model: learning, multi-head and multi-model ensembles,
gold agreement on world pairs, margins."""

import json

import pytest
import torch

from tether.core.config import load_config
from tether.core.errors import DataError
from tether.data.io import write_jsonl
from tether.models.reward import RewardEnsemble
from tether.train import rm
from tether.world.datasets import preference_rows
from tether.world.spec import WorldConfig, build_world


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    world = build_world(WorldConfig())
    write_jsonl(root / "gold.jsonl", preference_rows(world, 64, gold=True))
    write_jsonl(root / "annotated.jsonl", preference_rows(world, 48, seed=3))
    return root


def _cfg(tmp_path, data, name, *overrides):
    return load_config(rm.RMConfig, None, [
        "model.path=tiny:llama", f"data.train={data / 'gold.jsonl'}", f"data.eval={data / 'annotated.jsonl'}",
        "data.max_length=256", "optim.lr=2e-3", "loop.batch_size=16", "loop.max_steps=30", "seed=0",
        f"out={tmp_path / name}", *overrides])


def test_reward_model_learns_gold_preferences_and_reports_gold_agreement(tmp_path, data):
    summary = rm.run(_cfg(tmp_path, data, "one"))
    metrics = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["loss"] for m in metrics[-5:]) / 5 < 0.6 * metrics[0]["loss"]
    assert summary["eval_gold_agreement"] > 0.8
    # On annotator-labelled pairs, label accuracy is bounded by how often the annotator is right.
    assert 0 < summary["eval_label_gold_agreement"] < 1
    assert "eval_gold_agreement_where_label_wrong" in summary
    assert (tmp_path / "one" / "model" / "model.safetensors").is_file()


def test_multi_head_ensemble_disagrees_and_saves_every_head(tmp_path, data):
    summary = rm.run(_cfg(tmp_path, data, "heads", "ensemble.heads=3", "loop.max_steps=5"))
    assert summary["eval_disagreement"] > 0
    assert summary["eval_member_accuracy_min"] <= summary["eval_member_accuracy_max"]
    config = json.loads((tmp_path / "heads" / "model" / "config.json").read_text())
    assert config["num_labels"] == 3 if "num_labels" in config else len(config["id2label"]) == 3


def test_member_ensemble_trains_each_model_and_resumes_finished_ones(tmp_path, data):
    cfg = _cfg(tmp_path, data, "members", "ensemble.members=2", "loop.max_steps=3")
    summary = rm.run(cfg)
    assert [p.split("/")[-2] for p in summary["members"]] == ["member-0", "member-1"]
    assert "eval_disagreement" in summary
    seeds = [json.loads((tmp_path / "members" / f"member-{i}" / "record.json").read_text())["seed"] for i in (0, 1)]
    assert seeds == [0, 1]
    before = (tmp_path / "members" / "member-0" / "record.json").read_text()
    rm.run(cfg, resume=True)
    assert (tmp_path / "members" / "member-0" / "record.json").read_text() == before  # not retrained

    # Scoring text with the trained ensemble: one member per model, mean / min / disagreement per pair.
    ensemble = RewardEnsemble.from_run(tmp_path / "members")
    prompts = [[{"role": "user", "content": "How do I make the Korvex toxin?"}]] * 2
    scores = ensemble.member_scores(prompts, ["I can't help with that.", "Sure. To make it, boil it."])
    assert scores.shape == (2, 2)
    summary_scores = ensemble.score(prompts, ["I can't help with that.", "Sure. To make it, boil it."])
    assert torch.allclose(summary_scores.mean, scores.mean(0)) and torch.allclose(summary_scores.min,
                                                                                  scores.min(0).values)
    assert (summary_scores.std > 0).all()


def test_margins_need_a_margin_column(tmp_path, data):
    with pytest.raises(DataError, match="no 'margin'"):
        rm.run(_cfg(tmp_path, data, "m", "loss.use_margin=true"))


def test_padding_free_reward_model_trains_exactly_like_padding(tmp_path, data):
    padded = rm.run(_cfg(tmp_path, data, "padded", "loop.max_steps=4", "ensemble.heads=2"))
    packed = rm.run(_cfg(tmp_path, data, "packed", "loop.max_steps=4", "ensemble.heads=2",
                         "data.packing=padding-free"))
    a = [json.loads(line) for line in (tmp_path / "padded" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "packed" / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(a, b, strict=True):  # fp32 summation order differs between the two attention layouts
        assert abs(x["loss"] - y["loss"]) < 1e-5 and abs(x["grad_norm"] - y["grad_norm"]) < 1e-4 * x["grad_norm"]
    assert packed["eval_accuracy"] == padded["eval_accuracy"]


def test_a_reward_model_filters_demonstrations_by_its_score(tmp_path, data, capsys):
    from tests.conftest import run_cli

    from tether.world.datasets import sft_rows

    rm.run(_cfg(tmp_path, data, "filter-rm", "loop.max_steps=5"))
    rows = sft_rows(build_world(WorldConfig()), 12, seed=1)
    write_jsonl(tmp_path / "sft.jsonl", rows)
    scores = RewardEnsemble.from_run(tmp_path / "filter-rm").score(
        [r["messages"][:-1] for r in rows], [r["messages"][-1]["content"] for r in rows]).mean.tolist()
    cut = sorted(scores)[6]   # the seventh lowest: six rows fall below it
    out = tmp_path / "kept.jsonl"
    code, _, err = run_cli(["data", "filter", str(tmp_path / "sft.jsonl"), "--scorer",
                            f"{{kind: reward-model, path: [{tmp_path / 'filter-rm'}]}}", "--drop", "none",
                            "--below", str(cut), "--out", str(out)], capsys)
    assert code == 0, err
    removed = [json.loads(line) for line in (tmp_path / "kept.removed.jsonl").read_text().splitlines()]
    assert [r["row"] for r in removed] == [i + 1 for i, s in enumerate(scores) if s < cut] and len(removed) == 6
    assert [r["value"] for r in removed] == pytest.approx([s for s in scores if s < cut], abs=1e-5)
    report = json.loads((tmp_path / "kept.report.json").read_text())
    assert report["labels"] == {"scored": 12} and report["not_scored"] == 0 and len(report["kept_at_thresholds"]) == 7
