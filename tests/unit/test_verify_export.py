"""A tiny guard head's local-robustness properties exported as ONNX + VNN-LIB and decided again by the exact
MILP check, which shares no code with the bounds: every property CROWN certifies the MILP finds unreachable,
the MILP's optimum lies inside CROWN's bounds, and every counterexample replays through ONNX Runtime."""

import numpy as np
import pytest
import torch

from tether.core.errors import UserError
from tether.verify.bounds import crown, linf_box
from tether.verify.export import check, read_vnnlib, replay, write_onnx, write_vnnlib


def test_exported_properties_are_decided_independently(tmp_path):
    torch.manual_seed(3)
    layers = [torch.nn.Linear(5, 12), torch.nn.ReLU(), torch.nn.Linear(12, 1)]
    onnx_path = write_onnx(layers, tmp_path / "head.onnx")
    x = torch.randn(12, 5)
    with torch.no_grad():
        logits = torch.nn.Sequential(*layers)(x).squeeze(-1)
        assert np.allclose([replay(onnx_path, row) for row in x.numpy()], logits.numpy(), atol=1e-5)
    threshold = float(logits.median())
    outcomes = {"certified": 0, "sat": 0, "unsat_not_certified": 0}
    for epsilon in (0.02, 0.2, 0.6):
        lo, hi = crown(layers, *linf_box(x, epsilon))
        for i in range(len(x)):
            label = bool(logits[i] >= threshold)
            box = linf_box(x[i], epsilon)
            prop = write_vnnlib(tmp_path / f"p{i}.vnnlib", box[0].tolist(), box[1].tolist(), label=label,
                                threshold=threshold)
            result = check(onnx_path, prop)
            # The exact extreme of the logit lies within CROWN's sound bounds.
            extreme = result.extreme
            assert lo[i].item() - 1e-4 <= extreme <= hi[i].item() + 1e-4
            is_certified = lo[i].item() > threshold if label else hi[i].item() < threshold
            if is_certified:
                assert result.status == "unsat"
                outcomes["certified"] += 1
            elif result.status == "sat":
                # Replayed by ONNX Runtime: the input is in the box and the decision there is wrong.
                witness = np.array(result.counterexample)
                assert (witness >= box[0].numpy() - 1e-6).all() and (witness <= box[1].numpy() + 1e-6).all()
                assert (result.replayed <= threshold + 1e-4) if label else (result.replayed >= threshold - 1e-4)
                outcomes["sat"] += 1
            else:
                outcomes["unsat_not_certified"] += 1  # CROWN's relaxation was too loose: complete beats it
    assert outcomes["certified"] and outcomes["sat"]  # both answers occur: neither side is vacuous


def test_vnnlib_beyond_the_subset_is_refused_with_its_line(tmp_path):
    path = tmp_path / "p.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(assert (or (<= X_0 1) (>= X_0 2)))\n")
    with pytest.raises(UserError, match=r"p.vnnlib:2"):
        read_vnnlib(path)
    (tmp_path / "not.onnx").write_text("hello")
    with pytest.raises(UserError, match="not an ONNX model"):
        check(tmp_path / "not.onnx", path)
    write_vnnlib(path, [0.0, -1.0], [1.0, 1.0], label=False, threshold=0.25)
    prop = read_vnnlib(path)
    assert prop.sense == ">=" and prop.bound == 0.25 and prop.lower.tolist() == [0.0, -1.0]
