"""PPO end to end on a tiny model: a length penalty shortens replies with either value function; what the
run logs; KL in the reward or the loss; the adaptive controller; the CLI."""

import json

import pytest

from tether.core.config import load_config
from tether.core.errors import ConfigError
from tether.train import ppo


def _cfg(tmp_path, name, *overrides):
    return load_config(ppo.PPOConfig, None, [
        "model.path=tiny:llama", "data.train=builtin:world-prompts", "generation.max_new_tokens=24",
        "loop.batch_size=16", "loss.epochs=2", "loss.minibatches=2", "optim.lr=3e-3", "seed=0",
        f"out={tmp_path / name}", *overrides])


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


# The separate value model takes 5 s more; it runs in the slow tier (the shared head runs every time).
@pytest.mark.parametrize("mode", [pytest.param("separate", marks=pytest.mark.slow), "shared"])
def test_length_penalty_teaches_a_random_model_to_stop(tmp_path, mode):
    summary = ppo.run(_cfg(tmp_path, mode, "rewards=[{kind: length}]", "loop.max_steps=48", "loss.kl_coef=0.0",
                           "optim.lr=1e-2", f"value.mode={mode}"))
    by_rollout = {m["rollout"]: m for m in _metrics(tmp_path / mode)}
    lengths = [by_rollout[r]["completion_tokens"] for r in sorted(by_rollout)]
    assert lengths[0] > 20 and sum(lengths[-3:]) / 3 < 0.5 * lengths[0], lengths
    assert summary["steps"] == 48 and summary["rollouts"] == 12
    out = tmp_path / mode
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "value" / "model.safetensors").is_file() if mode == "separate" else (
        out / "value_head.safetensors").is_file()


@pytest.mark.parametrize("kl", ["reward", "loss"])
def test_signals_are_logged_and_kl_starts_at_zero(tmp_path, kl):
    ppo.run(_cfg(tmp_path, kl, "rewards=[{kind: world-verifier}, {kind: length, weight: 0.1}]", "loop.max_steps=8",
                 f"loss.kl={kl}", "loss.kl_target=1.0", "loss.kl_horizon=16"))
    metrics = _metrics(tmp_path / kl)
    first = metrics[0]
    assert {"reward", "reward/world-verifier", "reward/length", "gold_reward", "kl", "entropy", "completion_tokens",
            "pg_loss", "vf_loss", "clip_fraction", "approx_kl", "kl_coef"} <= set(first)
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy is its reference before the first update
    assert first["approx_kl"] == pytest.approx(0.0, abs=1e-6) and first["clip_fraction"] == 0.0
    # The controller moved β after the first rollout (KL 0 < target: it shrinks by 20% x 16 / 16).
    second = next(m for m in metrics if m["rollout"] == 1)
    assert second["kl_coef"] == pytest.approx(0.05 * 0.8)


def test_checkpoints_fall_between_rollouts(tmp_path):
    with pytest.raises(ConfigError, match="multiple of loss.epochs x loss.minibatches"):
        _cfg(tmp_path, "x", "rewards=[{kind: length}]", "loop.checkpoint_every=3")


def test_lora_policy_uses_its_base_weights_as_the_reference(tmp_path):
    summary = ppo.run(_cfg(tmp_path, "lora", "rewards=[{kind: length}]", "model.lora={r: 4}", "loop.max_steps=8",
                           "value.mode=shared"))
    metrics = _metrics(tmp_path / "lora")
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-5)   # adapters start at zero: policy == base
    assert metrics[-1]["kl"] != pytest.approx(0.0, abs=1e-5)  # and KL is measured once they move
    assert summary["steps"] == 8


def test_harness_evaluation_stops_ppo_early(tmp_path):
    summary = ppo.run(_cfg(tmp_path, "eval", "rewards=[{kind: length}]", "loop.max_steps=40", "evaluation.every=4",
                           "evaluation.patience=1", "evaluation.metric=format.malformed",
                           "evaluation.harness.suite.n=2", "evaluation.harness.suite.heldout_n=0",
                           "evaluation.harness.generation.max_new_tokens=4"))
    assert summary["stopped_early_at"] == 8 and summary["best_step"] == 4 and summary["steps"] == 8
    assert [m["step"] for m in _metrics(tmp_path / "eval") if "eval/format.malformed" in m] == [4, 8]
