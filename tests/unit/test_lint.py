"""Lint and types are part of the test run: an undefined name or a type error fails CI."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_clean():
    # Through this interpreter: the venv's ruff need not be on PATH when pytest is run as .venv/bin/python.
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench", "docs"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean(mypy_process):
    # mypy was started when collection finished (tests/conftest.py), so its single-threaded ~40 s overlap the
    # rest of the run instead of adding to it; here it is waited for.
    stdout, stderr = mypy_process.communicate(timeout=240)
    mypy = mypy_process
    assert mypy.returncode == 0, stdout + stderr
