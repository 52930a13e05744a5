"""Every script in bench/ runs as committed, on a tiny setting, and writes its figures with the environment
(the six that take seconds even so in the slow tier: ``python -m pytest -m slow tests/recipes/test_bench.py``).

The figures themselves come from the default settings (docs/performance.md gives the commands); this
only proves the scripts still run and produce what the docs read from them.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
TINY = {
    "train_vs_trl": ["--hidden", "32", "--layers", "1", "--batch", "4", "--steps", "4", "--rounds", "1", "--warmup",
                     "1", "--max-length", "128"],
    "rl_vs_trl": ["--hidden", "32", "--layers", "1", "--batch", "8", "--group", "4", "--max-new-tokens", "8",
                  "--steps", "3", "--rounds", "1", "--warmup", "1"],
    "generation": ["--hidden", "32", "--layers", "1", "--batches", "1,4", "--new-tokens", "8", "--repeats", "1"],
    "padding": ["--batch", "4", "--batches", "3"],
    "gateway": ["--requests", "20", "--clients", "4", "--rounds", "1"],
    "guards": ["--texts", "5"],
    "guard_cascade": ["--tier", "cheap={guard}", "--tier", "same={guard}", "--limit", "40", "--long", "2"],
    "eval_world_hhh": ["--set", "model.path=world:tiny", "--set", "suite.n=4", "--set", "suite.heldout_n=1",
                       "--every", "7", "--batches", "1,8"],
    "sae": ["--model", "tiny:llama", "--texts", "20", "--epochs", "1", "--width", "32", "--k", "4", "--batch", "64",
            "--repeats", "1"],
    "monitor": ["--requests", "300", "--reference", "4000", "--keys", "3", "--repeats", "1", "--mmd-n", "30",
                "--permutations", "10", "--rate", "50", "--seconds", "1", "--rounds", "1"],
}


def test_every_bench_script_has_a_tiny_setting():
    scripts = {p.stem for p in BENCH.glob("*.py")} - {"common"}
    assert scripts == set(TINY)


# The scripts that take seconds even at their tiny setting (a TRL run beside tether's, a gateway under load, a
# world evaluation) run in the slow tier; the rest in every run.
HEAVY = {"train_vs_trl", "rl_vs_trl", "gateway", "eval_world_hhh", "monitor", "padding"}


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in HEAVY else s for s in sorted(TINY)])
def test_bench_script_runs_and_records_its_environment(script, tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(BENCH))
    out = tmp_path / "result.json"
    args = TINY[script]
    if script == "guard_cascade":  # its tiers are trained guards: a small n-gram one, trained here
        from tether.train.guard import GuardTrainConfig
        from tether.train.guard import run as train_guard

        train_guard(GuardTrainConfig(model="ngram", world_rows=40, heldout=[], out=str(tmp_path / "g")))
        args = [a.format(guard=tmp_path / "g" / "guard") for a in args]
    monkeypatch.setattr(sys, "argv", [str(BENCH / f"{script}.py"), *args, "--json", str(out)])
    runpy.run_path(str(BENCH / f"{script}.py"), run_name="__main__")
    result = json.loads(out.read_text())
    env = result["environment"]
    assert env["command"].startswith(f"python {BENCH / script}.py") and env["versions"]["torch"]
    assert env["machine"]["cores"] >= 1
    if script in ("train_vs_trl", "rl_vs_trl"):
        kinds = ["grpo"] if script == "rl_vs_trl" else ["sft", "rm", "dpo"]
        for kind in kinds:
            assert result[kind]["speedup_steps"] > 0 and result[kind]["trl"]["steps_per_s"] > 0
