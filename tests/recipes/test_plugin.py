"""A third-party package extends tether through the ``tether.plugins`` entry point alone: its recipe appears
as ``tether train NAME``, as a ``tether config`` kind, in ``tether plugins list`` and as a ``tether run``
stage (chained to the next stage), and its DPO-family variant trains through ``tether train dpo``. Nothing
of tether's is edited; the commands run through tether's entry point in a fresh process that finds the
plugin by its metadata alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PLUGIN = '''
"""A toy tether plugin: a recipe that perturbs a model's weights, and a DPO-family variant."""

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from tether.core.config import Config
from tether.core.recipes import output, recipe
from tether.core.runs import RunDir
from tether.losses.preference import PairLogps, PreferenceLoss, preference_loss
from tether.models.loading import ModelConfig, load_model_and_tokenizer, save_model


class JitterConfig(Config):
    """``tether train jitter``: add Gaussian noise to every weight."""

    model: ModelConfig
    scale: float = Field(1e-3, ge=0, description="standard deviation of the noise")
    out: str = "runs/jitter"
    seed: int = 0


@recipe("jitter", group="train", config=JitterConfig, summary="Add Gaussian noise to every weight.",
        example="tether train jitter --set model.path=tiny:llama --out runs/jitter",
        consumes={"model": "model.path"}, produces={"model": output("model")})
def run(cfg: JitterConfig, *, resume: bool = False) -> dict[str, Any]:
    """Perturb the model and save it."""
    run_dir = RunDir(cfg.out, command="train jitter", config=cfg, seed=cfg.seed, resume=resume)

    def body(rd: RunDir) -> dict[str, Any]:
        model, tokenizer = load_model_and_tokenizer(cfg.model)
        generator = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(cfg.scale * torch.randn(p.shape, generator=generator))
        rd.add_output("model", save_model(model, tokenizer, Path(cfg.out) / "model"))
        return {"parameters": sum(p.numel() for p in model.parameters())}

    return run_dir.execute(body)


@preference_loss("margin-squared")
def margin_squared(policy: PairLogps, reference: PairLogps, *, beta: float = 0.1,
                   target: float = 1.0) -> PreferenceLoss:
    """(β h - target)², h the chosen-minus-rejected log-ratio.

    Args:
        beta: scale of the implicit reward
        target: the margin aimed for
    """
    chosen, rejected = policy.chosen - reference.chosen, policy.rejected - reference.rejected
    losses = (beta * (chosen - rejected) - target) ** 2
    return PreferenceLoss(losses, (beta * chosen).detach(), (beta * rejected).detach())
'''


def _install(root: Path) -> dict[str, str]:
    """The plugin package plus the metadata pip would write for it; the environment that finds both."""
    root.mkdir()
    (root / "toy_tether_plugin.py").write_text(PLUGIN)
    dist = root / "toy_tether_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-tether-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tether.plugins]\ntoy = toy_tether_plugin\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


# Runs each command line through tether's entry point in one fresh process (the plugin found there by its
# metadata alone), printing each one's exit code and output as a JSON line.
DRIVER = """
import contextlib, io, json, sys
from tether.cli.main import main

for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
            code = 0
        except SystemExit as done:
            code = done.code or 0
    print(json.dumps({"argv": argv, "code": code, "out": out.getvalue()}))
"""


def _tether(env: dict[str, str], *commands: list[str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(commands))], env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    ran = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"argv"')]
    assert [r["code"] for r in ran] == [0] * len(commands), result.stdout + result.stderr
    return [r["out"] for r in ran]


@pytest.mark.slow  # a fresh interpreter that discovers every module and runs a pipeline (11 s): slow tier
def test_a_plugins_recipe_and_loss_appear_everywhere_a_builtin_one_does(tmp_path):
    env = _install(tmp_path / "site")
    config = tmp_path / "jitter.yaml"
    config.write_text("model: {path: tiny:llama}\nscale: 0.5\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({
        "model": "tiny:llama", "evaluation": None, "redteam": None,
        "stages": [{"name": "noise", "recipe": "jitter", "config": str(config)},
                   {"name": "sft", "recipe": "sft", "config": "sft/demo",
                    "set": ["loop.max_steps=1", "loop.batch_size=2", "evaluation.every=0"]}]}))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Say {w}.", "chosen": w, "rejected": "no"}) + "\n"
                             for w in ("yes", "sure", "ok", "fine")))

    trained, shown, listed, _, _ = _tether(
        env,
        # tether train NAME, with the same options as every recipe
        ["train", "jitter", "--set", "model.path=tiny:llama", "--set", "scale=0.01", "--out", str(tmp_path / "jitter")],
        # tether config show: its config is a kind like any recipe's
        ["config", "show", str(config), "--kind", "jitter"],
        # tether plugins list names the module that registered each entry
        ["plugins", "list", "--json"],
        # a tether run stage, its model handed to the next stage (SFT)
        ["run", "--config", str(pipeline), "--out", str(tmp_path / "run")],
        # the plugin's DPO-family variant, its knobs from its signature, through tether train dpo
        ["train", "dpo", "--set", "model.path=tiny:llama", "--set", f"data.train={pairs}", "--set",
         "loss={variant: margin-squared, target: 2.0}", "--set", "loop.max_steps=1", "--set", "loop.batch_size=4",
         "--out", str(tmp_path / "dpo")])

    assert json.loads(trained[:trained.rindex("}") + 1])["parameters"] > 0
    record = json.loads((tmp_path / "jitter" / "record.json").read_text())
    assert record["status"] == "finished" and (tmp_path / "jitter" / "model" / "config.json").is_file()

    shown_cfg = yaml.safe_load(shown)
    assert shown_cfg["scale"] == 0.5 and shown_cfg["out"] == "runs/jitter" and shown_cfg["model"]["lora"] is None

    entries = json.loads(listed)
    assert entries["recipe"]["entries"]["jitter"] == "toy_tether_plugin"
    assert entries["preference loss"]["entries"]["margin-squared"] == "toy_tether_plugin"

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [s["recipe"] for s in summary["stages"]] == ["base", "jitter", "sft"]
    assert summary["stages"][1]["model"] == str(tmp_path / "run" / "noise" / "model")
    sft_config = yaml.safe_load((tmp_path / "run" / "sft" / "config.yaml").read_text())
    assert sft_config["model"]["path"] == str(tmp_path / "run" / "noise" / "model")

    logged = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    # At step 0 the policy is its reference: h = 0, so the loss is target² = 4.
    assert abs(logged[0]["loss"] - 4.0) < 1e-5
    assert yaml.safe_load((tmp_path / "dpo" / "config.yaml").read_text())["loss"] == {
        "variant": "margin-squared", "beta": 0.1, "target": 2.0}
