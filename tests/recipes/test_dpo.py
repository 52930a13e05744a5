"""The DPO-family trainer end to end on a tiny model: the step-0 loss of each variant is its
hand-worked value at policy == reference, learning raises reward accuracy, references agree."""

import json
import math

import pytest

from tether.core.config import load_config
from tether.data.io import write_jsonl
from tether.train import dpo
from tether.world.datasets import preference_rows, unpaired_rows
from tether.world.spec import WorldConfig, build_world


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefs")
    world = build_world(WorldConfig())
    write_jsonl(root / "pairs.jsonl", preference_rows(world, 48, gold=True))
    write_jsonl(root / "eval.jsonl", preference_rows(world, 16, seed=1, gold=True))
    write_jsonl(root / "unpaired.jsonl", unpaired_rows(world, 48))
    return root


def _cfg(tmp_path, data, name, *overrides, train="pairs.jsonl"):
    return load_config(dpo.DPOConfig, None, [
        "model.path=tiny:llama", f"data.train={data / train}", "data.max_length=256", "optim.lr=1e-3",
        "loop.batch_size=8", "loop.max_steps=2", "seed=0", f"out={tmp_path / name}", *overrides])


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


# At step 0 the policy is its reference: every log-ratio is 0 (SimPO: no reference; KTO: z0 = 0).
STEP0 = {"sigmoid": math.log(2), "robust": math.log(2), "hinge": 1.0, "ipo": (1 / (2 * 0.1)) ** 2, "kto": 0.5}


@pytest.mark.parametrize("variant", sorted(STEP0))
def test_first_step_loss_is_the_hand_worked_value(tmp_path, data, variant):
    train = "unpaired.jsonl" if variant == "kto" else "pairs.jsonl"
    dpo.run(_cfg(tmp_path, data, variant, f"loss.variant={variant}", "loss.label_smoothing=0.1"
                 if variant == "robust" else "loss.beta=0.1", "loop.max_steps=1", train=train))
    first = _metrics(tmp_path / variant)[0]
    assert first["loss"] == pytest.approx(STEP0[variant], abs=1e-5)
    if variant != "kto":
        assert first["reward_margin"] == pytest.approx(0.0, abs=1e-6)


def test_dpo_learns_the_preferences_and_reports_held_out_accuracy(tmp_path, data):
    summary = dpo.run(_cfg(tmp_path, data, "learn", "loop.max_steps=40", "loss.beta=0.5",
                           f"data.eval={data / 'eval.jsonl'}", "eval_every=20"))
    metrics = _metrics(tmp_path / "learn")
    assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"]
    assert sum(m["reward_accuracy"] for m in metrics[-5:]) / 5 > 0.9
    assert "eval_reward_accuracy" in metrics[19] and "eval_loss" in summary
    assert (tmp_path / "learn" / "model" / "model.safetensors").is_file()


def test_pairs_cut_to_nothing_are_dropped_and_counted(tmp_path, data):
    dpo.run(_cfg(tmp_path, data, "short", "data.max_length=40", "loop.max_steps=1"))
    record = json.loads((tmp_path / "short" / "record.json").read_text())
    assert record["counters"]["examples_without_completion_after_truncation"] > 0


def test_reference_modes_agree_at_the_start(tmp_path, data):
    live = dpo.run(_cfg(tmp_path, data, "live", "loop.max_steps=1"))
    pre = dpo.run(_cfg(tmp_path, data, "pre", "loop.max_steps=1", "reference.precompute=true"))
    assert (tmp_path / "pre" / "reference_logps.pt").is_file()
    # Both losses are reported rounded to 6 decimals: rounding alone can put them 1e-6 apart.
    assert pre["loss"] == pytest.approx(live["loss"], abs=2e-6)
    lora = dpo.run(_cfg(tmp_path, data, "lora", "loop.max_steps=3", "model.lora.r=4"))
    metrics = _metrics(tmp_path / "lora")
    assert metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # adapters start as a no-op
    assert lora["steps"] == 3


def test_simpo_runs_reference_free(tmp_path, data):
    dpo.run(_cfg(tmp_path, data, "simpo", "loss.variant=simpo", "loss.beta=2.0", "loss.gamma=0.5",
                 "loop.max_steps=10"))
    metrics = _metrics(tmp_path / "simpo")
    assert metrics[-1]["loss"] < metrics[0]["loss"]


def test_bad_reference_settings_are_config_errors(tmp_path, data):
    from tether.core.errors import ConfigError, UserError

    with pytest.raises(ConfigError, match="reference-free"):
        _cfg(tmp_path, data, "x", "loss.variant=simpo", "reference.mode=copy")
    with pytest.raises(UserError, match="needs model.lora"):
        dpo.run(_cfg(tmp_path, data, "y", "reference.mode=adapters-off"))


# sigmoid every run; ipo and kto (the same packing, other losses: 5 s together) in the slow tier.
@pytest.mark.parametrize("variant", ["sigmoid", pytest.param("ipo", marks=pytest.mark.slow),
                                     pytest.param("kto", marks=pytest.mark.slow)])
def test_length_groups_and_padding_free_train_exactly_like_padding(tmp_path, data, variant):
    train = "unpaired.jsonl" if variant == "kto" else "pairs.jsonl"
    # One padded batch, four padded length groups (the default), one packed row, each pair's prompt run
    # once (the default) or once per completion: the same maths.
    runs = {}
    for name, setting in (("one-group", "data.length_groups=1"), ("groups", "data.length_groups=4"),
                          ("packed", "data.packing=padding-free"), ("unshared", "data.share_prompts=false")):
        dpo.run(_cfg(tmp_path, data, f"{variant}-{name}", "loop.max_steps=4", f"loss.variant={variant}", setting,
                     train=train))
        runs[name] = _metrics(tmp_path / f"{variant}-{name}")
    for other in ("groups", "packed", "unshared"):
        for x, y in zip(runs["one-group"], runs[other], strict=True):
            assert abs(x["loss"] - y["loss"]) < 1e-5 * max(1.0, x["loss"]), (other, x, y)
            assert abs(x["grad_norm"] - y["grad_norm"]) < 1e-4 * max(1.0, x["grad_norm"]), (other, x, y)


def test_killed_dpo_resumes_to_identical_weights(tmp_path, data, killed_after_checkpoint):
    from safetensors.torch import load_file

    settings = ["loop.max_steps=4", "loop.checkpoint_every=2", "reference.precompute=true"]
    dpo.run(_cfg(tmp_path, data, "full", *settings))
    killed_after_checkpoint(2, lambda: dpo.run(_cfg(tmp_path, data, "killed", *settings)))
    dpo.run(_cfg(tmp_path, data, "killed", *settings), resume=True)  # reference log-probs come from the cache
    full = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert max((full[k] - resumed[k]).abs().max().item() for k in full) <= 1e-6
    assert [m["loss"] for m in _metrics(tmp_path / "killed")] == pytest.approx(
        [m["loss"] for m in _metrics(tmp_path / "full")], abs=1e-6)
