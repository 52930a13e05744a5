"""Certified bounds against hand-worked values and against sampling: IBP and CROWN on a network small enough to
bound by hand, soundness on random networks, CROWN no looser than IBP, certification never above an attack."""

import pytest
import torch

from tether.verify.bounds import certified, crown, crown_ibp, ibp, linf_box, pgd_linf, worst_logit


def _hand_network():
    # f(x) = relu(x1 + x2) + relu(x1 - x2): on [-1, 1]^2 it ranges over [0, 2].
    first, last = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        first.bias.zero_()
        last.weight.copy_(torch.tensor([[1.0, 1.0]]))
        last.bias.zero_()
    return [first, torch.nn.ReLU(), last]


def test_ibp_and_crown_by_hand():
    layers = _hand_network()
    lower, upper = torch.tensor([[-1.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    # IBP: each pre-activation in [-2, 2], each ReLU in [0, 2], the sum in [0, 4].
    lo, hi = ibp(layers, lower, upper)
    assert lo.item() == 0.0 and hi.item() == 4.0
    # CROWN: each unstable ReLU (l = -2, u = 2) below the line 0.5 z + 1, so f <= 0.5(x1+x2) + 0.5(x1-x2) + 2 =
    # x1 + 2 <= 3; from below the slope-0 line (u > -l fails), so f >= 0.
    lo, hi = crown(layers, lower, upper)
    assert lo.item() == 0.0 and hi.item() == pytest.approx(3.0)
    # A box where both ReLUs are stable (x1 in [2, 3], x2 in [-0.5, 0.5]): f = 2 x1 exactly, in [4, 6].
    lo, hi = crown(layers, torch.tensor([[2.0, -0.5]]), torch.tensor([[3.0, 0.5]]))
    assert (lo.item(), hi.item()) == pytest.approx((4.0, 6.0))


def test_bounds_hold_on_random_networks_and_crown_is_no_looser():
    torch.manual_seed(0)
    for depth in (1, 2, 3):
        layers: list[torch.nn.Module] = []
        width = 6
        for _ in range(depth):
            layers += [torch.nn.Linear(width, 8), torch.nn.ReLU()]
            width = 8
        layers.append(torch.nn.Linear(width, 1))
        x = torch.randn(5, 6)
        lower, upper = linf_box(x, 0.3)
        i_lo, i_hi = ibp(layers, lower, upper)
        c_lo, c_hi = crown(layers, lower, upper)
        m_lo, m_hi = crown_ibp(layers, lower, upper, 0.5)
        assert (c_lo >= i_lo - 1e-6).all() and (c_hi <= i_hi + 1e-6).all()
        samples = lower[None] + (upper - lower)[None] * torch.rand(2000, *x.shape)
        with torch.no_grad():
            values = torch.nn.Sequential(*layers)(samples)
        for lo, hi in ((i_lo, i_hi), (c_lo, c_hi), (m_lo, m_hi)):
            assert (values >= lo[None] - 1e-5).all() and (values <= hi[None] + 1e-5).all()
        if depth > 1:  # deeper, CROWN is strictly tighter somewhere
            assert ((i_hi - i_lo) - (c_hi - c_lo)).max() > 1e-3


def test_certified_rows_are_never_broken_by_the_attack():
    torch.manual_seed(1)
    layers = [torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)]
    x = torch.randn(200, 4)
    with torch.no_grad():
        labels = (torch.nn.Sequential(*layers)(x).squeeze(-1) > 0).float()  # right on every row at epsilon 0
    previous = 201
    for epsilon in (0.0, 0.05, 0.2, 0.5):
        lo, hi = crown(layers, *linf_box(x, epsilon))
        sure = certified(lo, hi, labels, 0.0)
        held = pgd_linf(layers, x, labels, epsilon, 0.0)
        assert not (sure & ~held).any()  # a certified row the attack broke would be a wrong certificate
        assert int(sure.sum()) <= int(held.sum()) <= previous
        previous = int(held.sum())
    assert int(sure.sum()) < 200  # at 0.5 some rows are no longer certified: the test can fail
    assert worst_logit(torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0]]), torch.tensor([1, 0])).tolist() == [
        1.0, 4.0]


def test_other_layers_are_refused():
    with pytest.raises(TypeError, match="Tanh"):
        ibp([torch.nn.Linear(2, 2), torch.nn.Tanh()], torch.zeros(1, 2), torch.ones(1, 2))
