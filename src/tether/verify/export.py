"""Properties of a guard head as files other verifiers read, and an independent exact check of them.

:func:`write_onnx` writes the head (Linear and ReLU layers) as an ONNX graph of ``Gemm`` and ``Relu`` nodes;
:func:`write_vnnlib` writes a local-robustness property in VNN-LIB (the VNN-COMP format): the input box, and
the output region that would be a wrong decision. α,β-CROWN, NNV or Marabou read the pair as they are
(``abcrown --onnx_path head.onnx --vnnlib_path prop.vnnlib``); a verifier answers ``unsat`` when the wrong
region cannot be reached (the property holds) and ``sat`` with an input when it can.

:func:`check` is such a verifier, written apart from :mod:`tether.verify.bounds` and sharing none of its code:
it reads the two files back (``onnx`` for the graph, a parser of VNN-LIB's box-and-bound subset), encodes the
ReLU network exactly as a mixed-integer linear program (each unstable ReLU with a binary and big-M constraints
from its own interval arithmetic) and solves it to optimality with HiGHS (through SciPy). A ``sat`` answer's
input is replayed through ONNX Runtime, so a counterexample is never taken on the solver's word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tether.core.errors import UserError


def write_onnx(layers: Sequence[torch.nn.Module], path: str | Path) -> Path:
    """The head as ONNX (opset 17): input ``X`` (1 x inputs), output ``Y`` (1 x outputs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current, width = "X", None
    for i, layer in enumerate(layers):
        if isinstance(layer, torch.nn.Linear):
            weight = layer.weight.detach().double().numpy().astype(np.float32)
            bias = (layer.bias.detach().double().numpy() if layer.bias is not None
                    else np.zeros(layer.out_features)).astype(np.float32)
            width = width or layer.in_features
            inits += [numpy_helper.from_array(weight, f"W{i}"), numpy_helper.from_array(bias, f"B{i}")]
            nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"B{i}"], [f"h{i}"], transB=1))
        elif isinstance(layer, torch.nn.ReLU):
            nodes.append(helper.make_node("Relu", [current], [f"h{i}"]))
        else:
            raise TypeError(f"write_onnx: Linear and ReLU layers only, not {type(layer).__name__}")
        current = f"h{i}"
    nodes[-1].output[0] = "Y"
    outputs = next(layer.out_features for layer in reversed(layers) if isinstance(layer, torch.nn.Linear))
    graph = helper.make_graph(nodes, "tether_guard_head",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, outputs])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tether")
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def write_vnnlib(path: str | Path, lower: Sequence[float], upper: Sequence[float], *, label: bool,
                 threshold: float) -> Path:
    """A local-robustness property of a one-logit guard: every input in ``[lower, upper]`` keeps the decision
    ``label`` (flagged when the logit is at least ``threshold``). What is written is the wrong region, as VNN-LIB
    states properties: for ``label`` True, ``Y_0 <= threshold`` (the boundary counted against the property, to
    be safe); for False, ``Y_0 >= threshold``."""
    lines = [f"; tether guard head: decision {'flagged' if label else 'allowed'} everywhere in the box",
             *(f"(declare-const X_{i} Real)" for i in range(len(lower))), "(declare-const Y_0 Real)"]
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    lines.append(f"(assert ({'<=' if label else '>='} Y_0 {float(threshold)!r}))")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Property:
    """A VNN-LIB property of the subset tether writes: an input box and one bound on ``Y_0``."""

    lower: np.ndarray
    upper: np.ndarray
    sense: Literal["<=", ">="]
    bound: float


_ASSERT = re.compile(r"\(assert\s+\((<=|>=)\s+([XY])_(\d+)\s+(\S+?)\)\)")


def read_vnnlib(path: str | Path) -> Property:
    """Read a property back.

    Raises:
        UserError: the file uses more of VNN-LIB than boxes and one output bound (named with its line).
    """
    path = Path(path)
    bounds: dict[int, list[float]] = {}
    output: tuple[str, float] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split(";", 1)[0].strip()
        if not text or text.startswith("(declare-const"):
            continue
        found = _ASSERT.fullmatch(text)
        if found is None:
            raise UserError(f"{path}:{number}: only input boxes and one bound on Y_0 are read here: {text[:80]}")
        sense, var, index, value = found.group(1), found.group(2), int(found.group(3)), float(found.group(4))
        if var == "X":
            entry = bounds.setdefault(index, [-np.inf, np.inf])
            entry[0 if sense == ">=" else 1] = value
        elif index != 0 or output is not None:
            raise UserError(f"{path}:{number}: one bound on Y_0 is read here")
        else:
            output = (sense, value)
    if output is None or not bounds:
        raise UserError(f"{path}: no input box or no output bound")
    n = max(bounds) + 1
    lower = np.array([bounds.get(i, [-np.inf, np.inf])[0] for i in range(n)])
    upper = np.array([bounds.get(i, [-np.inf, np.inf])[1] for i in range(n)])
    if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
        raise UserError(f"{path}: every input needs both bounds")
    return Property(lower, upper, output[0], output[1])  # type: ignore[arg-type]


def read_onnx_layers(path: str | Path) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """The graph as ``("linear", W, b)`` and ``("relu", None, None)`` steps, in order (Gemm, or MatMul then Add).

    Raises:
        UserError: another operator, or a graph that is not one chain.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # not a protobuf, or not a model
        raise UserError(f"{path}: not an ONNX model ({type(exc).__name__}: {str(exc)[:120]})") from None
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    steps: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            weight = inits[node.input[1]]
            weight = weight if attrs.get("transB", 0) else weight.T
            weight = weight * attrs.get("alpha", 1.0)
            bias = inits[node.input[2]] * attrs.get("beta", 1.0) if len(node.input) > 2 else np.zeros(len(weight))
            steps.append(("linear", weight, bias))
        elif node.op_type == "MatMul":
            steps.append(("linear", inits[node.input[1]].T, np.zeros(inits[node.input[1]].shape[1])))
        elif node.op_type == "Add" and steps and steps[-1][0] == "linear":
            kind, before, offset = steps[-1]
            assert offset is not None
            steps[-1] = (kind, before, offset + inits[node.input[1]].reshape(-1))
        elif node.op_type == "Relu":
            steps.append(("relu", None, None))
        else:
            raise UserError(f"{path}: operator {node.op_type} is not read here (Gemm, MatMul, Add, Relu)")
    return steps


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check` found: ``unsat`` (the property holds), or ``sat`` with a counterexample that ONNX
    Runtime confirmed; ``extreme`` is the optimum of ``Y_0`` over the box (its lowest for a ``<=`` property,
    its highest for ``>=``)."""

    status: Literal["sat", "unsat"]
    extreme: float
    counterexample: list[float] | None = None
    replayed: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (without the counterexample's values)."""
        return {"status": self.status, "extreme": round(self.extreme, 6),
                **({"replayed_y": round(self.replayed, 6)} if self.replayed is not None else {})}


def check(onnx_path: str | Path, vnnlib_path: str | Path) -> CheckResult:
    """Decide the property exactly (see the module)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    steps = read_onnx_layers(onnx_path)
    prop = read_vnnlib(vnnlib_path)
    first = next((w for kind, w, _ in steps if kind == "linear"), None)
    if first is None or first.shape[1] != len(prop.lower):
        raise UserError(f"{vnnlib_path}: {len(prop.lower)} inputs, but {onnx_path} takes "
                        f"{None if first is None else first.shape[1]}")
    # Variables: the inputs, then per linear step its outputs, per ReLU step its outputs and one binary each.
    lo_box, hi_box = prop.lower.copy(), prop.upper.copy()
    var_lo, var_hi, integrality = list(lo_box), list(hi_box), [0] * len(lo_box)
    rows: list[tuple[dict[int, float], float, float]] = []  # sparse row, lower, upper
    current = list(range(len(lo_box)))
    lo, hi = lo_box, hi_box
    for kind, weight, bias in steps:
        if kind == "linear":
            assert weight is not None and bias is not None
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            new_lo, new_hi = weight @ mid + bias - np.abs(weight) @ rad, weight @ mid + bias + np.abs(weight) @ rad
            start = len(var_lo)
            var_lo += list(new_lo)
            var_hi += list(new_hi)
            integrality += [0] * len(new_lo)
            for j in range(len(new_lo)):  # z_j - W_j h = b_j
                row = {start + j: 1.0}
                for k, var in enumerate(current):
                    if weight[j, k] != 0.0:
                        row[var] = row.get(var, 0.0) - float(weight[j, k])
                rows.append((row, float(bias[j]), float(bias[j])))
            current, lo, hi = list(range(start, start + len(new_lo))), new_lo, new_hi
        else:
            start = len(var_lo)
            n = len(current)
            var_lo += list(np.maximum(lo, 0.0))
            var_hi += list(np.maximum(hi, 0.0))
            integrality += [0] * n
            binaries = len(var_lo)
            var_lo += [0.0] * n
            var_hi += [1.0] * n
            integrality += [1] * n
            for j, z in enumerate(current):
                a, d, low, u = start + j, binaries + j, float(lo[j]), float(hi[j])
                if low >= 0:  # active: a = z
                    rows.append(({a: 1.0, z: -1.0}, 0.0, 0.0))
                elif u <= 0:  # inactive: a = 0 (its bounds say so)
                    var_hi[a] = 0.0
                else:  # a >= z; a <= z - l (1 - d); a <= u d
                    rows.append(({a: 1.0, z: -1.0}, 0.0, np.inf))
                    rows.append(({a: 1.0, z: -1.0, d: -low}, -np.inf, -low))
                    rows.append(({a: 1.0, d: -u}, -np.inf, 0.0))
            current, lo, hi = list(range(start, start + n)), np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    output = current[0]
    size = len(var_lo)
    matrix = np.zeros((len(rows), size))
    for r, (row, _, _) in enumerate(rows):
        for var, coef in row.items():
            matrix[r, var] = coef
    sign = 1.0 if prop.sense == "<=" else -1.0  # minimise Y for a "<=" property, maximise it for ">="
    objective = np.zeros(size)
    objective[output] = sign
    result = milp(objective, constraints=LinearConstraint(matrix, [r[1] for r in rows], [r[2] for r in rows]),
                  integrality=np.array(integrality), bounds=Bounds(np.array(var_lo), np.array(var_hi)),
                  options={"mip_rel_gap": 0.0})
    if result.status != 0 or result.x is None:
        raise RuntimeError(f"the MILP solver did not finish: {result.message}")
    extreme = float(result.x[output])
    reached = extreme <= prop.bound if prop.sense == "<=" else extreme >= prop.bound
    if not reached:
        return CheckResult("unsat", extreme)
    witness = result.x[: len(lo_box)]
    replayed = replay(onnx_path, witness)
    return CheckResult("sat", extreme, witness.tolist(), replayed)


def replay(onnx_path: str | Path, x: Sequence[float] | np.ndarray) -> float:
    """``Y_0`` of the exported graph at ``x``, computed by ONNX Runtime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["Y"], {"X": np.asarray(x, dtype=np.float32).reshape(1, -1)})
    return float(out.reshape(-1)[0])
