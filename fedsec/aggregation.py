"""Pure numpy aggregation math: weighted mean, gradient mean and a server-side Adam step.

:func:`weighted_mean` is FedAvg's aggregation (McMahan et al., 2017,
"Communication-Efficient Learning of Deep Networks from Decentralized Data"):
the per-array average of client models weighted by, usually, their example
counts.

:func:`gradient_mean`, :func:`adam_init` and :func:`adam_step` implement the
cloud side of FDA³ (Song et al., "FDA³: Federated Defense Against Adversarial
Attacks for Cloud-Based IIoT Applications", Algorithm 2): devices send the
gradients of ``α·CE(nat) + (1-α)·CE(adv)``, the cloud averages them
(``1/N Σ g_i``) and applies one Adam step to the server model.  The Adam step
reproduces ``torch.optim.Adam`` (single-tensor, non-AMSGrad, L2 weight decay
added to the gradient) operation for operation in the parameters' dtype, so a
server that keeps its model as numpy arrays follows the same trajectory as a
torch optimizer would.

:func:`mean_update_model` is the starting point of PDGAN's discriminator in
Algorithm 1, line 6 of Zhao et al., "Detecting and mitigating poisoning
attacks in federated learning using generative adversarial networks": the
previous global model plus the mean of this round's client updates,
``M_{t-1} + 1/k Σ_i u_i`` with ``u_i = w_i − M_{t-1}``.

Every function returns new arrays and never mutates its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AdamState", "adam_init", "adam_step", "gradient_mean", "mean_update_model", "weighted_mean"]


def _check_layouts(name: str, updates: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
    """Turn ``updates`` into lists of arrays whose count and shapes match ``updates[0]``."""
    if len(updates) == 0:
        raise ValueError(f"{name} must hold at least one update, got none")
    arrays = [[np.asarray(a) for a in update] for update in updates]
    reference = arrays[0]
    for index, update in enumerate(arrays[1:], start=1):
        if len(update) != len(reference):
            raise ValueError(
                f"{name}[{index}] has {len(update)} arrays, expected {len(reference)} (as {name}[0])"
            )
        for position, (array, first) in enumerate(zip(update, reference, strict=True)):
            if array.shape != first.shape:
                raise ValueError(
                    f"{name}[{index}] array {position} has shape {array.shape}, "
                    f"expected {first.shape} (as {name}[0])"
                )
    return arrays


def weighted_mean(updates: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """Per-array weighted average of several updates (FedAvg aggregation).

    Parameters
    ----------
    updates
        One sequence of arrays per client, all with the same number of arrays
        and the same shapes.
    weights
        One non-negative, finite weight per update (e.g. example counts); their
        sum must be positive.  Only the ratios matter.

    Returns
    -------
    list of numpy.ndarray
        ``Σ_i w_i · updates[i][k] / Σ_i w_i`` for every array ``k``.  Sums are
        accumulated in float64 and cast to the dtype of ``updates[0][k]``;
        integer arrays (e.g. BatchNorm's ``num_batches_tracked``) are rounded to
        the nearest integer first.

    Raises
    ------
    ValueError
        If ``updates`` is empty, the number of weights differs from the number
        of updates, a weight is negative or not finite, the weights sum to zero,
        or an update's array count or shapes differ from ``updates[0]`` (the
        message names the update's index).
    """
    arrays = _check_layouts("updates", updates)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != len(arrays):
        raise ValueError(f"weights must hold one weight per update ({len(arrays)}), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and >= 0, got {w.tolist()}")
    total = float(w.sum())
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {w.tolist()}")

    result: list[np.ndarray] = []
    for position, first in enumerate(arrays[0]):
        acc = np.zeros(first.shape, dtype=np.float64)
        for weight, update in zip(w, arrays, strict=True):
            acc += weight * update[position].astype(np.float64)
        mean = acc / total
        if not np.issubdtype(first.dtype, np.inexact):
            mean = np.rint(mean)
        result.append(np.asarray(mean, dtype=first.dtype))
    return result


def gradient_mean(gradients: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Unweighted mean ``1/N Σ_i g_i`` of the devices' gradients (FDA³, Algorithm 2).

    Parameters
    ----------
    gradients
        One sequence of gradient arrays per device, all with matching shapes.

    Returns
    -------
    list of numpy.ndarray
        The per-array mean, in the dtype of ``gradients[0]``.

    Raises
    ------
    ValueError
        If ``gradients`` is empty or the layouts differ (naming the index).
    """
    if len(gradients) == 0:
        raise ValueError("gradients must hold at least one update, got none")
    arrays = _check_layouts("gradients", gradients)
    return weighted_mean(arrays, [1.0] * len(arrays))


def mean_update_model(
    previous: Sequence[np.ndarray], models: Sequence[Sequence[np.ndarray]]
) -> list[np.ndarray]:
    """``M_{t-1} + mean_i(w_i − M_{t-1})``: the previous model moved by the mean client update (PDGAN).

    The updates ``u_i = w_i − M_{t-1}`` are averaged unweighted, as in Algorithm 1
    of Zhao et al. (PDGAN), line 6, where the result initialises the discriminator.

    Parameters
    ----------
    previous
        ``M_{t-1}``: the global model the clients started from.
    models
        ``w_i``: each client's returned model, with ``previous``'s layout.

    Returns
    -------
    list of numpy.ndarray
        Computed in float64 and returned in ``previous``'s dtypes (integer arrays,
        e.g. a batch-norm step counter, are rounded).

    Raises
    ------
    ValueError
        If ``models`` is empty or a layout differs from ``previous`` (naming the index).
    """
    if len(models) == 0:
        raise ValueError("models must hold at least one client model, got none")
    arrays = _check_layouts("models", models)
    reference = [np.asarray(a) for a in previous]
    if [a.shape for a in reference] != [a.shape for a in arrays[0]]:
        raise ValueError(
            f"previous has shapes {[a.shape for a in reference]}, models[0] {[a.shape for a in arrays[0]]}"
        )
    base = [a.astype(np.float64) for a in reference]
    updates = [[a.astype(np.float64) - b for a, b in zip(m, base, strict=True)] for m in arrays]
    result = []
    for b, mean, ref in zip(base, gradient_mean(updates), reference, strict=True):
        value = b + mean
        if not np.issubdtype(ref.dtype, np.inexact):
            value = np.rint(value)
        result.append(value.astype(ref.dtype))
    return result


@dataclass(frozen=True, eq=False)
class AdamState:
    """Adam's state for a list of parameter arrays (one entry per array).

    Compared by identity (``eq=False``): ``==`` on tuples of arrays would be
    ambiguous.

    Attributes
    ----------
    step
        Number of steps taken so far (``t``; 0 before the first step).
    exp_avg
        First-moment estimates ``m``, one array per parameter array.
    exp_avg_sq
        Second-moment estimates ``v``, one array per parameter array.
    """

    step: int
    exp_avg: tuple[np.ndarray, ...]
    exp_avg_sq: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if isinstance(self.step, bool) or not isinstance(self.step, int | np.integer) or self.step < 0:
            raise ValueError(f"step must be an integer >= 0, got {self.step!r}")
        if len(self.exp_avg) != len(self.exp_avg_sq):
            raise ValueError(
                f"exp_avg and exp_avg_sq must have the same length, got "
                f"{len(self.exp_avg)} and {len(self.exp_avg_sq)}"
            )
        for index, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            if np.shape(m) != np.shape(v):
                raise ValueError(
                    f"exp_avg[{index}] and exp_avg_sq[{index}] shapes differ: {np.shape(m)} vs {np.shape(v)}"
                )
        object.__setattr__(self, "step", int(self.step))
        object.__setattr__(self, "exp_avg", tuple(self.exp_avg))
        object.__setattr__(self, "exp_avg_sq", tuple(self.exp_avg_sq))


def adam_init(params: Sequence[np.ndarray]) -> AdamState:
    """Fresh Adam state for ``params``: step 0 and zero moments shaped like each array."""
    arrays = [np.asarray(p) for p in params]
    return AdamState(
        step=0,
        exp_avg=tuple(np.zeros_like(p) for p in arrays),
        exp_avg_sq=tuple(np.zeros_like(p) for p in arrays),
    )


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """``start + weight·(end − start)`` the way ``torch.lerp`` evaluates it."""
    w = start.dtype.type(weight)
    if abs(weight) < 0.5:
        return start + w * (end - start)
    return end - (end - start) * (start.dtype.type(1) - w)


def adam_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    state: AdamState,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[list[np.ndarray], AdamState]:
    """One Adam step on numpy arrays, matching ``torch.optim.Adam``.

    With ``t = state.step + 1``, for every floating parameter array ``p`` and
    its gradient ``g`` (all in ``p``'s dtype)::

        g  = g + weight_decay · p                      (if weight_decay > 0; L2, as torch's Adam)
        m  = lerp(m, g, 1 − β1)                         (= β1·m + (1 − β1)·g)
        v  = β2·v + (1 − β2)·g·g
        p  = p − lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)

    This is ``torch.optim.Adam``'s single-tensor path (``amsgrad=False``,
    ``maximize=False``, ``decoupled_weight_decay=False``).  On float32 arrays it
    agrees with torch to a few float32 ulps (torch's vectorised CPU kernels fuse
    multiply-adds and may use MKL's sqrt, so bit equality is not portable): about
    1e-7 for parameters of order 1, i.e. well within 1e-6 over tens of steps.

    Integer parameter arrays (e.g. BatchNorm's ``num_batches_tracked``) are
    not optimised: they are returned unchanged (as a copy), their moments stay
    zero, and their gradients must be all zeros.

    Parameters
    ----------
    params
        The current parameter arrays (the server model).
    grads
        One gradient per parameter array, same shapes; cast to each
        parameter's dtype.  In FDA³ this is :func:`gradient_mean` of the
        devices' gradients.
    state
        The state returned by :func:`adam_init` or the previous call.
    lr
        Learning rate, > 0.
    betas
        ``(β1, β2)``, each in ``[0, 1)``.
    eps
        Term added to the denominator, > 0.
    weight_decay
        L2 penalty coefficient, >= 0, added to the gradient.

    Returns
    -------
    tuple
        The new parameter arrays and the new :class:`AdamState` (step ``t``).
        Neither ``params``, ``grads`` nor ``state``'s arrays are modified.

    Raises
    ------
    ValueError
        For a hyperparameter out of range (naming it), mismatched lengths or
        shapes of ``params``, ``grads`` and ``state`` (naming the index), a
        non-finite gradient, or a non-zero gradient for an integer array.
    """
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for name, beta in zip(("betas[0]", "betas[1]"), betas, strict=True):
        if not (isinstance(beta, int | float) and 0.0 <= beta < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if not (isinstance(weight_decay, int | float) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")

    ps = [np.asarray(p) for p in params]
    gs = [np.asarray(g) for g in grads]
    if len(gs) != len(ps):
        raise ValueError(f"grads must hold one array per parameter array ({len(ps)}), got {len(gs)}")
    if len(state.exp_avg) != len(ps):
        raise ValueError(
            f"state holds moments for {len(state.exp_avg)} arrays, but params has {len(ps)} arrays"
        )
    for index, (p, g, m, v) in enumerate(zip(ps, gs, state.exp_avg, state.exp_avg_sq, strict=True)):
        if g.shape != p.shape:
            raise ValueError(f"grads[{index}] has shape {g.shape}, expected {p.shape} (as params[{index}])")
        if np.shape(m) != p.shape or np.shape(v) != p.shape:
            raise ValueError(
                f"state moments for array {index} have shape {np.shape(m)}, expected {p.shape} "
                f"(as params[{index}])"
            )
        if np.issubdtype(g.dtype, np.inexact) and not np.all(np.isfinite(g)):
            raise ValueError(f"grads[{index}] has non-finite values (NaN/Inf)")
        if not np.issubdtype(p.dtype, np.floating) and np.any(g != 0):
            raise ValueError(
                f"grads[{index}] must be all zeros: params[{index}] has integer dtype {p.dtype} "
                "and is not optimised"
            )

    beta1, beta2 = float(betas[0]), float(betas[1])
    step = state.step + 1
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5

    new_params: list[np.ndarray] = []
    new_m: list[np.ndarray] = []
    new_v: list[np.ndarray] = []
    for p, g, m_old, v_old in zip(ps, gs, state.exp_avg, state.exp_avg_sq, strict=True):
        if not np.issubdtype(p.dtype, np.floating):
            new_params.append(p.copy())
            new_m.append(np.array(m_old, copy=True))
            new_v.append(np.array(v_old, copy=True))
            continue
        scalar = p.dtype.type
        grad = g.astype(p.dtype, copy=True)
        if weight_decay != 0:
            grad = grad + scalar(weight_decay) * p
        m = _lerp(np.asarray(m_old, dtype=p.dtype), grad, 1 - beta1)
        v = np.asarray(v_old, dtype=p.dtype) * scalar(beta2) + scalar(1 - beta2) * (grad * grad)
        denom = np.sqrt(v) / scalar(bias_correction2_sqrt) + scalar(eps)
        # 0-d arithmetic yields numpy scalars; np.asarray keeps every result an ndarray
        new_params.append(np.asarray(p + scalar(-step_size) * (m / denom), dtype=p.dtype))
        new_m.append(np.asarray(m, dtype=p.dtype))
        new_v.append(np.asarray(v, dtype=p.dtype))

    return new_params, AdamState(step=step, exp_avg=tuple(new_m), exp_avg_sq=tuple(new_v))
