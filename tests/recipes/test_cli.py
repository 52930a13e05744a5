"""The command line: user mistakes are one line and exit 2; help has examples."""

import json
import os
import subprocess
import sys

import pytest

from tether.cli.main import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "sft", "--config", "nope/missing.yaml"], "not found"),
        (["train", "sft", "--config", "sft/demo", "--set", "optim.lrr=1"], "'optim.lrr' is not allowed"),
        (["train", "sft", "--config", "sft/demo", "--set", "loop.precision=fp8"], "'fp32' or 'bf16'"),
        (["train", "sft", "--config", "sft/demo", "--set", "model.path=./no/such/model"], "does not exist"),
        (["train", "sft", "--config", "sft/demo", "--set", "data.train=/no/data.jsonl"], "does not exist"),
        (["data", "validate", "/no/data.jsonl"], "does not exist"),
        (["models", "init", "--arch", "transformer-xxl", "--out", "/tmp/x"], "unknown tiny architecture"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(argv, expected, capsys, tmp_path):
    code, _out, err = _run([*argv, *(["--out", str(tmp_path / "o")] if argv[0] == "train" else [])], capsys)
    assert code == 2
    assert expected in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err


def test_malformed_data_names_file_and_line(capsys, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": "a"}\n')
    code, out, err = _run(["data", "validate", str(data), "--kind", "preference"], capsys)
    assert code == 2 and "pairs.jsonl:2: field 'rejected'" in err
    code, out, err = _run(["data", "validate", str(data), "--kind", "preference", "--skip-bad"], capsys)
    assert code == 2 and "1 valid preference records, 1 bad" in out


def test_train_sft_cli_runs_and_resume_continues(capsys, tmp_path):
    args = ["train", "sft", "--config", "sft/demo", "--set", "loop.max_steps=4", "--set", "loop.checkpoint_every=2",
            "--set", "loop.batch_size=4", "--out", str(tmp_path / "run")]
    code, out, _ = _run(args, capsys)
    assert code in (0, None)
    assert json.loads(out[: out.rindex("}") + 1])["steps"] == 4
    code, _, err = _run(args, capsys)
    assert code == 2 and "--resume" in err
    code, out, _ = _run([*args[:-2], "--set", "loop.max_steps=6", "--out", str(tmp_path / "run"), "--resume"], capsys)
    assert code in (0, None) and json.loads(out[: out.rindex("}") + 1])["steps"] == 6


def test_every_command_help_has_an_example():
    from typer.main import get_command

    from tether.cli.main import app

    root = get_command(app)
    for group_name, group in root.commands.items():  # type: ignore[attr-defined]
        if getattr(group, "invoke_without_command", False):  # a group that is also a command (tether eval)
            assert "Example:" in (group.help or ""), f"tether {group_name} --help has no example"
        for name, command in getattr(group, "commands", {}).items():
            assert "Example:" in (command.help or ""), f"tether {group_name} {name} --help has no example"


def test_entry_point_prints_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tether.cli.main", "train", "sft", "--config", "missing.yaml"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("error:")


@pytest.mark.slow  # two fresh interpreters that train and generate (10 s): an end-to-end check, in the slow tier
def test_commands_print_no_deprecation_warning(tmp_path):
    # What a user sees: a training run through LoRA (peft) and a generating evaluation, each in a fresh
    # process with Python's default warning filters (FutureWarning shown), print no deprecation notice.
    # (transformers 5 renamed past_key_values to cache and gradient to activation checkpointing.)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "How do I bake bread?", "label": "benign"}\n')
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}\n' * 2)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    runs = [subprocess.Popen([sys.executable, "-m", "tether.cli.main", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)  # side by side: most of each is imports
            for argv in (["train", "dpo", "--set", "model.path=tiny:llama", "--set", f"data.train={pairs}",
                          "--set", "model.lora={r: 4}", "--set", "loop.max_steps=1", "--set", "loop.batch_size=2",
                          "--out", str(tmp_path / "dpo")],
                         ["eval", "--model", "tiny:llama", "--data", str(prompts), "--set",
                          "generation.max_new_tokens=4", "--out", str(tmp_path / "eval")])]
    for run in runs:
        _, stderr = run.communicate(timeout=240)
        assert run.returncode == 0, stderr[-2000:]
        noise = [line for line in stderr.splitlines() if "Warning" in line or "deprecated" in line]
        assert noise == [], noise
