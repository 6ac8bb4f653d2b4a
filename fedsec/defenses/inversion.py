"""Model-inversion audit data: PDGAN's alternative to a trained generator.

PDGAN (Zhao, Chen, Chen, Xiang and Chen, "Detecting and mitigating poisoning
attacks in federated learning using generative adversarial networks") audits the
participants' models on generated samples; when no generator is trained, class
representatives can instead be reconstructed from the global model itself by
model inversion in the style of Fredrikson, Jha and Ristenpart (2015), "Model
Inversion Attacks that Exploit Confidence Information and Basic
Countermeasures", CCS: start from noise and ascend the model's log-probability of
a class with respect to the input, clamping to the valid pixel range.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from fedsec.data.containers import TensorSplit
from fedsec.device import model_device
from fedsec.numbers import is_int

__all__ = ["invert_classes"]

logger = logging.getLogger(__name__)


def invert_classes(
    model: nn.Module,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    per_class: int,
    steps: int,
    lr: float,
    rng: torch.Generator,
    device: torch.device | None = None,
) -> TensorSplit:
    """Reconstruct ``per_class`` inputs for every class by gradient ascent on ``log softmax``.

    All ``per_class * num_classes`` images start from uniform noise in ``[0, 1]``
    drawn from ``rng``; each of ``steps`` Adam steps on the images minimises
    ``-sum_i log softmax(model(x_i))[c_i]`` and then clamps them to ``[0, 1]``.
    The model runs in eval mode (its mode is restored); gradients are taken with
    respect to the images only (:func:`torch.autograd.grad`), so the model's
    parameters neither change nor accumulate ``.grad``.

    Parameters
    ----------
    model
        A classifier returning ``(B, num_classes)`` logits.
    input_shape
        ``(C, H, W)`` of one input image.
    num_classes
        Number of classes ``K >= 2``.
    per_class
        Images per class, >= 1.
    steps
        Optimisation steps, >= 1.
    lr
        Adam learning rate on the pixels, finite and > 0.
    rng
        Source of the initial noise (a CPU generator: the same noise on every
        device); same state, same images.
    device
        Where the images are optimised (None: where the model's parameters are).

    Returns
    -------
    TensorSplit
        float32 images ``(per_class * K, C, H, W)`` in ``[0, 1]`` on the CPU, class-major
        (``per_class`` images of class 0, then class 1, ...), labelled by the class
        each was inverted for.

    Raises
    ------
    ValueError
        If a parameter is invalid or the model's output width is not ``num_classes``.
    TypeError
        If ``rng`` is not a :class:`torch.Generator`.
    """
    if (
        not isinstance(input_shape, tuple | list)
        or len(input_shape) != 3
        or not all(is_int(d) and d > 0 for d in input_shape)
    ):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not is_int(per_class) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")

    shape = tuple(int(d) for d in input_shape)
    target = model_device(model) if device is None else torch.device(device)
    labels = torch.arange(num_classes, dtype=torch.int64).repeat_interleave(per_class)
    targets = labels.to(target)
    noise = torch.rand((len(targets), *shape), generator=rng, dtype=torch.float32)
    x = noise.to(target).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=float(lr))
    rows = torch.arange(len(targets), device=target)
    was_training = model.training
    model.eval()
    try:
        for step in range(steps):
            logits = model(x)
            if step == 0 and (logits.ndim != 2 or logits.shape[1] != num_classes):
                raise ValueError(
                    f"model output has shape {tuple(logits.shape)}, expected (B, num_classes={num_classes})"
                )
            loss = -torch.log_softmax(logits, dim=1)[rows, targets].sum()
            (grad,) = torch.autograd.grad(loss, [x])
            optimizer.zero_grad(set_to_none=True)
            x.grad = grad
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        logger.debug(
            "inverted %s classes x %s images in %s steps, final loss %s",
            num_classes,
            per_class,
            steps,
            float(loss.detach()),
        )
    finally:
        model.train(was_training)
    return TensorSplit(x=x.detach().cpu().clone(), y=labels)
