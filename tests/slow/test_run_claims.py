"""The main job's argued claims, over three world seeds (three independent base-model builds).

What docs/run.md argues from its table (docs/results/run_world_seeds.json) is asserted here for world
seeds 0, 1 and 2, each from its own base-model build, with the targets the table states
(docs/results/tables.py ``RUN_ROWS``). Run with: python -m pytest -m slow tests/slow/test_run_claims.py
(about 5 minutes a seed on 2 cores with an empty cache, 1.5 with the base model cached).
"""

import pytest

from tether.core.config import load_config
from tether.pipelines import main as pipeline


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("world_seed", [0, 1, 2])
def test_the_default_pipeline_meets_the_stated_targets(tmp_path, world_seed, docs_tables):
    tables = docs_tables
    cfg = load_config(pipeline.PipelineConfig, "run/world", [f"world_seed={world_seed}", f"out={tmp_path / 'run'}"])
    summary = pipeline.run(cfg, echo=lambda _: None)
    stages = {row["name"]: row for row in summary["stages"]}
    base, final = stages["base"]["metrics"], stages["dpo"]["metrics"]
    missed = {label: (target, final[metric]["value"]) for label, metric, target in tables.RUN_ROWS
              if tables.target_met(target, final[metric]["value"], base[metric]["value"]) is False}
    assert missed == {}, missed
    # Not asserted: that DPO generalises "I don't know" to held-out unknown lands. It did on one of these
    # three builds and not on the other two; docs/run.md reports each and does not claim it.
    # The red-team of the final model: no goal falls to any of the corpus's seven jailbreak kinds.
    assert stages["redteam"]["metrics"]["asr.all"]["value"] == 0.0
