"""GRPO end to end on a tiny model: a length penalty shortens replies; world rewards and gold are logged."""

import json

import pytest

from tether.core.config import load_config
from tether.core.errors import ConfigError
from tether.train import grpo


def _cfg(tmp_path, name, *overrides):
    return load_config(grpo.GRPOConfig, None, [
        "model.path=tiny:llama", "data.train=builtin:world-prompts", "generation.max_new_tokens=24",
        "group_size=4", "loop.batch_size=16", "optim.lr=3e-3", "seed=0", f"out={tmp_path / name}", *overrides])


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_length_penalty_teaches_a_random_model_to_stop(tmp_path):
    grpo.run(_cfg(tmp_path, "short", "rewards=[{kind: length}]", "loop.max_steps=30", "loss.beta=0.0", "optim.lr=1e-2"))
    metrics = _metrics(tmp_path / "short")
    first = sum(m["completion_tokens"] for m in metrics[:5]) / 5
    last = sum(m["completion_tokens"] for m in metrics[-5:]) / 5
    assert first > 20 and last < 0.5 * first, (first, last)
    assert metrics[-1]["reward"] > metrics[0]["reward"]


@pytest.mark.parametrize("advantage", ["grpo", "rloo", "reinforce++-baseline"])
def test_world_rewards_gold_and_kl_are_logged(tmp_path, advantage):
    summary = grpo.run(_cfg(tmp_path, advantage, "rewards=[{kind: world-verifier}, {kind: length, weight: 0.1}]",
                            "loop.max_steps=2", f"loss.advantage={advantage}"))
    first = _metrics(tmp_path / advantage)[0]
    assert {"reward", "reward/world-verifier", "reward/length", "gold_reward", "kl", "clip_fraction"} <= set(first)
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy is its reference before the first update
    assert summary["steps"] == 2 and (tmp_path / advantage / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("iterations", [1, 2])
def test_shared_prompts_train_as_the_concatenated_rows_do(tmp_path, iterations):
    # Each prompt run once for its group (the default) or once per completion: the same samples,
    # rewards, KL and loss at every step, up to float rounding.
    runs = {}
    for share in (True, False):
        name = f"share-{share}-{iterations}"
        grpo.run(_cfg(tmp_path, name, "rewards=[{kind: length}]", "loop.max_steps=4", f"iterations={iterations}",
                      "loop.checkpoint_every=2", f"data.share_prompts={share}"))
        runs[share] = _metrics(tmp_path / name)
    assert len(runs[True]) == len(runs[False]) == 4
    for a, b in zip(runs[True], runs[False], strict=True):
        assert a["completion_tokens"] == b["completion_tokens"]
        for key in ("loss", "reward", "kl", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key


def test_reward_model_terms_need_a_path(tmp_path):
    with pytest.raises(ConfigError, match="config key 'rewards.0.path' is required"):
        _cfg(tmp_path, "x", "rewards=[{kind: reward-model}]")


def test_watchdog_rolls_back_to_the_best_point_when_proxy_rises_and_gold_falls(tmp_path):
    from safetensors.torch import load_file

    # Proxy: shorter is better. Watched "gold": longer is better (a length term with a negative penalty).
    watched = ["rewards=[{kind: length}]", "watch.gold={kind: length, coef: -1.0}", "watch.gold_drop=0.05",
               "watch.window=1", "watch.patience=2", "loss.beta=0.0", "optim.lr=1e-2", "optim.schedule=constant"]
    summary = grpo.run(_cfg(tmp_path, "watched", *watched, "loop.max_steps=30"))
    watch = summary["watch"]
    assert summary["steps"] < 30 and watch["alarms"] and watch["alarms"][0]["rule"] == "gold_drop"
    best = watch["rolled_back_to"]
    assert best is not None and best < summary["steps"]
    # The saved model is the policy at the best step: the same weights as a run stopped there.
    grpo.run(_cfg(tmp_path, "stopped", *watched, f"loop.max_steps={best}"))
    rolled, stopped = (load_file(tmp_path / n / "model" / "model.safetensors") for n in ("watched", "stopped"))
    assert all(rolled[k].equal(stopped[k]) for k in stopped)


def test_a_killed_run_resumes_with_its_watchdog_state(tmp_path, killed_after_checkpoint):
    """The watchdog's moving means, best gold and best snapshot are in the checkpoint: a run killed
    before the alarm stops and rolls back exactly where the uninterrupted run did."""
    from safetensors.torch import load_file

    watched = ["rewards=[{kind: length}]", "watch.gold={kind: length, coef: -1.0}", "watch.gold_drop=0.05",
               "watch.window=2", "watch.patience=2", "loss.beta=0.0", "optim.lr=1e-2", "optim.schedule=constant",
               "loop.max_steps=30", "loop.checkpoint_every=3"]
    full = grpo.run(_cfg(tmp_path, "full", *watched))
    assert full["watch"]["alarms"] and full["steps"] > 3  # the alarm comes after the kill below

    killed_after_checkpoint(3, lambda: grpo.run(_cfg(tmp_path, "killed", *watched)))
    resumed = grpo.run(_cfg(tmp_path, "killed", *watched), resume=True)
    assert resumed["watch"] == full["watch"] and resumed["steps"] == full["steps"]
    a, b = (load_file(tmp_path / n / "model" / "model.safetensors") for n in ("full", "killed"))
    assert all(a[k].equal(b[k]) for k in a)
    assert [m["reward"] for m in _metrics(tmp_path / "killed")] == [m["reward"] for m in _metrics(tmp_path / "full")]


def test_rloo_command_runs_grpo_with_rloo_advantages(tmp_path):
    from typer.testing import CliRunner

    from tether.cli.main import app

    out = tmp_path / "rloo"
    result = CliRunner().invoke(app, ["train", "rloo", "--set", "model.path=tiny:llama", "--set",
                                      "data.train=builtin:world-prompts", "--set", "rewards=[{kind: length}]",
                                      "--set", "loop.max_steps=1", "--set", "loop.batch_size=8",
                                      "--set", "generation.max_new_tokens=8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    import yaml

    assert json.loads((out / "record.json").read_text())["command"] == "train grpo"   # GRPO with a preset
    assert yaml.safe_load((out / "config.yaml").read_text())["loss"]["advantage"] == {"kind": "rloo"}


EVALUATION = ["evaluation.every=2", "evaluation.patience=1", "evaluation.metric=format.malformed",
              "evaluation.harness.suite.n=2", "evaluation.harness.suite.heldout_n=0",
              "evaluation.harness.generation.max_new_tokens=4"]


def test_harness_evaluation_stops_rl_early(tmp_path):
    summary = grpo.run(_cfg(tmp_path, "eval", "rewards=[{kind: length}]", "loop.max_steps=20", *EVALUATION))
    # A random tiny model writes nothing well-formed: the second evaluation (step 4) stops the run.
    assert summary["stopped_early_at"] == 4 and summary["best_step"] == 2 and summary["steps"] == 4
    assert [m["step"] for m in _metrics(tmp_path / "eval") if "eval/format.malformed" in m] == [2, 4]


def test_context_goes_in_front_of_every_rollout_prompt(tmp_path):
    from tether.core.runs import RunDir
    from tether.data.sources import PromptData, load_prompts

    data = PromptData(train="builtin:world-task-prompts",
                      context={"texts": ["Seed one.", "Seed two."], "placement": "system"})
    rows = load_prompts(data, 0, RunDir(tmp_path / "r", command="x", config=data, seed=0))
    assert all(r["prompt"][0] == {"role": "system", "content": r["context"]} for r in rows)
    assert {r["context"] for r in rows} == {"Seed one.", "Seed two."}
    assert all(r["prompt"][1]["role"] == "user" and "family" in r for r in rows)
