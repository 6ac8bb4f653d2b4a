"""Update-level model poisoning: boosting, distance-bounded crafting and the stealth objective.

Implements the malicious-update side of Chen et al., "Towards Multi-Party Targeted
Model Poisoning Attacks against Federated Learning Systems" (multi-party targeted
poisoning), which builds on the explicit boosting and stealth of Bhagoji et al.,
"Analyzing Federated Learning through an Adversarial Lens" (ICML 2019):

* update vectors: a client's update is the flattened difference ``w_client - w_global``
  (:func:`flat_update`, :func:`unflatten`, :func:`apply_update`), always a 1-D float64
  numpy array;
* explicit boosting (Bhagoji et al.): scale the malicious update by a factor
  (:func:`boost`) so it survives averaging with the benign ones;
* distance bound (Chen et al.): a malicious update is only submitted if its largest L2
  distance to the benign updates the attacker can estimate stays within a radius, so
  distance-based defences (Krum, norm/distance filters) do not single it out;
  :func:`select_lambda` picks the largest weight λ of the adversarial objective whose
  crafted update satisfies the bound and otherwise shrinks the update towards the benign
  mean (:func:`shrink_to_bound`); :func:`project_l2` is the plain ball projection;
* the stealth objective (Chen et al., Eq. 4), the malicious step of the alternating
  minimisation and the limited-knowledge draw live in :mod:`fedsec.attacks.stealth`.

Nothing here talks to Flower; clients convert ``Parameters`` to numpy arrays first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsec.numbers import is_real

__all__ = [
    "LambdaChoice",
    "apply_update",
    "boost",
    "cosine_similarity",
    "flat_update",
    "max_l2_distance",
    "project_l2",
    "select_lambda",
    "shrink_to_bound",
    "unflatten",
]

logger = logging.getLogger(__name__)

#: Bisection tolerance on the shrink factor ``t`` of :func:`shrink_to_bound`.
SHRINK_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------- helpers


def _vector(value: Any, name: str, *, size: int | None = None) -> np.ndarray:
    """``value`` as a fresh finite 1-D float64 array (optionally of length ``size``)."""
    try:
        arr = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D numeric array: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} must have {size} entries, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold finite values only")
    return arr


def _vectors(values: Sequence[Any], name: str, *, size: int) -> list[np.ndarray]:
    return [_vector(v, f"{name}[{i}]", size=size) for i, v in enumerate(values)]


def _radius(radius: Any, name: str = "radius", *, allow_inf: bool = True) -> float:
    if not is_real(radius) or math.isnan(float(radius)) or float(radius) < 0:
        raise ValueError(f"{name} must be a number >= 0, got {radius!r}")
    if not allow_inf and math.isinf(float(radius)):
        raise ValueError(f"{name} must be finite, got {radius!r}")
    return float(radius)


# ---------------------------------------------------------------------------- update vectors


def flat_update(weights: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> np.ndarray:
    """The update ``weights - reference`` flattened into one float64 vector.

    Parameters
    ----------
    weights
        The client's arrays (e.g. :func:`fedsec.training.get_weights` after local training).
    reference
        The global arrays the client started from, same count and shapes.

    Returns
    -------
    numpy.ndarray
        1-D float64, the concatenation of ``(w - ref).ravel()`` in order.

    Raises
    ------
    ValueError
        If the number of arrays or any shape differs.
    """
    if len(weights) != len(reference):
        raise ValueError(f"weights has {len(weights)} arrays but reference has {len(reference)}")
    parts: list[np.ndarray] = []
    for index, (w, ref) in enumerate(zip(weights, reference, strict=True)):
        a = np.asarray(w, dtype=np.float64)
        b = np.asarray(ref, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"weights[{index}] has shape {a.shape} but reference[{index}] has {b.shape}")
        parts.append((a - b).reshape(-1))
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts)


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Split a flat vector into new arrays shaped and typed like ``like``.

    Parameters
    ----------
    vector
        1-D array with exactly ``sum(a.size for a in like)`` entries.
    like
        Arrays giving the shapes and dtypes (not modified).

    Returns
    -------
    list of numpy.ndarray
        Fresh arrays; integer dtypes receive the rounded values.

    Raises
    ------
    ValueError
        If ``vector`` is not 1-D or its size disagrees with ``like``.
    """
    flat = np.asarray(vector)
    if flat.ndim != 1:
        raise ValueError(f"vector must be 1-D, got shape {flat.shape}")
    templates = [np.asarray(a) for a in like]
    total = sum(int(a.size) for a in templates)
    if flat.shape[0] != total:
        raise ValueError(f"vector has {flat.shape[0]} entries but like holds {total} values")
    out: list[np.ndarray] = []
    start = 0
    for template in templates:
        chunk = flat[start : start + template.size].reshape(template.shape)
        start += template.size
        if np.issubdtype(template.dtype, np.integer):
            chunk = np.rint(chunk)
        out.append(chunk.astype(template.dtype, copy=True))
    return out


def apply_update(reference: Sequence[np.ndarray], vector: np.ndarray) -> list[np.ndarray]:
    """``reference + vector`` as new arrays in the reference's shapes and dtypes.

    Parameters
    ----------
    reference
        The global arrays (not modified).
    vector
        A flat update of matching total size (e.g. from :func:`flat_update`).

    Returns
    -------
    list of numpy.ndarray
        The sums computed in float64, cast to each reference dtype (rounded for integers).

    Raises
    ------
    ValueError
        If the sizes disagree.
    """
    deltas = unflatten(np.asarray(vector, dtype=np.float64), [np.zeros(np.shape(r)) for r in reference])
    out: list[np.ndarray] = []
    for ref, delta in zip(reference, deltas, strict=True):
        base = np.asarray(ref)
        total = base.astype(np.float64) + delta
        if np.issubdtype(base.dtype, np.integer):
            total = np.rint(total)
        out.append(total.astype(base.dtype))
    return out


def boost(update: np.ndarray, factor: float) -> np.ndarray:
    """Explicit boosting (Bhagoji et al., 2019): ``factor * update`` as a new array.

    Parameters
    ----------
    update
        1-D update vector (not modified).
    factor
        Boosting factor, finite and > 0 (typically the number of clients per round).

    Returns
    -------
    numpy.ndarray
        float64 vector.

    Raises
    ------
    ValueError
        If ``factor`` is not a finite number > 0 or ``update`` is not a finite 1-D vector.
    """
    if not is_real(factor) or not math.isfinite(float(factor)) or float(factor) <= 0:
        raise ValueError(f"factor must be a finite number > 0, got {factor!r}")
    return float(factor) * _vector(update, "update")


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors; 0.0 if either has zero norm.

    Raises
    ------
    ValueError
        If the vectors are not 1-D of the same length.
    """
    va = _vector(a, "a")
    vb = _vector(b, "b", size=va.shape[0])
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.clip(np.dot(va, vb) / (na * nb), -1.0, 1.0))


def max_l2_distance(update: np.ndarray, others: Sequence[np.ndarray]) -> float:
    """``max_n ||update - others[n]||_2``; 0.0 if ``others`` is empty.

    Raises
    ------
    ValueError
        If any vector is not 1-D of the same length as ``update``.
    """
    u = _vector(update, "update")
    vs = _vectors(others, "others", size=u.shape[0])
    if not vs:
        return 0.0
    return max(float(np.linalg.norm(u - v)) for v in vs)


def project_l2(update: np.ndarray, *, center: np.ndarray, radius: float) -> np.ndarray:
    """Euclidean projection of ``update`` onto the L2 ball of ``radius`` around ``center``.

    Parameters
    ----------
    update
        1-D vector (not modified).
    center
        Centre of the ball, same length.
    radius
        Radius >= 0 (``math.inf``: no constraint).

    Returns
    -------
    numpy.ndarray
        A copy of ``update`` if it lies inside the ball, else
        ``center + radius * (update - center) / ||update - center||``.

    Raises
    ------
    ValueError
        If ``radius`` is negative or NaN, or the vectors disagree in shape.
    """
    r = _radius(radius)
    u = _vector(update, "update")
    c = _vector(center, "center", size=u.shape[0])
    diff = u - c
    dist = float(np.linalg.norm(diff))
    if dist <= r:
        return u
    return c + (r / dist) * diff


def shrink_to_bound(
    update: np.ndarray, benign: Sequence[np.ndarray], *, radius: float
) -> tuple[np.ndarray, float]:
    """Pull ``update`` towards the benign mean until it is within ``radius`` of every benign update.

    Searches the segment ``m + t (update - m)``, ``m = mean(benign)``, for the largest
    ``t`` in ``[0, 1]`` with ``max_l2_distance(point, benign) <= radius``.  That distance
    is convex in ``t``, so once ``t = 0`` is feasible the feasible ``t`` form an interval
    ``[0, t*]``; ``t*`` is found by bisection to :data:`SHRINK_TOLERANCE` and the returned
    point is re-checked against the bound.

    Parameters
    ----------
    update
        The malicious update (not modified).
    benign
        At least one benign update (the attacker's estimate of them), same length.
    radius
        The distance bound, >= 0 (``math.inf``: ``update`` is returned unchanged).

    Returns
    -------
    point : numpy.ndarray
        The shrunk update (a copy of ``update`` when ``t = 1``).
    t : float
        The shrink factor used.  If even the mean violates the bound (the benign
        updates are more than ``radius`` from their mean), a warning is logged and
        ``(m, 0.0)`` is returned although it is outside the bound.

    Raises
    ------
    ValueError
        If ``benign`` is empty, ``radius`` is invalid or the shapes disagree.
    """
    r = _radius(radius)
    u = _vector(update, "update")
    bs = _vectors(benign, "benign", size=u.shape[0])
    if not bs:
        raise ValueError("benign must hold at least one update")
    if max_l2_distance(u, bs) <= r:
        return u, 1.0
    mean = np.mean(np.stack(bs), axis=0)
    if max_l2_distance(mean, bs) > r:
        logger.warning(
            "no point between the update and the benign mean is within radius %s "
            "(the mean itself is %s away from a benign update); returning the benign mean",
            r,
            max_l2_distance(mean, bs),
        )
        return mean, 0.0
    direction = u - mean
    lo, hi = 0.0, 1.0  # lo feasible, hi infeasible
    while hi - lo > SHRINK_TOLERANCE:
        mid = 0.5 * (lo + hi)
        if max_l2_distance(mean + mid * direction, bs) <= r:
            lo = mid
        else:
            hi = mid
    point = mean + lo * direction
    if max_l2_distance(point, bs) > r:  # cannot happen: lo is only ever set to a feasible t
        raise RuntimeError(f"shrink_to_bound produced a point outside radius {r} (t={lo})")
    logger.debug("shrunk update by t=%s to fit radius %s", lo, r)
    return point, lo


# ---------------------------------------------------------------------------- λ selection


@dataclass(frozen=True, eq=False)
class LambdaChoice:
    """Outcome of :func:`select_lambda`.

    Attributes
    ----------
    lam
        The chosen weight λ of the adversarial objective (0.0: no λ yielded an
        update, the benign mean is sent).
    update
        The malicious update to submit (1-D float64).
    within_bound
        True if ``craft(lam)`` itself satisfied the distance bound; False if no
        candidate did and the smallest candidate's update was shrunk towards the
        benign mean (:func:`shrink_to_bound`).
    tried
        The λ values passed to ``craft``, in call order (largest first).
    """

    lam: float
    update: np.ndarray
    within_bound: bool
    tried: tuple[float, ...]


def select_lambda(
    candidates: Sequence[float],
    craft: Callable[[float], np.ndarray | None],
    *,
    benign: Sequence[np.ndarray],
    radius: float,
    accept: Callable[[np.ndarray], bool] | None = None,
) -> LambdaChoice:
    """The largest λ whose crafted update stays within ``radius`` of every benign update.

    Candidates are tried from the largest to the smallest (duplicates once); ``craft``
    is called once per λ tried and the first update with
    ``max_l2_distance(update, benign) <= radius`` (and ``accept(update)``, when
    given, e.g. the attacker's own accuracy check) is returned.  If none fits,
    the smallest candidate's update is shrunk with :func:`shrink_to_bound`.
    ``craft`` may return None for a λ that yields no update (e.g. its training
    diverged); that λ is skipped.  If no λ yields one, the choice is λ = 0 and
    the benign mean (nothing malicious is sent).

    Parameters
    ----------
    candidates
        Non-empty λ values, each finite and > 0.
    craft
        ``craft(lam) -> update``: trains the malicious model with weight ``lam`` and
        returns its flat update (1-D, same length as the benign updates), or None
        when that λ gives no usable update.
    benign
        The attacker's estimate of the benign updates (may be empty: distance 0).
    radius
        The distance bound, > 0; ``math.inf`` means no bound.
    accept
        An extra constraint an update must meet (None: none); with no bound and no
        ``accept`` only the largest candidate is crafted.

    Returns
    -------
    LambdaChoice

    Raises
    ------
    ValueError
        If ``candidates``, ``radius``, ``benign`` or a crafted update is invalid, or
        no λ yields an update and ``benign`` is empty.
    """
    if isinstance(candidates, str | bytes) or len(candidates) == 0:
        raise ValueError("candidates must be a non-empty sequence of numbers > 0")
    lams: list[float] = []
    for lam in candidates:
        if not is_real(lam) or not math.isfinite(float(lam)) or float(lam) <= 0:
            raise ValueError(f"candidates must be finite numbers > 0, got {lam!r}")
        lams.append(float(lam))
    order = sorted(set(lams), reverse=True)
    if not is_real(radius) or math.isnan(float(radius)) or float(radius) <= 0:
        raise ValueError(f"radius must be a number > 0 (math.inf: no bound), got {radius!r}")
    r = float(radius)
    benign_list = [np.asarray(b) for b in benign]

    tried: list[float] = []
    last: tuple[float, np.ndarray] | None = None  # the smallest λ that yielded an update
    for lam in order:
        tried.append(lam)
        crafted = craft(lam)
        if crafted is None:
            logger.info("lambda %s yielded no update; skipped", lam)
            continue
        update = _vector(crafted, f"craft({lam})")
        if benign_list and last is None:
            _vectors(benign_list, "benign", size=update.shape[0])
        last = (lam, update)
        distance = 0.0 if math.isinf(r) else max_l2_distance(update, benign_list)
        logger.debug("lambda %s: max distance to benign %s (radius %s)", lam, distance, r)
        if distance <= r and (accept is None or accept(update)):
            return LambdaChoice(lam=lam, update=update, within_bound=True, tried=tuple(tried))
    if last is None:
        if not benign_list:
            raise ValueError(f"no lambda in {order} yielded an update and there is no benign update to send")
        logger.warning("no lambda in %s yielded an update; sending the benign mean", order)
        mean = np.mean(np.stack(benign_list), axis=0).astype(np.float64)
        return LambdaChoice(lam=0.0, update=mean, within_bound=True, tried=tuple(tried))
    lam, update = last
    if math.isinf(r):
        return LambdaChoice(lam=lam, update=update, within_bound=False, tried=tuple(tried))
    point, t = shrink_to_bound(update, benign_list, radius=r)
    logger.info("no lambda in %s fits radius %s; shrank lambda=%s's update by t=%s", order, r, lam, t)
    return LambdaChoice(lam=lam, update=point, within_bound=False, tried=tuple(tried))
