"""The no-gold track: the crowd's data carry nothing from gold and are better than the corpus they are drawn
from (measured on gold here, in the test, never in the rows), and ``tether run`` with ``no_gold`` refuses a
stage that would read gold, with the shipped no-gold pipelines reading only crowd data."""

import json
import random
from pathlib import Path

import pytest

from tether.core.config import load_config
from tether.core.errors import ConfigError
from tether.pipelines import main as pipeline
from tether.train.grpo import GRPOConfig
from tether.train.sft import SFTConfig
from tether.world.annotators import BIASED_POOL, DEFAULT_POOL
from tether.world.datasets import (
    NO_GOLD_FILES,
    crowd_preference_rows,
    crowd_sft_audit,
    crowd_sft_rows,
    export_all,
)
from tether.world.spec import WorldConfig, build_world

WORLD = build_world(WorldConfig(seed=0))
PROMPT_KEYS = {"messages", "family"}
PAIR_KEYS = {"prompt", "chosen", "rejected", "family", "posterior"}


def test_crowd_demonstrations_carry_no_gold_and_are_mostly_the_best_candidate():
    n = 300
    rows = crowd_sft_rows(WORLD, n, seed=3, candidates=4)
    assert len(rows) == n and all(set(r) == PROMPT_KEYS for r in rows)
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    audit = crowd_sft_audit(WORLD, n, seed=3, candidates=4)
    overall = audit["all"]
    assert overall["prompts"] == n == sum(a["prompts"] for k, a in audit.items() if k != "all")
    # About half the corpus's replies are bad, yet the crowd's pick is the best of four nearly always, and
    # good wherever one of the four is; where none is (jailbreaks, which the corpus mostly complies with),
    # no ranking can help: the reason the shipped files rank eight.
    assert overall["pick_is_best"] > 0.9 and overall["pick_is_good"] > 0.85
    assert overall["pick_is_good"] <= overall["any_good"]
    assert audit["jailbreak"]["any_good"] < 0.8 < audit["benign"]["any_good"]
    eight = crowd_sft_audit(WORLD, n, seed=3)
    assert eight["jailbreak"]["any_good"] > audit["jailbreak"]["any_good"]
    # The biased annotators like flattery and padding: of eight candidates, their picks carry more of it
    # than the four's do, and the four's more than the corpus's 36% (1 - 0.8 * 0.8).
    biased = crowd_sft_audit(WORLD, n, seed=3, pool=BIASED_POOL)
    assert biased["all"]["pick_styled"] > eight["all"]["pick_styled"] + 0.04
    assert eight["all"]["pick_styled"] > 0.5


def test_crowd_pairs_carry_no_gold_and_mostly_agree_with_it():
    from tether.world.annotators import gold_preference

    for pool in (DEFAULT_POOL, BIASED_POOL):
        rows = crowd_preference_rows(WORLD, 400, seed=1, pool=pool)
        assert all(set(r) == PAIR_KEYS for r in rows) and all(0.5 <= r["posterior"] <= 1 for r in rows)
        items = {json.dumps(r["prompt"]): r for r in rows}
        assert len(items) > 300
    # Gold agreement, computed here: items are rebuilt by drawing the same prompts.
    rng = random.Random(f"pref-crowd:{WORLD.config.seed}:1")
    from tether.world.datasets import _items, _response_pair

    rows = crowd_preference_rows(WORLD, 400, seed=1)
    agree = decided = 0
    for item, row in zip(_items(WORLD, 400, "train", rng), rows, strict=True):
        first, second = _response_pair(WORLD, item, rng)
        for _ in DEFAULT_POOL:
            rng.random()
        gold = gold_preference(item, first, second)
        if gold != 0.5:
            decided += 1
            agree += (gold == 1.0) == (row["chosen"] == first)
    assert decided > 150 and agree / decided > 0.85, (agree, decided)


def test_gold_reads_names_every_way_a_stage_could_read_gold(tmp_path):
    data = str(tmp_path / "world-data")
    clean = load_config(SFTConfig, "sft/world", [f"data.train={data}/sft_crowd.jsonl", "evaluation.every=0"])
    assert pipeline.gold_reads(clean, data) == []
    builtin = load_config(SFTConfig, "sft/world", [])      # builtin:world-sft and in-training evaluation
    found = pipeline.gold_reads(builtin, data)
    assert any("data.train: builtin:world-sft" in f for f in found)
    assert any(f.startswith("evaluation.every: 50") for f in found)
    gold_file = load_config(SFTConfig, "sft/world", [f"data.train={data}/sft.jsonl", "evaluation.every=0"])
    assert [f.split(" (")[0] for f in pipeline.gold_reads(gold_file, data)] == [f"data.train: {data}/sft.jsonl"]
    # The same file named another way is the same file.
    detour = load_config(SFTConfig, "sft/world", [f"data.train={tmp_path}/./elsewhere/../world-data/sft.jsonl",
                                                  "evaluation.every=0"])
    assert len(pipeline.gold_reads(detour, data)) == 1
    reward = load_config(GRPOConfig, "grpo/world-rlvr", [f"data.train={tmp_path}/mine.jsonl",
                                                        'rewards=[{"kind": "world-gold"}]'])
    assert any("world-gold (a reward computed from gold)" in f for f in pipeline.gold_reads(reward, data))


@pytest.mark.parametrize("name", ["run/world-no-gold", "run/world-no-gold-biased"])
def test_the_shipped_no_gold_pipelines_train_on_crowd_data_only(tmp_path, name):
    cfg = load_config(pipeline.PipelineConfig, name)
    assert cfg.no_gold and cfg.model == "world:base"
    data = str(tmp_path / "world-data")
    values = {"world_seed": "0", "out": str(tmp_path), "world_data": data}
    reads = []
    for stage in cfg.stages:
        stage_cfg = pipeline._stage_config(stage, {**values, "model": "base"}, "base", tmp_path, 0)
        assert pipeline.gold_reads(stage_cfg, data) == []
        reads.append(Path(stage_cfg.data.train).name)
    assert reads and all(r in NO_GOLD_FILES for r in reads)
    # The check can fail: the default pipeline trains on gold demonstrations and gold pairs.
    with pytest.raises(ConfigError, match=r"stage 'sft': data.train: .*sft.jsonl .*stage 'dpo': data.train: "
                                          r".*preferences_gold.jsonl"):
        pipeline._refuse_gold(load_config(pipeline.PipelineConfig, "run/world", ["no_gold=true"]), tmp_path,
                              values, "base")


def test_the_exported_no_gold_files_hold_only_prompts_replies_and_crowd_columns(tmp_path):
    export_all(WORLD, tmp_path, n=40)
    for name in NO_GOLD_FILES:
        rows = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert len(rows) == 40 and set().union(*(set(r) for r in rows)) <= PROMPT_KEYS | PAIR_KEYS, name
