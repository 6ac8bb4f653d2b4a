"""FDA³: federated defense against adversarial attacks (the math, no Flower).

Song et al., "FDA³: Federated Defense Against Adversarial Attacks for
Cloud-Based IIoT Applications" (IEEE TII 2021).  Devices keep a buffer of
natural examples the model classifies with high confidence, turn it into
adversarial examples with the attack schemes the cloud assigned them (by
transfer from the initial model), and send the cloud the **gradients** of

    α · CE(f(x_nat), y) + (1 − α) · CE(f(x_adv), y)

on one batch (Algorithm 1).  The cloud averages the gradients and applies an
Adam step to the server model (Algorithm 2; :mod:`fedsec.aggregation`).

Pairs are stored as one tensor of shape ``(N, 2, C, H, W)`` (natural, then
adversarial), so that :func:`fedsec.training.train` with :class:`MixedLoss` is
also the local adversarial-training baseline (``X+AdvTrain``) — no second loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fedsec.attacks.evasion import generate
from fedsec.data import TensorSplit
from fedsec.device import model_device
from fedsec.training import predict_logits

logger = logging.getLogger(__name__)


#: How a device's buffer labels its naturals (``fda3-buffer-labels``).
BUFFER_LABELS = ("predicted", "verified")


def confident_buffer(
    model: nn.Module,
    data: TensorSplit,
    *,
    threshold: float,
    size: int,
    labels: str = "predicted",
    batch_size: int = 500,
    device: torch.device | None = None,
) -> TensorSplit:
    """Algorithm 1's buffer: up to ``size`` examples the model classifies with confidence ≥ ``threshold``.

    ``labels="predicted"`` is the paper's buffer: confident examples, labelled
    with the model's own predictions (a device needs no ground truth).
    ``labels="verified"`` keeps only examples the model also gets right
    against ``data.y`` (so no confidently wrong prediction becomes a training
    label) and keeps their true labels.

    Examples are taken in data order (the data is already a seeded partition).
    If fewer than ``size`` qualify, the most confident ones fill the buffer (with
    ``verified``, correct ones first) and a warning says so.  The model runs on
    ``device`` (None: where its parameters are); the buffer is a subset of
    ``data``, where ``data`` is.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if labels not in BUFFER_LABELS:
        raise ValueError(f"labels must be one of {', '.join(BUFFER_LABELS)}, got {labels!r}")
    if len(data) == 0:
        raise ValueError("data is empty")
    logits = predict_logits(model, data.x, batch_size=batch_size, device=device).cpu()
    probabilities = torch.softmax(logits, dim=1)
    confidence, predicted = probabilities.max(dim=1)
    verified = labels == "verified"
    correct = predicted == data.y.cpu() if verified else torch.ones_like(predicted, dtype=torch.bool)
    chosen = torch.nonzero(correct & (confidence >= threshold)).flatten()
    if len(chosen) < min(size, len(data)):
        logger.warning(
            "only %s of %s examples reach confidence %.2f; filling the buffer with the most confident",
            len(chosen),
            len(data),
            threshold,
        )
        score = confidence + correct.to(confidence.dtype)  # (verified: correct ones first) by confidence
        chosen = torch.argsort(score, descending=True, stable=True)
    chosen = chosen[:size]
    buffer = data.subset(chosen.numpy())
    if verified:
        return buffer
    return TensorSplit(x=buffer.x, y=predicted[chosen].to(device=buffer.y.device, dtype=buffer.y.dtype))


@dataclass(frozen=True)
class AdversarialPairs:
    """Natural/adversarial pairs: ``x`` is ``(N, 2, C, H, W)``, ``y`` the true labels."""

    x: torch.Tensor
    y: torch.Tensor
    attacks: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def natural(self) -> torch.Tensor:
        return self.x[:, 0]

    @property
    def adversarial(self) -> torch.Tensor:
        return self.x[:, 1]


def make_pairs(
    model: nn.Module,
    buffer: TensorSplit,
    attacks: Sequence[str],
    *,
    num_classes: int,
    seed: int,
    params: Mapping[str, Mapping[str, float | int]] | None = None,
    device: torch.device | None = None,
) -> AdversarialPairs:
    """Adversarial examples of ``buffer`` for every attack, against ``model`` (the initial model).

    ``|attacks|`` attacks give ``|attacks|·N`` pairs; the natural examples are
    repeated to match, as in the paper.  ART runs the model on ``device`` (None:
    where its parameters are); the pairs are where ``buffer`` is.
    """
    if not attacks:
        raise ValueError("attacks must name at least one attack")
    natural, adversarial, labels = [], [], []
    for index, attack in enumerate(attacks):
        adv = generate(
            attack,
            model,
            buffer.x,
            buffer.y,
            num_classes=num_classes,
            params=(params or {}).get(attack),
            seed=seed + index,
            device=device,
        )
        natural.append(buffer.x)
        adversarial.append(adv)
        labels.append(buffer.y)
    x = torch.stack([torch.cat(natural), torch.cat(adversarial)], dim=1)
    return AdversarialPairs(x=x, y=torch.cat(labels), attacks=tuple(attacks))


class MixedLoss:
    """``α·CE(f(x_nat), y) + (1−α)·CE(f(x_adv), y)`` on paired inputs ``(B, 2, C, H, W)``.

    Usable as the ``loss_fn`` of :func:`fedsec.training.train`.
    """

    def __init__(self, *, alpha: float) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 2:
            raise ValueError(f"expected paired inputs of shape (B, 2, C, H, W), got {tuple(x.shape)}")
        natural = functional.cross_entropy(model(x[:, 0]), y)
        adversarial = functional.cross_entropy(model(x[:, 1]), y)
        return self.alpha * natural + (1.0 - self.alpha) * adversarial


def loss_gradients(
    model: nn.Module,
    pairs: AdversarialPairs,
    *,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | None = None,
) -> tuple[list[np.ndarray], float]:
    """Gradients of the mixed loss on one random batch of ``pairs``, in ``state_dict`` order.

    Returns one array per ``state_dict`` entry (so the layout matches the
    model's weights), as numpy arrays on the CPU: the gradient for every
    parameter, and for every buffer (BatchNorm running statistics and step
    counter) the change the batch's two forward passes in train mode made to it
    (:func:`buffer_positions` says which entries those are; the server averages
    them, :func:`apply_buffer_deltas`, since a gradient never moves a buffer).
    The model's own buffers are restored.  Also returns the batch loss.  The
    batch (drawn by the CPU ``generator``) goes to ``device`` (None: where the
    model's parameters are).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = model_device(model) if device is None else torch.device(device)
    order = torch.randperm(len(pairs), generator=generator)[:batch_size]
    was_training = model.training
    before = {name: tensor.detach().clone() for name, tensor in model.named_buffers()}
    model.train()
    model.zero_grad(set_to_none=True)
    loss = MixedLoss(alpha=alpha)(model, pairs.x[order].to(target), pairs.y[order].to(target))
    if not torch.isfinite(loss):
        raise FloatingPointError(f"mixed loss is not finite: {loss.item()}")
    loss.backward()
    model.train(was_training)
    gradients = dict(model.named_parameters())
    arrays = []
    for name, tensor in model.state_dict().items():
        parameter = gradients.get(name)
        if parameter is not None and parameter.grad is not None:
            arrays.append(parameter.grad.detach().to(tensor.dtype).cpu().numpy().copy())
        elif name in before:
            arrays.append((tensor.detach() - before[name]).cpu().numpy().copy())
        else:
            arrays.append(torch.zeros_like(tensor, device="cpu").numpy())
    with torch.no_grad():
        for name, tensor in model.named_buffers():
            tensor.copy_(before[name])
    model.zero_grad(set_to_none=True)
    return arrays, float(loss.item())


def buffer_positions(model: nn.Module) -> tuple[int, ...]:
    """Positions in ``model.state_dict()`` of its buffers (entries that are not parameters)."""
    parameters = {name for name, _ in model.named_parameters()}
    return tuple(i for i, name in enumerate(model.state_dict()) if name not in parameters)


def apply_buffer_deltas(
    current: Sequence[np.ndarray],
    deltas: Sequence[Sequence[np.ndarray]],
    positions: Sequence[int],
    *,
    float_mean: Sequence[np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """The server's new buffers: each buffer plus the devices' mean change to it.

    ``deltas`` holds every device's reply (one array per ``state_dict`` entry);
    ``float_mean``, where given, is the already-averaged reply (e.g. after the
    update guard's scaling) and is used for the floating buffers.  Integer
    buffers (BatchNorm's ``num_batches_tracked``) move by the rounded mean of
    the devices' counts, so they keep counting the forward passes behind the
    averaged statistics.  Returns ``{position: new array}``; nothing is mutated.
    """
    if not deltas:
        raise ValueError("deltas must hold at least one device's reply")
    updated: dict[int, np.ndarray] = {}
    for i in positions:
        base = np.asarray(current[i])
        if np.issubdtype(base.dtype, np.floating):
            change = (
                np.asarray(float_mean[i])
                if float_mean is not None
                else np.mean([np.asarray(d[i], dtype=np.float64) for d in deltas], axis=0)
            )
            updated[i] = (base + change).astype(base.dtype)
        else:
            counts = np.mean([np.asarray(d[i], dtype=np.float64) for d in deltas], axis=0)
            updated[i] = (base + np.rint(counts)).astype(base.dtype)
    return updated
