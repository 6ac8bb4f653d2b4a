"""Clean-label backdoor (Turner et al., "Label-Consistent Backdoor Attacks", 2019).

:func:`clean_label_poison` builds the poisons with the PGD and backdoor parts of ART's
``PoisoningAttackCleanLabelBackdoor`` and a :class:`~fedsec.data.triggers.Trigger`.
Like every data-poisoning transform (see :mod:`fedsec.data.poisoning`), it returns a
new :class:`~fedsec.data.containers.TensorSplit` and never modifies its input;
randomness comes from an explicit ``seed``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from fedsec.contexts import frozen_eval, seeded
from fedsec.data.containers import TensorSplit
from fedsec.data.poisoning import _check_class, _check_seed, _check_split, _labels
from fedsec.data.triggers import Trigger, _check_input_shape, _check_trigger
from fedsec.device import model_device
from fedsec.numbers import is_int, is_real

__all__ = ["clean_label_poison"]

logger = logging.getLogger(__name__)


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
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    tgt = _check_class(target, "target")
    if tgt >= num_classes:
        raise ValueError(f"target must be in [0, {num_classes}), got {tgt}")
    if not is_real(fraction) or not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    for name, val in (("eps", eps), ("eps_step", eps_step)):
        if not is_real(val) or not math.isfinite(float(val)) or float(val) <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
    if not is_int(max_iter) or max_iter < 1:
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not is_int(copies) or copies < 1:
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
    with frozen_eval(model), seeded(rng_seed, model_device(model)):
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
