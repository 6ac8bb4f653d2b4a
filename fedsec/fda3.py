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


def confident_buffer(
    model: nn.Module,
    data: TensorSplit,
    *,
    threshold: float,
    size: int,
    batch_size: int = 500,
    device: torch.device | None = None,
) -> TensorSplit:
    """Algorithm 1's buffer: up to ``size`` examples the model gets right with confidence ≥ ``threshold``.

    Examples are taken in data order (the data is already a seeded partition).
    If fewer than ``size`` qualify, the most confident correct ones fill the
    buffer and a warning says so; if none is correct, the most confident ones.
    The model runs on ``device`` (None: where its parameters are); the buffer is
    a subset of ``data``, where ``data`` is.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if len(data) == 0:
        raise ValueError("data is empty")
    logits = predict_logits(model, data.x, batch_size=batch_size, device=device).cpu()
    probabilities = torch.softmax(logits, dim=1)
    confidence, predicted = probabilities.max(dim=1)
    correct = predicted == data.y.cpu()
    chosen = torch.nonzero(correct & (confidence >= threshold)).flatten()
    if len(chosen) < min(size, len(data)):
        logger.warning(
            "only %s of %s examples reach confidence %.2f; filling the buffer with the most confident",
            len(chosen),
            len(data),
            threshold,
        )
        score = confidence + correct.to(confidence.dtype)  # correct ones first, then by confidence
        chosen = torch.argsort(score, descending=True)
    return data.subset(chosen[:size].numpy())


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
    model's weights), as numpy arrays on the CPU; buffers such as BatchNorm
    statistics get zeros.  Also returns the batch loss.  The batch (drawn by the
    CPU ``generator``) goes to ``device`` (None: where the model's parameters are).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = model_device(model) if device is None else torch.device(device)
    order = torch.randperm(len(pairs), generator=generator)[:batch_size]
    was_training = model.training
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
        else:
            arrays.append(torch.zeros_like(tensor, device="cpu").numpy())
    model.zero_grad(set_to_none=True)
    return arrays, float(loss.item())
