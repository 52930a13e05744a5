"""The SFT recipe end to end on a tiny model: learning, resume, accumulation, bad data."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tether.core.config import load_config
from tether.core.errors import DataError, UserError
from tether.engine import loop as loop_module
from tether.train import sft


def _cfg(tmp_path, name, *overrides):
    return load_config(sft.SFTConfig, None, [
        "model.path=tiny:gpt2",  # GPT-2 has dropout, so resume must restore RNG state too
        "data.train=builtin:arithmetic-chat", "data.max_length=48",
        "optim.lr=3e-3", "loop.batch_size=8", "loop.max_steps=6", "seed=1",
        f"out={tmp_path / name}", *overrides,
    ])


def _weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_sft_lowers_loss_and_writes_run_dir(tmp_path):
    cfg = _cfg(tmp_path, "a", "loop.max_steps=30", "optim.warmup_steps=3")
    summary = sft.run(cfg)
    metrics = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 30
    assert metrics[-1]["loss"] < 0.6 * metrics[0]["loss"]
    record = json.loads((tmp_path / "a" / "record.json").read_text())
    assert record["status"] == "finished" and record["outputs"]["model"] == "model"
    assert record["versions"]["torch"] and summary["steps"] == 30
    assert (tmp_path / "a" / "config.yaml").read_text().startswith("model:")


def test_killed_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    sft.run(_cfg(tmp_path, "full", "loop.checkpoint_every=2"))

    real_save = loop_module.TrainLoop.save_checkpoint

    def save_then_die(self):
        path = real_save(self)
        if self.step_count == 4:
            raise KeyboardInterrupt  # killed right after the step-4 checkpoint
        return path

    monkeypatch.setattr(loop_module.TrainLoop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        sft.run(_cfg(tmp_path, "killed", "loop.checkpoint_every=2"))
    record = json.loads((tmp_path / "killed" / "record.json").read_text())
    assert record["status"] == "interrupted"
    monkeypatch.setattr(loop_module.TrainLoop, "save_checkpoint", real_save)

    sft.run(_cfg(tmp_path, "killed", "loop.checkpoint_every=2"), resume=True)
    full, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert full.keys() == resumed.keys()
    max_dw = max(float((full[k] - resumed[k]).abs().max()) for k in full)
    assert max_dw <= 1e-6
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # nothing logged twice, nothing lost
    assert json.loads((tmp_path / "killed" / "record.json").read_text())["resumed"] == 1


def test_gradient_accumulation_does_not_change_the_update(tmp_path):
    # Same global batch of 8, split into 1 or 4 micro-batches whose token counts differ a lot:
    # only a loss normalised by the whole batch's token count gives the same update.
    data = tmp_path / "varied.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": "ab" * (1 + (i * 7) % 20)}]} for i in range(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ("model.path=tiny:llama", "loop.max_steps=3", f"data.train={data}", "optim.max_grad_norm=null")
    sft.run(_cfg(tmp_path, "one", "loop.grad_accum=1", *common))
    sft.run(_cfg(tmp_path, "four", "loop.grad_accum=4", *common))
    one, four = _weights(tmp_path / "one"), _weights(tmp_path / "four")
    assert max(float((one[k] - four[k]).abs().max()) for k in one) < 1e-5


def test_existing_run_dir_is_not_overwritten_and_resume_needs_a_run(tmp_path):
    sft.run(_cfg(tmp_path, "r", "loop.max_steps=1"))
    with pytest.raises(UserError, match="already holds a run"):
        sft.run(_cfg(tmp_path, "r", "loop.max_steps=1"))
    with pytest.raises(UserError, match="no run to resume"):
        sft.run(_cfg(tmp_path, "none", "loop.max_steps=1"), resume=True)


def test_bad_rows_fail_or_are_skipped_and_counted(tmp_path):
    data = tmp_path / "d.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    data.write_text("\n".join([json.dumps(good), '{"messages": 3}', json.dumps(good)]) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'messages'"):
        sft.run(_cfg(tmp_path, "bad", f"data.train={data}", "loop.max_steps=1"))
    sft.run(_cfg(tmp_path, "skip", f"data.train={data}", "loop.max_steps=1", "data.skip_bad=true"))
    record = json.loads((tmp_path / "skip" / "record.json").read_text())
    assert record["counters"]["skipped_rows"] == 1
    assert "d.jsonl:2" in (tmp_path / "skip" / "skipped_rows.txt").read_text()


def test_lora_sft_saves_a_merged_plain_model(tmp_path):
    sft.run(_cfg(tmp_path, "lora", "model.lora.r=4", "model.path=tiny:qwen3", "loop.max_steps=2"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "model")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert (tmp_path / "lora" / "model" / "adapter" / "adapter_config.json").is_file()
    assert torch.isfinite(next(model.parameters())).all()


def _metrics_without_timing(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("tokens_per_s", "step_wall_s", "memory_mib")} for row in rows]


def test_same_seed_same_metrics_and_gradient_checkpointing_changes_nothing(tmp_path):
    sft.run(_cfg(tmp_path, "a", "loop.max_steps=4"))
    sft.run(_cfg(tmp_path, "b", "loop.max_steps=4"))
    assert _metrics_without_timing(tmp_path / "a") == _metrics_without_timing(tmp_path / "b")
    sft.run(_cfg(tmp_path, "c", "loop.max_steps=4", "seed=2"))
    assert _metrics_without_timing(tmp_path / "a") != _metrics_without_timing(tmp_path / "c")
    # Recomputing activations in backward must give the same training curve (dropout RNG included).
    sft.run(_cfg(tmp_path, "ckpt", "loop.max_steps=4", "model.gradient_checkpointing=true"))
    plain, ckpt = _metrics_without_timing(tmp_path / "a"), _metrics_without_timing(tmp_path / "ckpt")
    assert [r["loss"] for r in plain] == pytest.approx([r["loss"] for r in ckpt], abs=1e-5)


def test_bf16_autocast_trains(tmp_path):
    summary = sft.run(_cfg(tmp_path, "bf16", "loop.precision=bf16", "loop.max_steps=8", "model.path=tiny:llama"))
    metrics = _metrics_without_timing(tmp_path / "bf16")
    assert summary["steps"] == 8 and metrics[-1]["loss"] < metrics[0]["loss"]


def test_resume_refuses_a_different_config(tmp_path):
    sft.run(_cfg(tmp_path, "r", "loop.max_steps=2", "loop.checkpoint_every=1"))
    with pytest.raises(UserError, match=r"config key 'optim.lr' is 0.1 but the run .* used 0.003"):
        sft.run(_cfg(tmp_path, "r", "loop.max_steps=2", "loop.checkpoint_every=1", "optim.lr=0.1"), resume=True)
    summary = sft.run(_cfg(tmp_path, "r", "loop.max_steps=3", "loop.checkpoint_every=1"), resume=True)
    assert summary["steps"] == 3


def test_padding_free_packing_trains_exactly_like_padding(tmp_path):
    # Same examples, same order: one concatenated row per micro-batch (attention isolated per example
    # through restarting position_ids) must give the padded run's losses and weights.
    common = ["model.path=tiny:llama", "loop.max_steps=5", "loop.grad_accum=2"]
    padded = sft.run(_cfg(tmp_path, "padded", *common))
    packed = sft.run(_cfg(tmp_path, "packed", *common, "data.packing=padding-free"))
    a = [json.loads(line) for line in (tmp_path / "padded" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "packed" / "metrics.jsonl").read_text().splitlines()]
    for x, y in zip(a, b, strict=True):
        assert abs(x["loss"] - y["loss"]) < 1e-5 and abs(x["grad_norm"] - y["grad_norm"]) < 1e-4
        assert x["tokens_seen"] == y["tokens_seen"]  # real tokens; the padded run also computed on padding
    wa, wb = _weights(tmp_path / "padded"), _weights(tmp_path / "packed")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    assert padded["train_loss"] == pytest.approx(packed["train_loss"], abs=1e-5)


def test_harness_evaluation_stops_early_and_restores_the_best_weights(tmp_path):
    evaluation = ["loop.checkpoint_every=2", "evaluation.every=2", "evaluation.patience=1",
                  "evaluation.metric=format.malformed",
                  "evaluation.harness.suite.n=2", "evaluation.harness.suite.heldout_n=0",
                  "evaluation.harness.generation.max_new_tokens=4"]
    summary = sft.run(_cfg(tmp_path, "stop", "model.path=tiny:llama", "loop.max_steps=20", *evaluation))
    # A random tiny model writes nothing well-formed: the rate cannot improve, so the second
    # evaluation (step 4) stops training and the step-2 weights are restored.
    assert summary["stopped_early_at"] == 4 and summary["best_step"] == 2 and summary["restored_step"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "stop" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "eval/format.malformed" in m] == [2, 4]
    assert (tmp_path / "stop" / "evals" / "step-000002" / "report.html").is_file()
    # The saved model is the step-2 checkpoint's weights, not step 4's.
    checkpoint = load_file(str(tmp_path / "stop" / "checkpoints" / "step-00000002" / "model.safetensors"))
    step4 = load_file(str(tmp_path / "stop" / "checkpoints" / "step-00000004" / "model.safetensors"))
    final = _weights(tmp_path / "stop")
    shared = [k for k in final if f"model.{k}" in checkpoint]
    assert shared and all(torch.equal(final[k], checkpoint[f"model.{k}"]) for k in shared)
    assert any(not torch.equal(final[k], step4[f"model.{k}"]) for k in shared)
