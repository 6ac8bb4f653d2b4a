"""Where tensors go: the ``device`` run-config key, resolved to a :class:`torch.device`.

``auto`` is CUDA when this process sees a CUDA device and the CPU otherwise,
``cuda`` insists on one, ``cpu`` never uses one.  Each process resolves the key
once where it builds its parts (a client, the ServerApp, a strategy wrapper) and
passes the device down as an argument; nothing is global.  The conventions:

* models are moved to the device when they are built;
* data stays on the CPU (a partition is small, and simulated clients share a
  GPU), and the loops of :mod:`fedsec.training` move each batch to the device
  (``device=None`` there means: where the model's parameters are);
* weights leave a model as numpy arrays on the CPU (:func:`fedsec.training.get_weights`),
  so what crosses the wire never depends on the device;
* random draws that decide a run (shuffling, latent vectors, initial noise) are
  made on the CPU from seeded CPU generators and then moved, so a seed gives the
  same draws on either device.

The defenses' and aggregators' matrix work (:mod:`fedsec.updates`,
:mod:`fedsec.robust`, :mod:`fedsec.aggregation`) stays on the CPU (numpy, and one
torch CPU copy in :mod:`fedsec.robust`): it is a Gram matrix of at most a few
hundred updates per round, which the CPU computes in milliseconds, about what
copying the update matrix to a GPU would cost; and its decisions (who is
dropped, clustered, clipped) must not change with the machine, which GPU
reductions, ordered differently, cannot promise near ties.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsec.config import DEVICES
from fedsec.errors import ConfigError

__all__ = ["DEVICES", "art_device_type", "model_device", "resolve_device", "rng_devices"]


def resolve_device(name: str) -> torch.device:
    """The :class:`torch.device` the ``device`` key ``name`` means in this process.

    Parameters
    ----------
    name
        ``"auto"`` (CUDA if :func:`torch.cuda.is_available`, else the CPU), ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    torch.device
        ``cpu`` or ``cuda`` (the current CUDA device; in a Ray simulation, the GPU Ray gave the client).

    Raises
    ------
    ConfigError
        For any other value, or for ``"cuda"`` when no CUDA device is visible
        (the message names the key and says what to use instead).
    """
    if name not in DEVICES:
        raise ConfigError(f"config key 'device' must be one of: {', '.join(DEVICES)}, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "auto":
        return torch.device("cpu")
    raise ConfigError(
        "config key 'device' is 'cuda' but no CUDA device is visible to this process "
        "(torch.cuda.is_available() is False); use device=cpu or device=auto. In a simulation, clients "
        "see a GPU only with client-resources-num-gpus > 0"
    )


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s first parameter (or buffer) lives; the CPU for a model without tensors."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose generators :func:`torch.random.fork_rng` must save for ``device``."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def art_device_type(device: torch.device) -> str:
    """ART's ``device_type`` for ``device``: ``"gpu"`` for CUDA, ``"cpu"`` for the CPU.

    Raises
    ------
    ValueError
        For any other device (ART's PyTorch estimators run on those two only).
    """
    if device.type == "cuda":
        return "gpu"
    if device.type == "cpu":
        return "cpu"
    raise ValueError(f"ART runs models on the CPU or on CUDA only, got device {device}")
