"""Data poisoning transforms: label flipping, pixel triggers, DBA and clean-label backdoors.

Every function takes a :class:`~fedsec.data.containers.TensorSplit` and returns a new one;
the input is never modified.  Randomness comes from an explicit ``seed``.

* Targeted label flipping and the objective set of targeted poisoning (Chen et al.,
  "Towards Multi-Party Targeted Model Poisoning Attacks against Federated Learning
  Systems"): :func:`targeted_subset`, :func:`flip_labels`.
* BadNets pixel-pattern backdoor (Gu et al., "BadNets: Identifying Vulnerabilities in the
  Machine Learning Model Supply Chain", 2017): :class:`Trigger`, :func:`pixel_pattern`
  (``kind="square"``), :func:`poison_with_trigger`, :func:`backdoor_test_set` (attack
  success rate = accuracy on that set).
* Distributed Backdoor Attack (Xie et al., "DBA: Distributed Backdoor Attacks against
  Federated Learning", ICLR 2020): the global trigger ``pixel_pattern(kind="dba")`` and
  its local triggers :func:`dba_parts`, one per attacker.
* Clean-label backdoor (Turner et al., "Label-Consistent Backdoor Attacks", 2019):
  :func:`clean_label_poison`, with the PGD and backdoor parts of ART's
  ``PoisoningAttackCleanLabelBackdoor``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsec.data.containers import TensorSplit
from fedsec.device import model_device, rng_devices

__all__ = [
    "TRIGGER_KINDS",
    "Trigger",
    "backdoor_test_set",
    "clean_label_poison",
    "dba_parts",
    "flip_labels",
    "pixel_pattern",
    "poison_with_trigger",
    "targeted_subset",
]

logger = logging.getLogger(__name__)

#: The trigger layouts :func:`pixel_pattern` knows.
TRIGGER_KINDS: tuple[str, ...] = ("square", "dba")

_MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------------------- helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_split(split: Any, name: str = "split") -> TensorSplit:
    if not isinstance(split, TensorSplit):
        raise ValueError(f"{name} must be a TensorSplit, got {type(split).__name__}")
    return split


def _check_class(value: Any, name: str) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a class index (an int >= 0), got {value!r}")
    return int(value)


def _check_fraction(value: Any, name: str = "fraction") -> float:
    if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_seed(value: Any) -> int:
    if not _is_int(value) or not 0 <= value <= _MAX_SEED:
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
    if not _is_int(count) or count < 1:
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
        if not _is_real(self.value) or not 0.0 <= float(self.value) <= 1.0:
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
        or not all(_is_int(d) and d > 0 for d in input_shape)
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
    if not _is_int(size) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not _is_int(margin) or margin < 0:
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
    if not _is_int(k) or not 1 <= k <= trigger.pixels:
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


@contextmanager
def _seeded_frozen(model: nn.Module, seed: int) -> Iterator[None]:
    """Seed numpy's and torch's global RNGs and freeze ``model`` in eval mode; restore all on exit."""
    np_state = np.random.get_state()
    modes = [(module, module.training) for module in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    with torch.random.fork_rng(devices=rng_devices(model_device(model))):
        np.random.seed(seed)
        torch.manual_seed(seed)
        model.eval()
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            for module, mode in modes:
                module.training = mode
            for p, flag, grad in zip(params, flags, grads, strict=True):
                p.requires_grad_(flag)
                p.grad = grad


def clean_label_poison(
    split: TensorSplit,
    trigger: Trigger,
    *,
    target: int,
    fraction: float,
    model: nn.Module,
    input_shape: tuple[int, int, int],
    num_classes: int,
    eps: float,
    eps_step: float,
    max_iter: int,
    seed: int,
    copies: int = 1,
) -> TensorSplit:
    """Turner et al.'s clean-label backdoor: perturb and trigger target-class images, keep labels.

    The two steps of ART's ``PoisoningAttackCleanLabelBackdoor``, with ART's own parts:
    untargeted L-inf ``ProjectedGradientDescent`` on ``model`` (wrapped by
    :func:`fedsec.attacks.evasion.art_classifier`) away from the model's predictions, so the
    images' content becomes hard to classify and a model must rely on the trigger, then a
    ``PoisoningAttackBackdoor`` whose perturbation is :meth:`Trigger.apply`.  Every label
    stays the true one.

    Two departures from ART's ``poison`` method, which draws ``int(pp_poison * n_target)``
    samples *with* replacement and rejects ``pp_poison = 1``: here
    ``int(fraction * n_target)`` *distinct* target-class samples are drawn (seeded), and
    ``fraction = 1`` poisons every one.  With ``copies = k > 1`` each chosen image yields
    ``k`` poisons: the first replaces it, the other ``k - 1`` are appended after the
    data (label ``target``, its true label), each from its own random start of PGD
    (``num_random_init = 1``; with ``copies = 1`` PGD starts at the image, ART's default).

    numpy's and torch's global RNGs are seeded from ``seed`` for the ART calls and restored
    afterwards; the model is run in eval mode with frozen parameters and its modes,
    ``requires_grad`` flags and gradients are restored.

    Parameters
    ----------
    split
        The data (not modified); labels in ``[0, num_classes)``.
    trigger
        The backdoor trigger, of the images' size.
    target
        The target class, whose samples are poisoned; an int in ``[0, num_classes)``.
    fraction
        Fraction of the target-class samples poisoned, in ``(0, 1]``.
    model
        Proxy classifier returning ``(B, num_classes)`` logits (e.g. the current global
        model); ART runs it where its parameters are.
    input_shape
        ``(C, H, W)`` of one image; must match ``split``.
    num_classes
        Number of classes, an int >= 2.
    eps, eps_step
        PGD's L-inf budget and step size, finite and > 0.
    max_iter
        PGD steps, an int >= 1.
    seed
        Seed of the sample choice and of PGD's random starts, an int in ``[0, 2**32)``.
    copies
        Poisons made from each chosen image, an int >= 1.

    Returns
    -------
    TensorSplit
        ``split`` with the chosen target-class images poisoned in place (same order and
        labels), followed by ``(copies - 1) * chosen`` extra poisons labelled ``target``.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    from art.attacks.evasion import ProjectedGradientDescent
    from art.attacks.poisoning import PoisoningAttackBackdoor

    from fedsec.attacks.evasion import art_classifier

    _check_split(split)
    _check_trigger(trigger, split)
    shape = _check_input_shape(input_shape)
    if tuple(split.x.shape[1:]) != shape:
        raise ValueError(f"input_shape is {shape} but the images are {tuple(split.x.shape[1:])}")
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    tgt = _check_class(target, "target")
    if tgt >= num_classes:
        raise ValueError(f"target must be in [0, {num_classes}), got {tgt}")
    if not _is_real(fraction) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    for name, val in (("eps", eps), ("eps_step", eps_step)):
        if not _is_real(val) or not math.isfinite(float(val)) or float(val) <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
    if not _is_int(max_iter) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not _is_int(copies) or copies < 1:
        raise ValueError(f"copies must be an int >= 1, got {copies!r}")
    rng_seed = _check_seed(seed)
    labels = _labels(split).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"split holds labels outside [0, {num_classes})")

    candidates = np.flatnonzero(labels == tgt)
    count = int(float(fraction) * candidates.size)
    if count == 0:
        logger.warning(
            "clean_label_poison: fraction %s of %s target-class samples poisons none",
            fraction,
            candidates.size,
        )
        return TensorSplit(x=split.x.clone(), y=split.y.clone())
    chosen = np.sort(np.random.default_rng(rng_seed).choice(candidates, size=count, replace=False))

    def stamp(batch: np.ndarray) -> np.ndarray:
        stamped = trigger.apply(torch.from_numpy(np.asarray(batch, dtype=np.float32)))
        return stamped.numpy()

    x_np = split.x.detach().cpu().numpy().astype(np.float32, copy=True)
    target_label = np.eye(num_classes, dtype=np.float32)[tgt]
    poisons: list[np.ndarray] = []
    with _seeded_frozen(model, rng_seed):
        pgd = ProjectedGradientDescent(
            art_classifier(model, input_shape=shape, num_classes=int(num_classes)),
            norm=np.inf,
            eps=float(eps),
            eps_step=float(eps_step),
            max_iter=int(max_iter),
            targeted=False,
            num_random_init=0 if copies == 1 else 1,
            verbose=False,
        )
        backdoor = PoisoningAttackBackdoor(stamp)
        originals = x_np[chosen]
        for _ in range(copies):
            stamped, _ = backdoor.poison(pgd.generate(originals), target_label, broadcast=True)
            poisons.append(np.clip(np.asarray(stamped, dtype=np.float32).reshape(originals.shape), 0.0, 1.0))
    x_np[chosen] = poisons[0]
    x_out = np.concatenate([x_np, *poisons[1:]])
    y_out = torch.cat([split.y.clone(), torch.full((count * (copies - 1),), tgt, dtype=split.y.dtype)])
    logger.debug(
        "clean_label_poison: %s of %s target-class images, %s poisons each", count, candidates.size, copies
    )
    return TensorSplit(x=torch.from_numpy(x_out), y=y_out)
