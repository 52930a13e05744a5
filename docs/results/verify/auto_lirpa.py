"""Exported guard-head properties checked by auto_LiRPA, the bound library behind α,β-CROWN.

For every ``prop_*.vnnlib`` beside a ``head.onnx`` in the directories given, this script:

- rebuilds the head in torch from the ONNX file with ``onnx`` alone (``Gemm`` and ``Relu`` nodes; no tether code);
- bounds its output over the property's input box with auto_LiRPA's CROWN and α-CROWN (optimised slopes);
- calls the property verified when a bound keeps ``Y_0`` out of the property's wrong region (``unsat``);
- sets that beside tether's exact MILP check (``tether verify check``) and tether's own CROWN on the same box
  (which keeps the tighter of CROWN's and IBP's bound at each end, so it is set beside auto_LiRPA's CROWN
  intersected with its IBP).

A property auto_LiRPA verifies (by IBP, CROWN or α-CROWN) but the MILP finds reachable, or a MILP optimum
outside any of auto_LiRPA's bounds, is a contradiction: the script counts them, and exits 1 when there is one.

Which auto_LiRPA: its one PyPI release (0.3, 2022) pins torch below 1.13 and does not import under NumPy 2,
so this uses auto_LiRPA 0.6.0 as NeuralSAT 0.2.17 carries it (``pip install --no-deps neuralsat==0.2.17``;
NeuralSAT, MIT, is a VNN-COMP verifier; its copy of auto_LiRPA imports as ``src.abstractor.auto_LiRPA``).
That copy imports ``gurobipy`` (a commercial solver) when its ``BoundedModule`` class is defined, for a MILP
stabiliser that CROWN and α-CROWN never call; an empty module stands in for it, so any use of it would fail
loudly rather than be skipped. tether's VNN-LIB reader reads the box (the subset tether writes).

Usage: python docs/results/verify/auto_lirpa.py PROPERTIES_DIR [...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch


def auto_lirpa() -> types.ModuleType:
    """auto_LiRPA, imported late (see the module's docstring for which copy, and the stand-in for gurobipy)."""
    sys.modules.setdefault("gurobipy", types.ModuleType("gurobipy"))
    import src.abstractor.auto_LiRPA as lirpa

    return lirpa


def head_from_onnx(path: Path) -> torch.nn.Sequential:
    """The network in the ONNX file as torch layers, read with ``onnx`` alone."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers: list[torch.nn.Module] = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            weight = inits[node.input[1]] if attrs.get("transB", 0) else inits[node.input[1]].T
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data = torch.tensor(weight * attrs.get("alpha", 1.0), dtype=torch.float32)
            linear.bias.data = torch.tensor(inits[node.input[2]] * attrs.get("beta", 1.0), dtype=torch.float32)
            layers.append(linear)
        elif node.op_type == "Relu":
            layers.append(torch.nn.ReLU())
        else:
            raise SystemExit(f"{path}: operator {node.op_type} is not rebuilt here (Gemm, Relu)")
    return torch.nn.Sequential(*layers)


def check_dir(where: Path) -> list[dict]:
    """Every property in the directory: auto_LiRPA's bounds and verdicts beside tether's."""
    from tether.verify.bounds import crown
    from tether.verify.export import check, read_vnnlib

    lirpa = auto_lirpa()
    head = head_from_onnx(where / "head.onnx")
    paths = sorted(where.glob("prop_*.vnnlib"), key=lambda p: int(p.stem.split("_")[-1]))
    props = [read_vnnlib(path) for path in paths]
    if not props:
        raise SystemExit(f"{where}: no prop_*.vnnlib")
    # Every property's box in one batch: auto_LiRPA bounds (and α-CROWN optimises) each row on its own.
    lower = torch.tensor(np.stack([p.lower for p in props]), dtype=torch.float32)
    upper = torch.tensor(np.stack([p.upper for p in props]), dtype=torch.float32)
    bounded = lirpa.BoundedModule(head, torch.zeros_like(lower), device="cpu", verbose=0)
    box = lirpa.BoundedTensor((lower + upper) / 2, lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lower, x_U=upper))
    found = {}
    for method, key in (("IBP", "ibp"), ("CROWN", "crown"), ("alpha-CROWN", "alpha_crown")):
        lo, hi = bounded.compute_bounds(x=(box,), method=method)
        found[key] = (lo.detach().reshape(-1).tolist(), hi.detach().reshape(-1).tolist())
    with torch.no_grad():
        ours_lo, ours_hi = crown(list(head), lower, upper)
    out = []
    for i, (path, prop) in enumerate(zip(paths, props, strict=True)):
        row: dict = {"property": path.name, "sense": prop.sense, "bound": prop.bound}
        for key, (los, his) in found.items():
            # The wrong region is Y_0 <= bound (a "<=" property) or Y_0 >= bound: verified when it is out of reach.
            verified = los[i] > prop.bound if prop.sense == "<=" else his[i] < prop.bound
            row[key] = {"bounds": [round(los[i], 6), round(his[i], 6)], "verified": verified}
        row["tether_crown_bounds"] = [round(float(ours_lo[i, 0]), 6), round(float(ours_hi[i, 0]), 6)]
        exact = check(where / "head.onnx", path)
        row["milp"] = exact.as_dict()
        slack = 1e-4 * max(1.0, abs(exact.extreme))
        methods = [row[key] for key in found]
        row["contradiction"] = any((m["verified"] and exact.status == "sat")
                                   or not m["bounds"][0] - slack <= exact.extreme <= m["bounds"][1] + slack
                                   for m in methods)
        out.append(row)
    return out


def summarise(rows: list[dict]) -> dict:
    """Counts over the properties, and how far tether's CROWN lies from auto_LiRPA's (each intersected with IBP)."""
    def theirs(r: dict) -> tuple[float, float]:
        (c_lo, c_hi), (i_lo, i_hi) = r["crown"]["bounds"], r["ibp"]["bounds"]
        return max(c_lo, i_lo), min(c_hi, i_hi)

    gap = max((abs(a - b) for r in rows for a, b in zip(theirs(r), r["tether_crown_bounds"], strict=True)),
              default=0.0)
    return {
        "properties": len(rows),
        "verified_ibp": sum(r["ibp"]["verified"] for r in rows),
        "verified_crown": sum(r["crown"]["verified"] for r in rows),
        "verified_alpha_crown": sum(r["alpha_crown"]["verified"] for r in rows),
        "milp_unsat": sum(r["milp"]["status"] == "unsat" for r in rows),
        "milp_sat": sum(r["milp"]["status"] == "sat" for r in rows),
        "contradictions": sum(r["contradiction"] for r in rows),
        "max_abs_gap_tether_crown_vs_auto_lirpa_crown_and_ibp": round(gap, 6),
    }


def main(argv: list[str] | None = None) -> int:
    """Check the directories, print the summary, write the report; 1 when there is a contradiction."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import importlib.metadata

    rows = [dict(r, dir=str(d)) for d in args.dirs for r in check_dir(d)]
    report = {
        "checker": "auto_LiRPA " + auto_lirpa().__version__ + " (as carried by NeuralSAT "
                   + importlib.metadata.version("neuralsat") + "), CROWN and alpha-CROWN",
        "torch": torch.__version__, "numpy": np.__version__,
        "summary": summarise(rows), "rows": rows,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(report["summary"], indent=1))
    return 1 if report["summary"]["contradictions"] else 0


if __name__ == "__main__":
    sys.exit(main())
