"""The layers hold: imports point downward only (the contract in pyproject.toml, checked by import-linter,
imports inside functions included), and a recipe loads only what it needs."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_imports_point_downward_only(capsys):
    importlinter = pytest.importorskip("importlinter.cli", reason="import-linter comes with the dev extra")
    code = importlinter.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_the_contract_catches_a_sideways_import_inside_a_function(tmp_path, capsys):
    # A copy of the contract on a two-module package: train reaching into evals (lazily, in a function).
    importlinter = pytest.importorskip("importlinter.cli", reason="import-linter comes with the dev extra")
    pkg = tmp_path / "layered"
    for name in ("train", "evals", "core"):
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "sft.py").write_text("def run():\n    from layered.evals import x\n    return x\n")
    (pkg / "evals" / "x.py").write_text("from layered.core import y\n")
    (pkg / "core" / "y.py").write_text("")
    config = tmp_path / "contract.ini"
    config.write_text(textwrap.dedent("""
        [importlinter]
        root_package = layered

        [importlinter:contract:layers]
        name = layers
        type = layers
        layers =
            layered.train | layered.evals
            layered.core
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        code = importlinter.lint_imports(config_filename=str(config), no_cache=True, no_logo=True)
    finally:
        sys.path.remove(str(tmp_path))
    assert code == 1 and "layered.train.sft -> layered.evals" in capsys.readouterr().out


def test_importing_a_training_recipe_loads_no_evaluation_world_or_redteam_module():
    code = ("import sys, tether.train.sft; "
            "print(sorted(m for m in sys.modules if m.startswith(('tether.evals', 'tether.world', 'tether.redteam'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
