"""Model registry: ``name -> factory`` for every network fedsec trains.

Registered models (all return **logits**; softmax is applied by the loss or at
prediction time, never inside the network):

``lenet``
    LeNet-5 (LeCun et al., 1998), for ``H, W >= 8``; see :mod:`fedsec.models.lenet`.
``cnn``
    The FedAvg MNIST CNN (McMahan et al., 2017), 1,663,370 parameters on
    ``(1, 28, 28)``; see :mod:`fedsec.models.cnn`.
``resnet18``
    torchvision's ResNet-18 (He et al., 2016) with a 3x3 stride-1 stem and no stem
    max-pooling (CIFAR adaptation), never pretrained; see :mod:`fedsec.models.resnet`.

A factory is called as ``factory(input_shape=(C, H, W), num_classes=K)``.  Use
:func:`build_model` to get a deterministically initialised model from a seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from fedsec.models.cnn import FedAvgCNN, cnn
from fedsec.models.lenet import LeNet5, lenet
from fedsec.models.resnet import resnet18
from fedsec.registry import Registry

__all__ = ["MODELS", "FedAvgCNN", "LeNet5", "ModelFactory", "build_model", "cnn", "lenet", "resnet18"]

logger = logging.getLogger(__name__)

#: A model factory: ``factory(input_shape=(C, H, W), num_classes=K) -> nn.Module`` (logits out).
ModelFactory = Callable[..., nn.Module]

#: The model registry; unknown names raise :class:`fedsec.errors.UnknownNameError`.
MODELS: Registry[ModelFactory] = Registry(
    "model",
    {
        "lenet": lenet,
        "cnn": cnn,
        "resnet18": resnet18,
    },
)

_MAX_SEED = 2**64 - 1


def build_model(name: str, *, input_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """Build the registered model ``name`` with initial weights determined by ``seed``.

    The initialisation runs inside :func:`torch.random.fork_rng` after
    ``torch.manual_seed(seed)``, so the same seed gives bit-identical weights and
    torch's global (CPU) RNG state is the same after the call as before it.

    Parameters
    ----------
    name
        A key of :data:`MODELS` (``"lenet"``, ``"cnn"``, ``"resnet18"``, ...).
    input_shape
        ``(C, H, W)`` of one input image: three positive ints.
    num_classes
        Number of classes ``K >= 2``; the model outputs ``(B, K)`` logits.
    seed
        Initialisation seed, an int in ``[0, 2**64)``.

    Returns
    -------
    torch.nn.Module
        The freshly initialised model on the CPU, in training mode.

    Raises
    ------
    fedsec.errors.UnknownNameError
        If ``name`` is not registered (the message lists the choices).
    ValueError
        If ``input_shape``, ``num_classes`` or ``seed`` is invalid (the message names it).
    """
    factory = MODELS[name]
    if (
        not isinstance(input_shape, tuple | list)
        or len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory(input_shape=shape, num_classes=num_classes)
    logger.debug("built model %s for input %s, %s classes, seed %s", name, shape, num_classes, seed)
    return model
