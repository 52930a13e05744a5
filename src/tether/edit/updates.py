"""The closed-form weight updates of locate-then-edit model editing, as pure functions of matrices.

Notation (Meng et al. 2022, 2023; Fang et al. 2025): a linear map ``W`` (``d_out × d_in``) takes a *key*
``k`` (what enters an MLP's output projection at a subject's last token) to a *value* ``v = W k`` (what
the MLP writes into the residual stream there). ``C = E[k kᵀ]`` is the keys' second moment over ordinary
text: the knowledge an edit should leave alone. Keys and residuals of ``n`` edits are columns:
``K`` is ``d_in × n``, ``R`` is ``d_out × n``. Every function returns the update ``ΔW`` (``d_out × d_in``);
none touches a model.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _damped(matrix: Tensor, damping: float) -> Tensor:
    """``matrix + damping · mean(diag) · I``: invertible when ``matrix`` is rank-deficient (few texts)."""
    scale = matrix.diagonal().mean().clamp_min(torch.finfo(matrix.dtype).tiny)
    return matrix + damping * scale * torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)


def rome_update(weight: Tensor, key: Tensor, value: Tensor, second_moment: Tensor, *,
                damping: float = 1e-4) -> Tensor:
    """ROME's rank-one update: after it, ``(W + ΔW) k = v`` exactly, and among such updates it changes the
    outputs of ordinary keys least (``ΔW = (v - W k) (C⁻¹k)ᵀ / (kᵀ C⁻¹ k)``).

    Args:
        weight: ``W``, ``d_out × d_in``.
        key: ``k``, ``d_in``.
        value: the wanted ``v``, ``d_out``.
        second_moment: ``C``, ``d_in × d_in``.
        damping: added to ``C``'s diagonal, relative to its mean, before solving.
    """
    left = torch.linalg.solve(_damped(second_moment, damping), key)
    return torch.outer(value - weight @ key, left) / (left @ key)


def memit_update(residuals: Tensor, keys: Tensor, second_moment: Tensor, *, preserve: float) -> Tensor:
    """MEMIT's batch update for one layer: the least-squares ``ΔW`` that adds ``R``'s columns to the
    values of ``K``'s columns while keeping ``W``'s values of ordinary keys, weighted by ``preserve``:
    ``ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹``.

    Args:
        residuals: ``R``, ``d_out × n``: what each edit's value still lacks (the layer's share of it).
        keys: ``K``, ``d_in × n``.
        second_moment: ``C``, ``d_in × d_in``.
        preserve: ``λ``, how much ordinary keys weigh against the edits.
    """
    system = preserve * second_moment + keys @ keys.T
    return torch.linalg.solve(system, keys @ residuals.T).T


def null_space_projector(second_moment: Tensor, *, threshold: float) -> Tensor:
    """``P = Û Ûᵀ`` with ``Û`` the eigenvectors of ``C`` whose eigenvalues are at most ``threshold`` times
    the largest: the key directions ordinary text (almost) never uses. ``ΔW P`` leaves the values of those
    texts' keys unchanged (AlphaEdit). An empty ``Û`` gives ``P = 0``: no update is possible.

    Args:
        second_moment: ``C``, ``d_in × d_in``, symmetric.
        threshold: relative eigenvalue cut, in ``[0, 1)``.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment)
    kept = eigenvectors[:, eigenvalues <= threshold * eigenvalues.max()]
    return kept @ kept.T


def alphaedit_update(residuals: Tensor, keys: Tensor, projector: Tensor, *, previous: Tensor,
                     l2: float) -> Tensor:
    """AlphaEdit's update: MEMIT's least squares with the update confined to ``P``'s null space, and the
    keys of earlier edits (``Σ Kₚ Kₚᵀ``, ``previous``) kept: ``ΔW = R Kᵀ P (Kₚ Kₚᵀ P + K Kᵀ P + l2 I)⁻¹``.
    Any key ``k0`` with ``P k0 = 0`` keeps its value: ``ΔW k0 = 0``.

    Args:
        residuals: ``R``, ``d_out × n``.
        keys: ``K``, ``d_in × n``.
        projector: ``P``, ``d_in × d_in`` (:func:`null_space_projector`).
        previous: ``Σ Kₚ Kₚᵀ`` over the edits already made, ``d_in × d_in`` (zeros before the first).
        l2: the ridge term that keeps the system invertible.
    """
    eye = torch.eye(keys.shape[0], dtype=keys.dtype, device=keys.device)
    system = projector @ (keys @ keys.T + previous) + l2 * eye
    return torch.linalg.solve(system, projector @ keys @ residuals.T).T
