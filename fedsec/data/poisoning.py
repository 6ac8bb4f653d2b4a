"""Data poisoning: targeted label flipping, and the argument checks of every data-poisoning transform.

Every function of the data-poisoning modules takes a
:class:`~fedsec.data.containers.TensorSplit` and returns a new one; the input is
never modified.  Randomness comes from an explicit ``seed``.

* Targeted label flipping and the objective set of targeted poisoning (Chen et al.,
  "Towards Multi-Party Targeted Model Poisoning Attacks against Federated Learning
  Systems"): :func:`targeted_subset`, :func:`chosen_targets`, :func:`flip_labels` (here).
* BadNets pixel-pattern and DBA trigger backdoors: :mod:`fedsec.data.triggers`.
* Clean-label backdoor (Turner et al.): :mod:`fedsec.data.clean_label`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from fedsec.data.containers import TensorSplit
from fedsec.numbers import is_int, is_real

__all__ = ["flip_labels", "targeted_subset"]

logger = logging.getLogger(__name__)

_MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------------------- helpers


def _check_split(split: Any, name: str = "split") -> TensorSplit:
    if not isinstance(split, TensorSplit):
        raise ValueError(f"{name} must be a TensorSplit, got {type(split).__name__}")
    return split


def _check_class(value: Any, name: str) -> int:
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be a class index (an int >= 0), got {value!r}")
    return int(value)


def _check_fraction(value: Any, name: str = "fraction") -> float:
    if not is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_seed(value: Any) -> int:
    if not is_int(value) or not 0 <= value <= _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**32), got {value!r}")
    return int(value)


def _source_target(source: Any, target: Any) -> tuple[int, int]:
    src = _check_class(source, "source")
    tgt = _check_class(target, "target")
    if src == tgt:
        raise ValueError(f"target must differ from source, both are {src}")
    return src, tgt


def _labels(split: TensorSplit) -> np.ndarray:
    return split.y.detach().cpu().numpy()


# ---------------------------------------------------------------------------- label flipping


def targeted_subset(split: TensorSplit, *, source: int, target: int) -> TensorSplit:
    """The ``source``-class samples of ``split``, relabelled ``target`` (copies).

    On the attacker's training data this is the objective set of targeted poisoning; on
    the test split, the accuracy on it is the *targeted accuracy* (fraction of source
    samples classified as the target).

    Parameters
    ----------
    split
        The data (not modified).
    source
        The class whose samples are targeted, an int >= 0.
    target
        The label the adversary wants them to get, an int >= 0 different from ``source``.

    Returns
    -------
    TensorSplit
        Possibly empty (a warning is logged) if ``split`` has no ``source`` samples.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    _check_split(split)
    src, tgt = _source_target(source, target)
    idx = np.flatnonzero(_labels(split) == src)
    if idx.size == 0:
        logger.warning("targeted_subset: no samples of source class %s", src)
    out = split.subset(idx)
    return TensorSplit(x=out.x, y=torch.full_like(out.y, tgt))


def chosen_targets(split: TensorSplit, *, source: int, target: int, count: int, seed: int) -> TensorSplit:
    """``count`` seeded source-class samples of ``split``, relabelled ``target`` (chosen inputs).

    The targeted attacks of Bhagoji et al. and Chen et al. aim at a few chosen
    inputs rather than a whole class; attackers and the server's evaluation
    draw the same ones from the same seed.  ``count`` larger than the class
    takes the whole class.
    """
    if not is_int(count) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    everything = targeted_subset(split, source=source, target=target)
    if count >= len(everything):
        return everything
    order = np.random.default_rng(_check_seed(seed)).permutation(len(everything))[:count]
    return everything.subset(np.sort(order))


def flip_labels(split: TensorSplit, *, source: int, target: int, fraction: float, seed: int) -> TensorSplit:
    """A copy of ``split`` where a random ``fraction`` of the ``source`` samples are labelled ``target``.

    Exactly ``round(fraction * n_source)`` samples (Python rounding, half to even) are
    drawn without replacement with ``numpy.random.default_rng(seed)``; images and all
    other labels are unchanged.

    Parameters
    ----------
    split
        The data (not modified).
    source
        Class whose labels are flipped, an int >= 0.
    target
        New label, an int >= 0 different from ``source``.
    fraction
        Fraction of the source samples to flip, in ``[0, 1]``.
    seed
        Seed of the choice, an int in ``[0, 2**32)``.

    Returns
    -------
    TensorSplit
        Same size and order as ``split``.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    _check_split(split)
    src, tgt = _source_target(source, target)
    frac = _check_fraction(fraction)
    rng = np.random.default_rng(_check_seed(seed))
    candidates = np.flatnonzero(_labels(split) == src)
    count = round(frac * candidates.size)
    chosen = rng.choice(candidates, size=count, replace=False) if count else candidates[:0]
    y = split.y.clone()
    y[torch.from_numpy(chosen.astype(np.int64))] = tgt
    logger.debug("flip_labels: %s of %s samples of class %s -> %s", count, candidates.size, src, tgt)
    return TensorSplit(x=split.x.clone(), y=y)
