"""Pixel-trigger backdoors: BadNets squares and the Distributed Backdoor Attack's split trigger.

* BadNets pixel-pattern backdoor (Gu et al., "BadNets: Identifying Vulnerabilities in the
  Machine Learning Model Supply Chain", 2017): :class:`Trigger`, :func:`pixel_pattern`
  (``kind="square"``), :func:`poison_with_trigger`, :func:`backdoor_test_set` (attack
  success rate = accuracy on that set).
* Distributed Backdoor Attack (Xie et al., "DBA: Distributed Backdoor Attacks against
  Federated Learning", ICLR 2020): the global trigger ``pixel_pattern(kind="dba")`` and
  its local triggers :func:`dba_parts`, one per attacker.

Like every data-poisoning transform (see :mod:`fedsec.data.poisoning`), the functions
return a new :class:`~fedsec.data.containers.TensorSplit` and never modify their input;
randomness comes from an explicit ``seed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedsec.data.containers import TensorSplit
from fedsec.data.poisoning import (
    _check_class,
    _check_fraction,
    _check_seed,
    _check_split,
    _labels,
)
from fedsec.numbers import is_int, is_real

__all__ = [
    "TRIGGER_KINDS",
    "Trigger",
    "backdoor_test_set",
    "dba_parts",
    "pixel_pattern",
    "poison_with_trigger",
]

logger = logging.getLogger(__name__)

#: The trigger layouts :func:`pixel_pattern` knows.
TRIGGER_KINDS: tuple[str, ...] = ("square", "dba")


# ---------------------------------------------------------------------------- triggers


@dataclass(frozen=True, eq=False)
class Trigger:
    """A pixel trigger: a boolean ``(H, W)`` mask written with ``value`` on every channel.

    Parameters
    ----------
    mask
        bool tensor of shape ``(H, W)`` with at least one True pixel; copied.
    value
        Pixel value written where the mask is True, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``mask`` or ``value`` is invalid.

    Notes
    -----
    Two triggers compare equal when their masks and values are equal; ``a + b`` (or
    ``a.compose(b)``) is their union.
    """

    mask: torch.Tensor
    value: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.mask, torch.Tensor) or self.mask.dtype != torch.bool or self.mask.ndim != 2:
            shape = tuple(self.mask.shape) if isinstance(self.mask, torch.Tensor) else type(self.mask)
            raise ValueError(f"mask must be a 2-D bool tensor (H, W), got {shape}")
        if not bool(self.mask.any()):
            raise ValueError("mask must have at least one True pixel")
        if not is_real(self.value) or not 0.0 <= float(self.value) <= 1.0:
            raise ValueError(f"value must be a number in [0, 1], got {self.value!r}")
        object.__setattr__(self, "mask", self.mask.detach().cpu().clone())
        object.__setattr__(self, "value", float(self.value))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return self.value == other.value and torch.equal(self.mask, other.mask)

    __hash__ = None  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the images this trigger fits."""
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def pixels(self) -> int:
        """Number of trigger pixels (True entries of the mask)."""
        return int(self.mask.sum())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of the images ``x`` ``(N, C, H, W)`` with the trigger stamped on all channels.

        Raises
        ------
        ValueError
            If ``x`` is not a floating ``(N, C, H, W)`` tensor with ``(H, W) == self.shape``.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not torch.is_floating_point(x):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating (N, C, H, W) tensor, got {shape}")
        if tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"x has images of size {tuple(x.shape[-2:])}, the trigger is {self.shape}")
        out = x.clone()
        out[:, :, self.mask.to(out.device)] = self.value
        return out

    def compose(self, other: Trigger) -> Trigger:
        """The union of this trigger and ``other`` (same size and value).

        Raises
        ------
        ValueError
            If ``other`` is not a Trigger or differs in size or value.
        """
        if not isinstance(other, Trigger):
            raise ValueError(f"other must be a Trigger, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"other has size {other.shape}, this trigger {self.shape}")
        if other.value != self.value:
            raise ValueError(f"other has value {other.value}, this trigger {self.value}")
        return Trigger(mask=self.mask | other.mask, value=self.value)

    def __add__(self, other: Trigger) -> Trigger:
        return self.compose(other)


def _check_input_shape(input_shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, tuple | list)
        or len(input_shape) != 3
        or not all(is_int(d) and d > 0 for d in input_shape)
    ):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


def pixel_pattern(
    input_shape: tuple[int, int, int],
    *,
    kind: str = "square",
    size: int = 4,
    margin: int = 1,
    value: float = 1.0,
) -> Trigger:
    """A standard trigger for images of ``input_shape``.

    ``kind="square"`` (BadNets): a ``size x size`` block in the bottom-right corner,
    ``margin`` pixels from the bottom and right edges: rows
    ``H-margin-size .. H-margin-1``, columns ``W-margin-size .. W-margin-1``.

    ``kind="dba"`` (Xie et al.'s global trigger): four horizontal bars, each one pixel
    tall and ``size`` long, arranged 2 x 2 from the top-left corner at ``(margin, margin)``.
    With ``gap = max(1, size // 2)``, the bars start at rows ``margin`` and
    ``margin + 1 + gap`` and columns ``margin`` and ``margin + size + gap``, i.e. ``gap``
    blank rows between the two rows of bars and ``gap`` blank columns between the two
    columns.  With ``margin=0`` this is exactly the DBA reference code's trigger: for
    MNIST (``size=4``) bars at rows 0, 3 and columns 0-3, 6-9; for CIFAR (``size=6``) rows
    0, 4 and columns 0-5, 9-14.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one image.
    kind
        ``"square"`` or ``"dba"``.
    size
        Side of the square / length of each bar, an int >= 1.
    margin
        Distance from the image edges, an int >= 0.
    value
        Pixel value of the trigger, in ``[0, 1]``.

    Returns
    -------
    Trigger

    Raises
    ------
    ValueError
        If a parameter is invalid or the pattern does not fit in the image.
    """
    _, h, w = _check_input_shape(input_shape)
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TRIGGER_KINDS)}, got {kind!r}")
    if not is_int(size) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not is_int(margin) or margin < 0:
        raise ValueError(f"margin must be an int >= 0, got {margin!r}")
    mask = torch.zeros((h, w), dtype=torch.bool)
    if kind == "square":
        if size + margin > h or size + margin > w:
            raise ValueError(
                f"size={size} with margin={margin} does not fit in {h}x{w} images "
                f"(needs size + margin <= {min(h, w)})"
            )
        mask[h - margin - size : h - margin, w - margin - size : w - margin] = True
    else:
        gap = max(1, size // 2)
        rows = (margin, margin + 1 + gap)
        cols = (margin, margin + size + gap)
        if rows[1] >= h or cols[1] + size > w:
            raise ValueError(
                f"the dba pattern with size={size}, margin={margin} needs {rows[1] + 1} rows and "
                f"{cols[1] + size} columns, images are {h}x{w}"
            )
        for r in rows:
            for c in cols:
                mask[r, c : c + size] = True
    return Trigger(mask=mask, value=value)


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a bool mask, each a row-major list of pixels, ordered by first pixel."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps: list[list[tuple[int, int]]] = []
    for r0, c0 in zip(*np.nonzero(mask), strict=True):
        if seen[r0, c0]:
            continue
        stack = [(int(r0), int(c0))]
        seen[r0, c0] = True
        comp: list[tuple[int, int]] = []
        while stack:
            r, c = stack.pop()
            comp.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        comps.append(sorted(comp))
    return comps


def dba_parts(trigger: Trigger, k: int) -> list[Trigger]:
    """Split a global trigger into ``k`` disjoint local triggers whose union is ``trigger``.

    If the trigger has exactly ``k`` 4-connected components (the four bars of
    ``pixel_pattern(kind="dba")`` with ``k=4``), each part is one component, ordered by
    its first pixel in row-major order.  Otherwise the pixels, in row-major order, are
    cut into ``k`` consecutive chunks of near-equal size (``numpy.array_split``).

    Parameters
    ----------
    trigger
        The global trigger.
    k
        Number of local triggers (one per DBA attacker), ``1 <= k <= trigger.pixels``.

    Returns
    -------
    list of Trigger
        ``k`` non-empty, pairwise disjoint triggers with the global trigger's value.

    Raises
    ------
    ValueError
        If ``trigger`` is not a Trigger or ``k`` is out of range.
    """
    if not isinstance(trigger, Trigger):
        raise ValueError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    if not is_int(k) or not 1 <= k <= trigger.pixels:
        raise ValueError(f"k must be an int in [1, {trigger.pixels}] (the trigger's pixels), got {k!r}")
    mask = trigger.mask.numpy()
    comps = _components(mask)
    if len(comps) == k:
        groups = [np.asarray(comp, dtype=np.int64) for comp in comps]
    else:
        pixels = np.argwhere(mask)  # row-major order
        groups = list(np.array_split(pixels, k))
    parts: list[Trigger] = []
    for group in groups:
        part = torch.zeros_like(trigger.mask)
        part[torch.from_numpy(group[:, 0]), torch.from_numpy(group[:, 1])] = True
        parts.append(Trigger(mask=part, value=trigger.value))
    return parts


def _check_trigger(trigger: Any, split: TensorSplit) -> Trigger:
    if not isinstance(trigger, Trigger):
        raise ValueError(f"trigger must be a Trigger, got {type(trigger).__name__}")
    if tuple(split.x.shape[-2:]) != trigger.shape:
        raise ValueError(f"trigger is {trigger.shape} but the images are {tuple(split.x.shape[-2:])}")
    return trigger


# ---------------------------------------------------------------------------- backdoors


def poison_with_trigger(
    split: TensorSplit, trigger: Trigger, *, target: int, fraction: float, seed: int
) -> TensorSplit:
    """A copy of ``split`` where a random ``fraction`` of the non-target samples carry the trigger.

    ``round(fraction * n)`` of the ``n`` samples whose label is not ``target`` are drawn
    without replacement with ``numpy.random.default_rng(seed)``; each gets the trigger
    stamped and the label ``target`` in place, so size and order are unchanged (BadNets
    and DBA data poisoning).

    Parameters
    ----------
    split
        The data (not modified).
    trigger
        The (global or local) trigger, of the images' size.
    target
        The backdoor's target label, an int >= 0.
    fraction
        Fraction of the non-target samples to poison, in ``[0, 1]``.
    seed
        Seed of the choice, an int in ``[0, 2**32)``.

    Returns
    -------
    TensorSplit

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    _check_split(split)
    _check_trigger(trigger, split)
    tgt = _check_class(target, "target")
    frac = _check_fraction(fraction)
    rng = np.random.default_rng(_check_seed(seed))
    candidates = np.flatnonzero(_labels(split) != tgt)
    count = round(frac * candidates.size)
    chosen = rng.choice(candidates, size=count, replace=False) if count else candidates[:0]
    x, y = split.x.clone(), split.y.clone()
    if count:
        idx = torch.from_numpy(np.sort(chosen).astype(np.int64))
        x[idx] = trigger.apply(x[idx])
        y[idx] = tgt
    logger.debug("poison_with_trigger: %s of %s non-target samples -> %s", count, candidates.size, tgt)
    return TensorSplit(x=x, y=y)


def backdoor_test_set(test: TensorSplit, trigger: Trigger, *, target: int) -> TensorSplit:
    """Every non-``target`` test sample with the trigger, labelled ``target``.

    The accuracy on this set is the backdoor's attack success rate (ASR).

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    _check_split(test, "test")
    _check_trigger(trigger, test)
    tgt = _check_class(target, "target")
    kept = test.subset(np.flatnonzero(_labels(test) != tgt))
    return TensorSplit(x=trigger.apply(kept.x), y=torch.full_like(kept.y, tgt))
