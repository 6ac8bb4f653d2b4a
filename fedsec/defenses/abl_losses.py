"""The losses and the isolation of Anti-Backdoor Learning (Li et al., NeurIPS 2021).

The math behind :mod:`fedsec.defenses.abl`'s phases:

1. **Isolation** with local gradient ascent (LGA, the paper's Eq. 5): train on
   ``sign(L - γ)·L`` where ``L`` is the batch-mean cross-entropy (:func:`lga_loss`).
   Above ``γ`` this is plain descent; once a batch's loss falls below ``γ`` the step
   ascends, so the fast-learned (backdoor) samples hover near ``γ`` while clean
   samples stay above it.  The ``round(ρ·N)`` lowest-loss samples are then isolated
   (:func:`per_sample_losses`, :func:`isolate_lowest_loss`).
2. **Unlearning** with global gradient ascent (Eq. 9):
   ``min_θ E_{D̂_c}[ℓ] − E_{D̂_b}[ℓ]`` — descend on the kept samples ``D̂_c`` and
   ascend on the isolated ones ``D̂_b`` (:func:`unlearning_loss`).

Each loss is a :data:`fedsec.training.LossFn` for :func:`fedsec.training.train`.  The
Eq. 9 loss needs to know which samples of a mini-batch are isolated, so it takes
two-column targets ``[label, isolated_flag]`` built by :func:`unlearning_targets`;
:func:`fedsec.training.train` shuffles and batches them together with ``x``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedsec.numbers import is_int, is_real
from fedsec.training import LossFn, predict_logits

__all__ = [
    "isolate_lowest_loss",
    "lga_loss",
    "per_sample_losses",
    "unlearning_loss",
    "unlearning_targets",
]


def lga_loss(gamma: float) -> LossFn:
    """The local-gradient-ascent loss ``sign(L − γ)·L`` of the isolation phase.

    Parameters
    ----------
    gamma
        Loss threshold ``γ``, finite and >= 0.

    Returns
    -------
    LossFn
        ``loss_fn(model, xb, yb)`` with ``L = mean CE(model(xb), yb)``; returns
        ``L`` if ``L > γ``, ``−L`` if ``L < γ`` and ``0·L`` if ``L == γ``.  The sign is
        a constant (no gradient flows through it), so below ``γ`` the gradient is the
        negated cross-entropy gradient.

    Raises
    ------
    ValueError
        If ``gamma`` is negative, not finite or not a number.
    """
    if not is_real(gamma) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    threshold = float(gamma)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = functional.cross_entropy(model(x), y)
        return torch.sign(loss.detach() - threshold) * loss

    return loss_fn


def per_sample_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> torch.Tensor:
    """Cross-entropy of every example, in eval mode without gradients.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits; its training mode is restored afterwards.
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)``, ``N >= 1``.
    batch_size
        Forward-pass batch size, >= 1.

    Returns
    -------
    torch.Tensor
        ``float (N,)`` losses, detached, in input order.

    Raises
    ------
    ValueError
        If the data is empty or mismatched, or ``batch_size`` is invalid.
    """
    _check_labelled(x, y)
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    logits = predict_logits(model, x, batch_size=int(batch_size))
    return functional.cross_entropy(logits.float(), y.to(logits.device).long(), reduction="none")


def isolate_lowest_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, fraction: float, batch_size: int
) -> np.ndarray:
    """Indices of the ``round(fraction·N)`` examples with the lowest loss.

    Parameters
    ----------
    model
        The (isolation-trained) network; evaluated in eval mode, mode restored.
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)``, ``N >= 1``.
    fraction
        Isolation ratio ``ρ`` in ``[0, 1)``; the count is Python's ``round(ρ·N)``.
    batch_size
        Forward-pass batch size, >= 1.

    Returns
    -------
    numpy.ndarray
        ``int64`` indices in increasing order (empty if the count is 0).  Equal
        losses are ranked by index (stable sort), so the lower index is isolated first.

    Raises
    ------
    ValueError
        If ``fraction`` is outside ``[0, 1)`` or the data / ``batch_size`` is invalid.
    """
    if not is_real(fraction) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    return _lowest(per_sample_losses(model, x, y, batch_size=batch_size), float(fraction))


def unlearning_targets(y: torch.Tensor, isolated: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Two-column targets ``[label, isolated_flag]`` for :func:`unlearning_loss`.

    Parameters
    ----------
    y
        Integer labels ``(N,)``; not modified.
    isolated
        Indices (into ``y``) of the isolated examples; duplicates are harmless.

    Returns
    -------
    torch.Tensor
        ``int64 (N, 2)``: column 0 the label, column 1 ``1`` for isolated examples and
        ``0`` otherwise.  A new tensor.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or an index is outside ``[0, N)``.
    """
    if not isinstance(y, torch.Tensor) or y.ndim != 1:
        raise ValueError(f"y must be a 1-D label tensor, got {getattr(y, 'shape', type(y).__name__)}")
    index = torch.as_tensor(np.asarray(isolated, dtype=np.int64).reshape(-1))
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(y)):
        raise ValueError(f"isolated holds indices outside [0, {len(y)})")
    flags = torch.zeros(len(y), dtype=torch.int64, device=y.device)
    flags[index.to(y.device)] = 1
    return torch.stack([y.detach().to(torch.int64), flags], dim=1)


def unlearning_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Eq. 9 global-gradient-ascent loss on one mini-batch (a :data:`LossFn`).

    ``mean_{i kept} CE_i − mean_{i isolated} CE_i``, each mean taken over the rows of
    this batch in that group and counted as 0 when the group is absent from the batch
    (a batch without isolated rows is plain cross-entropy; one with only isolated rows
    is pure ascent).

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits.
    x
        Input batch ``(B, ...)``.
    y
        ``(B, 2)`` targets from :func:`unlearning_targets`: ``[label, isolated_flag]``.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Raises
    ------
    ValueError
        If ``y`` is not ``(B, 2)``.
    """
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"y must be (B, 2) [label, isolated_flag] targets, got shape {tuple(y.shape)}")
    losses = functional.cross_entropy(model(x), y[:, 0].long(), reduction="none")
    isolated = y[:, 1].bool()
    kept = ~isolated
    zero = losses.sum() * 0.0
    kept_term = losses[kept].mean() if bool(kept.any()) else zero
    isolated_term = losses[isolated].mean() if bool(isolated.any()) else zero
    return kept_term - isolated_term


# ---------------------------------------------------------------------------- helpers


def _lowest(losses: torch.Tensor, fraction: float) -> np.ndarray:
    values = losses.detach().cpu().numpy()
    count = round(fraction * len(values))
    return np.sort(np.argsort(values, kind="stable")[:count]).astype(np.int64)


def _check_labelled(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be torch tensors")
    if x.ndim < 1 or len(x) == 0:
        raise ValueError("x is empty: need at least one example")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per example), got shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: len(x)={len(x)}, len(y)={len(y)}")
