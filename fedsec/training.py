"""The one train/evaluate loop every fedsec client uses.

Plain mini-batch training of a logits model on in-memory tensors, evaluation with
per-class counts and predictions, optimizer construction by name, and conversion
between a model's ``state_dict`` and the list of numpy arrays Flower exchanges.

This is the local-update step of FedAvg (McMahan et al., 2017, "Communication-
Efficient Learning of Deep Networks from Decentralized Data").  The loss is a
hook, ``loss_fn(model, x, y) -> scalar``, so adversarial training (FDA³:
``α·CE(nat) + (1-α)·CE(adv)``), stealthy model poisoning and anti-backdoor
learning reuse this loop instead of copying it.  All randomness (the shuffling
order) comes from an explicit :class:`torch.Generator`.

Data may stay on the CPU: every loop moves each batch to its ``device``
argument (``None``: where the model's parameters are, see :mod:`fedsec.device`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from fedsec.device import model_device
from fedsec.numbers import is_int, is_real
from fedsec.registry import Registry

__all__ = [
    "OPTIMIZERS",
    "EvalResult",
    "LossFn",
    "OptimizerFactory",
    "TrainResult",
    "cross_entropy_loss",
    "evaluate",
    "flatten",
    "get_weights",
    "make_optimizer",
    "predict_logits",
    "set_weights",
    "train",
]

logger = logging.getLogger(__name__)

#: A training loss: ``loss_fn(model, x, y) -> scalar tensor`` (it runs the forward pass itself).
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: An optimizer factory: ``factory(params, lr=..., momentum=..., weight_decay=...)``.
OptimizerFactory = Callable[..., torch.optim.Optimizer]


# ---------------------------------------------------------------------------- losses


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model(x)`` (logits) against integer labels ``y``.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits.
    x
        Input batch ``(B, ...)``.
    y
        Integer class labels ``(B,)``.

    Returns
    -------
    torch.Tensor
        Scalar loss (softmax is applied here, not in the model).
    """
    return nn.functional.cross_entropy(model(x), y)


# ---------------------------------------------------------------------------- optimizers


def _sgd(params: ParamsT, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adam(params: ParamsT, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if momentum != 0.0:
        raise ValueError(
            f"momentum is not used by the adam optimizer (it has betas); leave it at 0, got {momentum!r}"
        )
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


#: Optimizers by name: ``"sgd"`` (momentum, weight decay) and ``"adam"`` (weight decay).
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer", {"sgd": _sgd, "adam": _adam})


def make_optimizer(
    name: str, params: ParamsT, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name`` over ``params``.

    Parameters
    ----------
    name
        ``"sgd"`` or ``"adam"`` (a key of :data:`OPTIMIZERS`).
    params
        The parameters (or parameter groups) to optimise, e.g. ``model.parameters()``.
    lr
        Learning rate, finite and > 0.
    momentum
        SGD momentum in ``[0, 1)``; must be 0 for ``"adam"``.
    weight_decay
        L2 weight decay, finite and >= 0.

    Returns
    -------
    torch.optim.Optimizer

    Raises
    ------
    fedsec.errors.UnknownNameError
        If ``name`` is not registered.
    ValueError
        If a hyper-parameter is out of range or ``params`` is empty (the message names it).
    """
    factory = OPTIMIZERS[name]
    if not is_real(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not is_real(momentum) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not is_real(weight_decay) or not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    param_list = list(params)
    if not param_list:
        raise ValueError("params is empty: the optimizer has nothing to optimise")
    return factory(param_list, lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay))


# ---------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    loss
        Mean training loss over the batches of the last epoch that ran (each batch
        weighted by its size, i.e. the mean per-example loss when ``loss_fn`` is a
        batch mean).  If ``max_steps`` cut that epoch short, only its batches that ran.
    num_examples
        Examples per epoch, ``len(x)`` (the FedAvg weight of this client).
    steps
        Optimizer steps taken in total.
    """

    loss: float
    num_examples: int
    steps: int


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    loss_fn: LossFn = cross_entropy_loss,
    max_steps: int | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``(x, y)`` with mini-batch gradient steps.

    Each epoch draws a fresh permutation from ``generator``
    (``torch.randperm(len(x), generator=generator)``) and walks it in batches of
    ``batch_size`` (the last batch may be smaller); each batch does
    ``zero_grad -> loss_fn(model, xb, yb) -> backward -> step``.  The model is put
    in training mode for the loop and its previous mode is restored afterwards.

    Parameters
    ----------
    model
        The network to train (updated in place).
    x, y
        Inputs ``(N, ...)`` and targets ``(N, ...)`` (integer labels ``(N,)`` for the
        default loss; ``loss_fn`` decides what ``y`` means); ``N >= 1``.
    epochs
        Number of passes over the data, >= 1.
    batch_size
        Mini-batch size, >= 1.
    optimizer
        An optimizer over ``model``'s parameters (see :func:`make_optimizer`).
    generator
        Source of the shuffling order; same generator state, same run.
    loss_fn
        ``loss_fn(model, xb, yb) -> scalar tensor``; defaults to :func:`cross_entropy_loss`.
    max_steps
        Stop after this many optimizer steps in total (None: no limit), >= 1.
    device
        Where each batch goes before ``loss_fn`` sees it (None: the device of
        ``model``'s parameters); ``x`` and ``y`` may stay on the CPU.

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it) or ``loss_fn`` does not
        return a scalar.
    TypeError
        If ``x`` or ``y`` is not a tensor or ``generator`` is not a :class:`torch.Generator`.
    FloatingPointError
        If the loss becomes NaN or infinite (the message gives epoch and step);
        the offending step is not applied.
    """
    _check_data(x, y, labels=False)
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if max_steps is not None and (not is_int(max_steps) or max_steps < 1):
        raise ValueError(f"max_steps must be None or an int >= 1, got {max_steps!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")

    target = model_device(model) if device is None else torch.device(device)
    n = len(x)
    steps = 0
    epoch_loss = 0.0
    was_training = model.training
    model.train()
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(n, generator=generator)
            loss_sum = 0.0
            seen = 0
            for start in range(0, n, batch_size):
                if max_steps is not None and steps >= max_steps:
                    break
                idx = order[start : start + batch_size]
                xb, yb = x[idx].to(target), y[idx].to(target)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, xb, yb)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise ValueError("loss_fn must return a scalar tensor")
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"training loss became {value} at epoch {epoch}/{epochs}, step {steps + 1} "
                        f"(batch starting at example {start} of {n})"
                    )
                loss.backward()
                optimizer.step()
                steps += 1
                loss_sum += value * len(idx)
                seen += len(idx)
            if seen:
                epoch_loss = loss_sum / seen
            logger.debug(
                "epoch %s/%s: loss %s over %s examples, %s steps", epoch, epochs, epoch_loss, seen, steps
            )
            if max_steps is not None and steps >= max_steps:
                break
    finally:
        model.train(was_training)
    return TrainResult(loss=epoch_loss, num_examples=n, steps=steps)


# ---------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes
    ----------
    loss
        Mean cross-entropy per example.
    accuracy
        Fraction of examples whose arg-max logit equals the label.
    num_examples
        Number of examples evaluated.
    per_class_correct
        ``int64 (K,)``: correct predictions per true class.
    per_class_total
        ``int64 (K,)``: examples per true class.
    predictions
        ``int64 (N,)``: predicted labels, in input order (for ASR, precision/recall, ...).
    """

    loss: float
    accuracy: float
    num_examples: int
    per_class_correct: np.ndarray
    per_class_total: np.ndarray
    predictions: np.ndarray


def predict_logits(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 256, device: torch.device | None = None
) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode without gradients.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits; its training mode is restored afterwards.
    x
        Inputs ``(N, ...)`` with ``N >= 1``.
    batch_size
        Forward-pass batch size, >= 1.
    device
        Where each batch goes (None: the device of ``model``'s parameters).

    Returns
    -------
    torch.Tensor
        ``(N, K)`` logits, detached, on ``device``.

    Raises
    ------
    ValueError
        If ``x`` is empty or ``batch_size < 1``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or len(x) == 0:
        raise ValueError("x must be a non-empty tensor")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    target = model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = [model(x[start : start + batch_size].to(target)) for start in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs, dim=0)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> EvalResult:
    """Loss, accuracy, per-class counts and predictions of ``model`` on ``(x, y)``.

    Runs in eval mode under ``torch.no_grad()`` and restores the model's previous
    training mode.

    Parameters
    ----------
    model
        A network returning ``(B, num_classes)`` logits.
    x, y
        Inputs ``(N, ...)`` and integer labels ``(N,)`` in ``[0, num_classes)``; ``N >= 1``.
    num_classes
        Number of classes ``K >= 2``.
    batch_size
        Forward-pass batch size, >= 1.
    device
        Where the forward passes run (None: the device of ``model``'s
        parameters); the counts and predictions come back on the CPU.

    Returns
    -------
    EvalResult

    Raises
    ------
    ValueError
        If the data is empty or mismatched, a label is out of range, the model's
        output width is not ``num_classes``, or a parameter is invalid.
    """
    _check_data(x, y, labels=True)
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    labels = y.detach().cpu().to(torch.int64).reshape(-1)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"y holds labels outside [0, {num_classes}): min {int(labels.min())}, max {int(labels.max())}"
        )
    logits = predict_logits(model, x, batch_size=batch_size, device=device).cpu()
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"model output has shape {tuple(logits.shape)}, expected (N, {num_classes}) logits")
    loss = float(nn.functional.cross_entropy(logits.float(), labels, reduction="mean"))
    predictions = logits.argmax(dim=1).numpy().astype(np.int64)
    truth = labels.numpy()
    correct = predictions == truth
    per_class_total = np.bincount(truth, minlength=num_classes).astype(np.int64)
    per_class_correct = np.bincount(truth[correct], minlength=num_classes).astype(np.int64)
    n = len(truth)
    return EvalResult(
        loss=loss,
        accuracy=float(correct.sum()) / n,
        num_examples=n,
        per_class_correct=per_class_correct,
        per_class_total=per_class_total,
        predictions=predictions,
    )


# ---------------------------------------------------------------------------- weights


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Copies of every ``state_dict`` entry of ``model``, in ``state_dict`` order.

    Includes buffers (BatchNorm running mean/var as float32, ``num_batches_tracked``
    as int64), which is what Flower's ``NumPyClient`` exchanges.  Each array keeps
    its tensor's dtype and never shares memory with the model.
    """
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Copy ``weights`` (as from :func:`get_weights`) into ``model`` in place.

    Values are copied into the existing tensors (cast to each tensor's dtype), so
    optimizers holding the parameters stay valid and later changes to ``weights``
    never reach the model.

    Parameters
    ----------
    model
        The network to update.
    weights
        One array per ``state_dict`` entry, in ``state_dict`` order, with matching shapes.

    Raises
    ------
    ValueError
        If the number of arrays or any shape differs (the message names the index
        and the entry and gives expected vs got).
    """
    state = model.state_dict()
    if len(weights) != len(state):
        raise ValueError(
            f"weights has {len(weights)} arrays, expected {len(state)} (one per state_dict entry)"
        )
    arrays = [np.asarray(w) for w in weights]
    for index, ((key, tensor), array) in enumerate(zip(state.items(), arrays, strict=True)):
        if tuple(array.shape) != tuple(tensor.shape):
            raise ValueError(
                f"weights[{index}] ({key}): expected shape {tuple(tensor.shape)}, got {tuple(array.shape)}"
            )
    with torch.no_grad():
        for tensor, array in zip(state.values(), arrays, strict=True):
            tensor.copy_(torch.from_numpy(np.array(array, copy=True)))


def flatten(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate ``weights`` into one float64 1-D vector (for update-vector math).

    Returns an empty float64 array for an empty sequence; the inputs are not modified.
    """
    if len(weights) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(w, dtype=np.float64).reshape(-1) for w in weights])


# ---------------------------------------------------------------------------- helpers


def _check_data(x: torch.Tensor, y: torch.Tensor, *, labels: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if x.ndim < 1 or len(x) == 0:
        raise ValueError("x is empty: need at least one example")
    if labels and y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per example), got shape {tuple(y.shape)}")
    if y.ndim < 1:
        raise ValueError("y must have one entry per example, got a 0-d tensor")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: len(x)={len(x)}, len(y)={len(y)}")
