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
``dipsen``
    DiPSeN (Ibitoye et al., 2021): a two-block CNN with a Gaussian noise layer after
    block 1 (on at inference too) and a SELU + AlphaDropout self-normalizing layer;
    options ``sigma``, ``sensitivity``, ``dropout``, ``test_noise``; see :mod:`fedsec.models.dipsen`.
``dipsen-basic``
    DiPSeN's comparison model: the same blocks, no noise, a ReLU dense layer.
``dipsen-paper``, ``dipsen-paper-basic``
    The same pair in the paper's layout (one dense layer after the two blocks, SELU
    and AlphaDropout in block 2, LeCun uniform init); see :mod:`fedsec.models.dipsen_paper`.

A factory is called as ``factory(input_shape=(C, H, W), num_classes=K, **options)``,
where ``options`` are the factory's own keyword arguments (none for most models).
Use :func:`build_model` to get a deterministically initialised model from a seed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from fedsec.errors import ConfigError
from fedsec.models.cnn import FedAvgCNN, cnn
from fedsec.models.dipsen import BasicCNN, DiPSeN, GaussianNoise
from fedsec.models.dipsen_paper import PaperBasicCNN, PaperDiPSeN
from fedsec.models.lenet import LeNet5, lenet
from fedsec.models.resnet import resnet18
from fedsec.models.shapes import check_model_args
from fedsec.registry import Registry

__all__ = [
    "MODELS",
    "BasicCNN",
    "DiPSeN",
    "FedAvgCNN",
    "GaussianNoise",
    "LeNet5",
    "ModelFactory",
    "PaperBasicCNN",
    "PaperDiPSeN",
    "build_model",
    "cnn",
    "lenet",
    "model_options",
    "resnet18",
]

logger = logging.getLogger(__name__)

#: A model factory: ``factory(input_shape=(C, H, W), num_classes=K, **options) -> nn.Module`` (logits out).
ModelFactory = Callable[..., nn.Module]

#: The model registry; unknown names raise :class:`fedsec.errors.UnknownNameError`.
MODELS: Registry[ModelFactory] = Registry(
    "model",
    {
        "lenet": lenet,
        "cnn": cnn,
        "resnet18": resnet18,
        "dipsen": DiPSeN,
        "dipsen-basic": BasicCNN,
        "dipsen-paper": PaperDiPSeN,
        "dipsen-paper-basic": PaperBasicCNN,
    },
)

_REQUIRED_ARGS = frozenset({"input_shape", "num_classes"})

_MAX_SEED = 2**64 - 1


def model_options(name: str) -> tuple[str, ...]:
    """The option names the registered model ``name`` accepts, in its factory's order.

    Parameters
    ----------
    name
        A key of :data:`MODELS`.

    Returns
    -------
    tuple of str
        The factory's keyword parameters other than ``input_shape`` and
        ``num_classes`` (empty for ``lenet``, ``cnn``, ``resnet18``, ``dipsen-basic``).

    Raises
    ------
    fedsec.errors.UnknownNameError
        If ``name`` is not registered.
    """
    return _factory_options(MODELS[name])


def _factory_options(factory: ModelFactory) -> tuple[str, ...]:
    params = inspect.signature(factory).parameters.values()
    return tuple(
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name not in _REQUIRED_ARGS
    )


def _check_options(name: str, factory: ModelFactory, options: Mapping[str, float] | None) -> dict[str, float]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"options for model {name!r} must be a mapping of option name to value, got {options!r}"
        )
    allowed = _factory_options(factory)
    takes_any = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
    )
    for key in options:
        if not takes_any and key not in allowed:
            choices = f"; model {name!r} options: {', '.join(allowed)}" if allowed else " (it takes none)"
            raise ConfigError(f"model {name!r} takes no option {key!r}{choices}")
    return dict(options)


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    seed: int,
    options: Mapping[str, float] | None = None,
) -> nn.Module:
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
    options
        Model-specific keyword arguments forwarded to the factory, e.g.
        ``{"sigma": 0.2}`` for ``dipsen`` (see :func:`model_options`); ``None`` or
        empty for none.  The mapping is not modified.

    Returns
    -------
    torch.nn.Module
        The freshly initialised model on the CPU, in training mode.

    Raises
    ------
    fedsec.errors.UnknownNameError
        If ``name`` is not registered (the message lists the choices).
    fedsec.errors.ConfigError
        If ``options`` holds a name the model does not take (the message names the
        model, the option and the options it does take).
    ValueError
        If ``input_shape``, ``num_classes``, ``seed`` or an option value is invalid
        (the message names it).
    """
    factory = MODELS[name]
    kwargs = _check_options(name, factory, options)
    check_model_args(input_shape, num_classes)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory(input_shape=shape, num_classes=num_classes, **kwargs)
    logger.debug(
        "built model %s for input %s, %s classes, seed %s, options %s", name, shape, num_classes, seed, kwargs
    )
    return model
