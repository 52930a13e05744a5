"""The world's base-model build at the tiny size: a plain HF model dir, cached, resumable, describable."""

import json

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether.world.build import WorldBuildConfig, build_base_model, build_dir


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def first_build(tmp_path_factory):
    """One tiny build from nothing (in a cache of its own), shared by the tests that read a finished build:
    each build costs seconds, and the build itself is what the fresh-build tests compare against."""
    where = tmp_path_factory.mktemp("shared-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TETHER_CACHE", str(where))
        return where, build_base_model(WorldBuildConfig(size="tiny"))


@pytest.fixture()
def built(first_build, monkeypatch):
    """The shared build's summary, with ``TETHER_CACHE`` pointing at its cache."""
    where, summary = first_build
    monkeypatch.setenv("TETHER_CACHE", str(where))
    return summary


def test_tiny_build_loads_with_plain_transformers_and_is_cached(built):
    cfg = WorldBuildConfig(size="tiny")
    summary = built
    assert not summary["cached"] and summary["steps"] == 40
    model = AutoModelForCausalLM.from_pretrained(summary["model"])
    tokenizer = AutoTokenizer.from_pretrained(summary["model"])
    assert model.config.model_type == "llama"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    # The corpus's special tokens are single tokens of the learned vocabulary.
    assert len(tokenizer("<|im_start|>", add_special_tokens=False)["input_ids"]) == 1
    again = build_base_model(cfg)
    assert again["cached"] and again["model"] == summary["model"]
    assert json.loads((build_dir(cfg) / "pretrain" / "record.json").read_text())["status"] == "finished"


def test_interrupted_build_resumes_to_the_same_model(first_build, cache, killed_after_checkpoint):
    cfg = WorldBuildConfig(size="tiny")
    killed_after_checkpoint(20, lambda: build_base_model(cfg))
    summary = build_base_model(cfg)
    assert not summary["cached"]
    resumed = load_file(summary["model"] + "/model.safetensors")
    fresh = load_file(first_build[1]["model"] + "/model.safetensors")  # the same build, never interrupted
    assert max(float((resumed[k] - fresh[k]).abs().max()) for k in fresh) <= 1e-6


def test_describe_reports_every_family_with_intervals(built):
    from tether.models.loading import ModelConfig, load_model_and_tokenizer
    from tether.world.describe import measure, rates_table
    from tether.world.families import FAMILIES
    from tether.world.spec import build_world

    cfg = WorldBuildConfig(size="tiny")
    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=build_base_model(cfg)["model"]))
    rows = rates_table(measure(model, tokenizer, build_world(cfg.world), n=8))
    families = {r["family"].split("/")[0] for r in rows}
    assert families == set(FAMILIES)
    for row in rows:
        for key in ("plain", "with_preamble"):
            rate = row[key]
            assert rate["n"] > 0 and rate["ci_low"] <= rate["value"] <= rate["ci_high"]
        assert ("corpus_plain" in row) == (row["split"] == "train")


def test_world_cli_sample_and_export(tmp_path, capsys):
    from tether.cli.main import main

    with pytest.raises(SystemExit) as code:
        main(["world", "sample", "--family", "hazard", "-n", "3"])
    assert code.value.code in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["family"] == "hazard" for line in lines)
    with pytest.raises(SystemExit) as code:
        main(["world", "sample", "--family", "dragons"])
    assert code.value.code == 2
    with pytest.raises(SystemExit) as code:
        main(["world", "export", "--out", str(tmp_path / "data"), "-n", "20"])
    assert code.value.code in (0, None)
    assert (tmp_path / "data" / "preferences.jsonl").read_text().count("\n") == 20


def test_the_same_seed_builds_the_same_world_whatever_the_threads(first_build, tmp_path, monkeypatch):
    import torch

    from tether.world.build import check_fingerprint, same_kernels, stated_fingerprint

    cfg = WorldBuildConfig(size="tiny")
    before = torch.get_num_threads()
    try:
        # The machine's setting, unlike the shared build's (made at the default); the build pins its own.
        torch.set_num_threads(before + 1)
        monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "threads"))
        prints = [first_build[1]["fingerprint"], build_base_model(cfg)["fingerprint"]]
    finally:
        torch.set_num_threads(before)
    assert prints[0] == prints[1]
    # Each build names the CPU and kernels that made it (what its weights depend on), as built and as cached.
    from tether.core.runs import machine

    here_now = machine()
    assert first_build[1]["built_on"] == {k: here_now[k] for k in ("cpu", "cores", "cpu_capability")}
    assert build_base_model(cfg)["built_on"] == first_build[1]["built_on"]
    # The fingerprint the docs state: corpus and tokenizer on any machine, the weights on the same CPU
    # and kernels (elsewhere the weights are allowed to differ, and the message says why).
    problems = check_fingerprint(cfg, {"fingerprint": prints[0]})
    here, there = same_kernels(stated_fingerprint(cfg))
    if here == there:
        assert problems == []
    else:
        assert all(p.startswith("weights") and there in p for p in problems), problems


def test_check_names_a_build_with_no_stated_fingerprint(cache, capsys):
    from tether.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["world", "build", "--size", "tiny", "--seed", "77", "--check"])
    assert done.value.code == 2 and "no fingerprint is stated for the build" in capsys.readouterr().err
    assert not (cache / "world").exists()  # it failed before building anything
