"""A tiny guard head's exported properties verified by auto_LiRPA (the bound library behind α,β-CROWN) from the
files alone, through docs/results/verify/auto_lirpa.py, the script that checks the world's exported properties:
auto_LiRPA verifies some and leaves others open, never one the exact MILP finds reachable; every MILP optimum lies
inside its IBP, CROWN and α-CROWN bounds; and tether's CROWN is auto_LiRPA's CROWN (intersected with IBP, as
tether's is), bound for bound."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tether.verify.bounds import linf_box
from tether.verify.export import write_onnx, write_vnnlib

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "results" / "verify" / "auto_lirpa.py"


def test_auto_lirpa_verifies_exported_properties_independently(tmp_path):
    try:
        importlib.metadata.version("neuralsat")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("auto_LiRPA is part of the test set-up: pip install --no-deps neuralsat==0.2.17 (README)")
    torch.manual_seed(5)
    # Two hidden layers, so that CROWN's intermediate bounds (the part most easily got wrong) are compared too.
    layers = [torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10), torch.nn.ReLU(),
              torch.nn.Linear(10, 1)]
    write_onnx(layers, tmp_path / "head.onnx")
    x = torch.randn(10, 6)
    with torch.no_grad():
        logits = torch.nn.Sequential(*layers)(x).squeeze(-1)
    threshold = float(logits.median())
    index = 0
    for epsilon in (0.02, 0.15, 0.5):
        for i in range(len(x)):
            lower, upper = linf_box(x[i], epsilon)
            write_vnnlib(tmp_path / f"prop_{index}.vnnlib", lower.tolist(), upper.tolist(),
                         label=bool(logits[i] >= threshold), threshold=threshold)
            index += 1
    out = tmp_path / "auto_lirpa.json"
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--out", str(out)], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["checker"].startswith("auto_LiRPA 0.6")
    summary = report["summary"]
    assert summary["properties"] == 30 and summary["contradictions"] == 0
    # Both answers occur, so neither side is vacuous: auto_LiRPA verifies some, the MILP reaches others.
    assert summary["verified_alpha_crown"] > 0 and summary["milp_sat"] > 0
    assert summary["verified_crown"] <= summary["verified_alpha_crown"]
    assert summary["verified_alpha_crown"] <= summary["milp_unsat"]
    assert summary["max_abs_gap_tether_crown_vs_auto_lirpa_crown_and_ibp"] < 1e-4
    for row in report["rows"]:
        (c_lo, c_hi), (a_lo, a_hi) = row["crown"]["bounds"], row["alpha_crown"]["bounds"]
        assert c_lo - 1e-5 <= a_lo <= a_hi <= c_hi + 1e-5  # α-CROWN's optimised slopes only tighten CROWN
        if row["milp"]["status"] == "sat":
            assert not row["alpha_crown"]["verified"]
            assert row["milp"]["replayed_y"] == pytest.approx(row["milp"]["extreme"], abs=1e-4)
