"""Certified bounds on the outputs of small ReLU networks over an input box: interval bound propagation (IBP,
Gowal et al. 2018) and CROWN (Zhang et al. 2018), and their mix for certified training (CROWN-IBP, Zhang et al.
2020). Pure functions over a network given as a list of layers (:class:`torch.nn.Linear` and
:class:`torch.nn.ReLU`), differentiable, so the same code bounds a trained head and trains one.

A box ``[lower, upper]`` (batch x inputs) goes in; ``(lo, hi)`` (batch x outputs) comes out, with
``lo <= f(x) <= hi`` for every ``x`` in the box. IBP pushes the box through layer by layer (a linear layer's
image of a box, exactly: centre through the weights, radius through their absolute values). CROWN bounds each
output by a linear function of the input, taken backward through the network, each unstable ReLU
(pre-activation bounds ``l < 0 < u``) relaxed to the line through ``(l, 0)`` and ``(u, u)`` from above and a
line through the origin (slope 1 when ``u > -l``, else 0: CROWN-Ada) from below; the pre-activation bounds of
each ReLU come from CROWN run backward from that layer. CROWN's linear bound alone is not always tighter than
IBP's: where the adaptive lower line dips below zero, IBP's bound at that end can be the better one (auto_LiRPA's
CROWN shows the same on the world's exported heads), so :func:`crown` returns the tighter of the two at each
end, which is as sound as either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_layers(layers: Sequence[torch.nn.Module]) -> None:
    """Refuse a network these bounds do not cover.

    Raises:
        TypeError: a layer other than Linear or ReLU.
    """
    for layer in layers:
        if not isinstance(layer, torch.nn.Linear | torch.nn.ReLU):
            raise TypeError(f"bounds cover Linear and ReLU layers, not {type(layer).__name__}")


def ibp(layers: Sequence[torch.nn.Module], lower: torch.Tensor, upper: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bounds on the network's output over the box ``[lower, upper]``."""
    check_layers(layers)
    lo, hi = lower, upper
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            centre, radius = (hi + lo) / 2, (hi - lo) / 2
            mid = centre @ layer.weight.T + (layer.bias if layer.bias is not None else 0.0)
            spread = radius @ layer.weight.abs().T
            lo, hi = mid - spread, mid + spread
        else:
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
    return lo, hi


def _relu_relaxation(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slopes and intercept of the ReLU's linear bounds on ``[lo, hi]``: ``a_low * z <= relu(z) <= a_up * z + b_up``."""
    active, inactive = lo >= 0, hi <= 0
    unstable = ~(active | inactive)
    width = (hi - lo).clamp(min=1e-12)
    a_up = torch.where(active, torch.ones_like(lo), torch.where(unstable, hi / width, torch.zeros_like(lo)))
    b_up = torch.where(unstable, -hi * lo / width, torch.zeros_like(lo))
    a_low = torch.where(active, torch.ones_like(lo), torch.where(unstable & (hi > -lo), torch.ones_like(lo),
                                                                 torch.zeros_like(lo)))
    return a_low, a_up, b_up


def _backward(layers: Sequence[torch.nn.Module], pre: list[tuple[torch.Tensor, torch.Tensor]], lower: torch.Tensor,
              upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN's bounds on the last layer of ``layers`` (ending in a Linear), given every ReLU's pre-activation bounds
    ``pre`` (in order)."""
    last = layers[-1]
    assert isinstance(last, torch.nn.Linear)
    batch = lower.shape[0]
    # Linear functions of the current layer's input: out >= A_lo h + c_lo, out <= A_up h + c_up.
    a_lo = last.weight.expand(batch, -1, -1)
    a_up = a_lo
    bias = last.bias if last.bias is not None else torch.zeros(last.out_features)
    c_lo = bias.expand(batch, -1)
    c_up = c_lo
    relus = len(pre)
    for layer in reversed(layers[:-1]):
        if isinstance(layer, torch.nn.ReLU):
            relus -= 1
            lo, hi = pre[relus]
            s_low, s_up, b_up = _relu_relaxation(lo, hi)
            # For the lower bound, a positive coefficient takes the ReLU's lower line, a negative one its upper.
            pos, neg = a_lo.clamp(min=0), a_lo.clamp(max=0)
            c_lo = c_lo + (neg * b_up[:, None, :]).sum(-1)
            a_lo = pos * s_low[:, None, :] + neg * s_up[:, None, :]
            pos, neg = a_up.clamp(min=0), a_up.clamp(max=0)
            c_up = c_up + (pos * b_up[:, None, :]).sum(-1)
            a_up = pos * s_up[:, None, :] + neg * s_low[:, None, :]
        else:
            assert isinstance(layer, torch.nn.Linear)
            b = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
            c_lo = c_lo + a_lo @ b
            c_up = c_up + a_up @ b
            a_lo = a_lo @ layer.weight
            a_up = a_up @ layer.weight
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    lo_out = (a_lo @ centre[:, :, None]).squeeze(-1) - (a_lo.abs() @ radius[:, :, None]).squeeze(-1) + c_lo
    hi_out = (a_up @ centre[:, :, None]).squeeze(-1) + (a_up.abs() @ radius[:, :, None]).squeeze(-1) + c_up
    return lo_out, hi_out


def crown(layers: Sequence[torch.nn.Module], lower: torch.Tensor, upper: torch.Tensor, *,
          intermediate: str = "crown") -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN bounds on the network's output over the box ``[lower, upper]``. ``intermediate``: how each ReLU's
    pre-activation bounds are found, by CROWN itself (``crown``) or by IBP (``ibp``, as CROWN-IBP trains)."""
    check_layers(layers)
    layers = list(layers)
    if not layers or not isinstance(layers[-1], torch.nn.Linear):
        raise TypeError("crown: the network must end in a Linear layer")
    pre: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index, layer in enumerate(layers):
        if isinstance(layer, torch.nn.ReLU):
            if index == 0:  # a ReLU on the input: its pre-activation bounds are the box
                pre.append((lower, upper))
            elif intermediate == "ibp":
                pre.append(ibp(layers[:index], lower, upper))
            else:
                pre.append(_backward(layers[:index], pre, lower, upper))
    lo, hi = _backward(layers, pre, lower, upper)
    # Never looser than IBP: both are sound, so their intersection is.
    i_lo, i_hi = ibp(layers, lower, upper)
    return torch.maximum(lo, i_lo), torch.minimum(hi, i_hi)


def crown_ibp(layers: Sequence[torch.nn.Module], lower: torch.Tensor, upper: torch.Tensor, beta: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN-IBP's training bound: ``beta`` x CROWN (on IBP's intermediate bounds) + ``(1 - beta)`` x IBP, a
    sound bound for any ``beta`` in [0, 1] (both are)."""
    i_lo, i_hi = ibp(layers, lower, upper)
    if beta <= 0:
        return i_lo, i_hi
    c_lo, c_hi = crown(layers, lower, upper, intermediate="ibp")
    return beta * c_lo + (1 - beta) * i_lo, beta * c_hi + (1 - beta) * i_hi


def linf_box(x: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The L-infinity ball of radius ``epsilon`` around each row of ``x``, as a box."""
    return x - epsilon, x + epsilon


def worst_logit(lo: torch.Tensor, hi: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A binary classifier's (one logit: positive means class 1) worst logit over the box, per row: the lower
    bound for rows labelled 1, the upper for rows labelled 0."""
    return torch.where(labels.bool(), lo.squeeze(-1), hi.squeeze(-1))


def certified(lo: torch.Tensor, hi: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Rows whose decision (logit >= ``threshold`` flags) cannot change anywhere in the box: correct throughout."""
    low, high = lo.squeeze(-1), hi.squeeze(-1)
    return torch.where(labels.bool(), low >= threshold, high < threshold)


def pgd_linf(layers: Sequence[torch.nn.Module], x: torch.Tensor, labels: torch.Tensor, epsilon: float,
             threshold: float, *, steps: int = 40, restarts: int = 2, seed: int = 0) -> torch.Tensor:
    """An attack in the L-infinity ball (projected gradient descent with sign steps and random starts): per row,
    whether the decision stayed correct at every point tried. An upper bound on robust accuracy, as certification
    is a lower one."""
    net = torch.nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(seed)
    sign = torch.where(labels.bool(), -1.0, 1.0)  # the direction that pushes each row's logit the wrong way
    held = ((net(x).squeeze(-1) >= threshold) == labels.bool())
    if epsilon <= 0:
        return held
    for restart in range(restarts):
        start = torch.rand(x.shape, generator=generator) * 2 - 1 if restart else torch.zeros_like(x)
        delta = (start * epsilon).requires_grad_(True)
        for _ in range(steps):
            loss = (sign * net(x + delta).squeeze(-1)).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta += 2.5 * epsilon / steps * grad.sign()
                delta.clamp_(-epsilon, epsilon)
        with torch.no_grad():
            held &= ((net(x + delta).squeeze(-1) >= threshold) == labels.bool())
    return held
