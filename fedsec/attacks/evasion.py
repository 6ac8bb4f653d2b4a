"""Evasion attacks on the Adversarial Robustness Toolbox (ART): a registry of attack schemes.

Used by two of the systems fedsec implements:

* FDA³ (Song et al., "FDA³: Federated Defense Against Adversarial Attacks for
  Cloud-Based IIoT Applications"): devices generate adversarial examples with the
  attack schemes the server assigns (FGSM, BIM, JSMA, CW-L2, DeepFool; SimBA is the
  unseen black-box attack) and train on them;
* DiPSeN: robust accuracy under FGSM, BIM and PGD at ε = 0.3, where the model keeps
  its Gaussian noise layer on at inference, so gradients are averaged over several
  forward passes (expectation over transformation, :class:`ExpectationOverTransformation`).

Every attack is ART's own implementation (Nicolae et al., "Adversarial Robustness
Toolbox v1.0.0", 2018) run on an ART :class:`~art.estimators.classification.PyTorchClassifier`
(:func:`art_classifier`): FGSM (Goodfellow et al., 2015), BIM (Kurakin et al., 2017),
PGD (Madry et al., 2018), JSMA (Papernot et al., 2016), CW-L2 (Carlini & Wagner,
2017), DeepFool (Moosavi-Dezfooli et al., 2016) and SimBA (Guo et al., 2019).

:data:`ATTACKS` (in :mod:`fedsec.attacks.specs`, re-exported here) maps each name to an
:class:`AttackSpec` (norm family, black-box flag, paper-style defaults, description);
:func:`generate` runs one of them on a batch of
images in ``[0, 1]``.  ART draws its randomness (PGD's random start, JSMA's random
targets, SimBA's coordinate order) from numpy's and torch's global generators;
:func:`generate` seeds both from its ``seed`` argument and restores their previous
states afterwards, so results are reproducible and no global state leaks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

from fedsec.attacks.harness import ClippedProbabilityNLL, ClippedSoftmax
from fedsec.attacks.specs import ATTACKS, NORMS, AttackRunner, AttackSpec
from fedsec.contexts import frozen_eval, seeded
from fedsec.device import art_device_type, model_device
from fedsec.errors import ConfigError
from fedsec.numbers import is_int, is_real

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackRunner",
    "AttackSpec",
    "ExpectationOverTransformation",
    "art_classifier",
    "generate",
]

logger = logging.getLogger(__name__)


_MAX_SEED = 2**32 - 1  # numpy's legacy global generator takes seeds in [0, 2**32)


# ---------------------------------------------------------------------------- ART glue


class ExpectationOverTransformation(nn.Module):
    """Average the logits of several forward passes of a stochastic model (EOT).

    For models that stay random at inference (DiPSeN's Gaussian noise layer, dropout
    kept on), a single forward pass gives a noisy gradient; the mean over ``samples``
    passes gives the gradient of the expected logits (Athalye et al., 2018,
    "Synthesizing Robust Adversarial Examples").

    Parameters
    ----------
    model
        The network, returning ``(B, K)`` logits.
    samples
        Number of forward passes to average, an int >= 1.

    Raises
    ------
    ValueError
        If ``samples`` is not an int >= 1.
    """

    def __init__(self, model: nn.Module, *, samples: int) -> None:
        super().__init__()
        if not is_int(samples) or samples < 1:
            raise ValueError(f"samples must be an int >= 1, got {samples!r}")
        self.model = model
        self.samples = int(samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``samples`` forward passes of the wrapped model on ``x``."""
        total = self.model(x)
        for _ in range(self.samples - 1):
            total = total + self.model(x)
        return total / self.samples


def art_classifier(
    model: nn.Module,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    probabilities: bool = False,
    device: torch.device | None = None,
    harness: str = "logits",
) -> PyTorchClassifier:
    """Wrap a logits model as an ART ``PyTorchClassifier`` on inputs in ``[0, 1]``.

    Parameters
    ----------
    model
        A network returning ``(B, num_classes)`` logits.  It is wrapped, not copied.
    input_shape
        ``(C, H, W)`` of one input (channels first).
    num_classes
        Number of classes ``K >= 2``.
    probabilities
        If True, the classifier's model is ``softmax(model(x))`` (attacks such as SimBA
        need probability outputs); its loss (cross-entropy on those outputs) is then not
        the model's training loss, so use it only for score-based attacks.
    device
        Where ART runs the model (None: where its parameters are): ART's
        ``device_type`` is ``"gpu"`` for CUDA and ``"cpu"`` for the CPU.  ART moves
        the model there, so the default keeps a model where it is.
    harness
        ``"logits"``: the loss is cross-entropy on the logits (or on the probabilities
        with ``probabilities``); ``"paper"``: the classifier's model is
        :class:`~fedsec.attacks.harness.ClippedSoftmax` and its loss
        :class:`~fedsec.attacks.harness.ClippedProbabilityNLL` (DiPSeN's §VI-E,
        Keras-style; see :mod:`fedsec.attacks.harness`).

    Returns
    -------
    art.estimators.classification.PyTorchClassifier
        With ``clip_values=(0.0, 1.0)``, the device's ``device_type`` and a cross-entropy loss.

    Raises
    ------
    ValueError
        If ``input_shape`` or ``num_classes`` is invalid, or ``device`` is neither the CPU nor CUDA.
    """
    if (
        not isinstance(input_shape, tuple | list)
        or len(input_shape) != 3
        or not all(is_int(d) and d > 0 for d in input_shape)
    ):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    device_type = art_device_type(model_device(model) if device is None else torch.device(device))
    if harness not in ("logits", "paper"):
        raise ValueError(f"harness must be 'logits' or 'paper', got {harness!r}")
    net: nn.Module = nn.Sequential(model, nn.Softmax(dim=1)) if probabilities else model
    loss: nn.Module = nn.CrossEntropyLoss()
    if harness == "paper":
        net, loss = ClippedSoftmax(model), ClippedProbabilityNLL()
    return PyTorchClassifier(
        model=net,
        loss=loss,
        input_shape=tuple(int(d) for d in input_shape),
        nb_classes=int(num_classes),
        clip_values=(0.0, 1.0),
        device_type=device_type,
    )


# ---------------------------------------------------------------------------- generate


def generate(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    num_classes: int,
    params: Mapping[str, float | int] | None = None,
    batch_size: int = 100,
    seed: int = 0,
    eot_samples: int = 1,
    device: torch.device | None = None,
    harness: str = "logits",
) -> torch.Tensor:
    """Adversarial examples of ``x`` against ``model`` with the registered attack ``name``.

    The model is put in eval mode with its parameters frozen while the attack runs;
    afterwards every submodule's training flag, every parameter's ``requires_grad`` and
    its ``.grad`` are restored (ART zeroes gradients).  numpy's and torch's global RNGs
    are seeded from ``seed`` for the call and restored afterwards.

    Parameters
    ----------
    name
        A key of :data:`ATTACKS`.
    model
        A network returning ``(B, num_classes)`` logits, on ``device``.
    x
        Float images ``(N, C, H, W)`` with values in ``[0, 1]``, ``N >= 1``; not modified.
    y
        True integer labels ``(N,)`` or None (the attack then uses the model's predictions
        or, for JSMA, random targets).  Untargeted attacks move away from ``y``; JSMA moves
        towards a random class other than ``y``; DeepFool ignores it.
    num_classes
        Number of classes ``K >= 2``.
    params
        Overrides of the spec's :attr:`AttackSpec.defaults` (ART keyword names).
    batch_size
        Batch size passed to the ART attack (SimBA always uses 1), an int >= 1.
    seed
        Seed of the attack's randomness, an int in ``[0, 2**32)``.
    eot_samples
        If > 1, attack :class:`ExpectationOverTransformation` of the model with this many
        forward passes (for models that are random at inference).
    device
        Where ART runs the model (None: where its parameters are; see :func:`art_classifier`).
    harness
        The loss the attack differentiates: ``"logits"`` or the paper's clipped softmax
        ``"paper"`` (see :func:`art_classifier`); ``params`` are used as given either way
        (:func:`fedsec.attacks.harness.harness_params` gives the paper's).

    Returns
    -------
    torch.Tensor
        float32 adversarial examples of the same shape and device as ``x``, in ``[0, 1]``.

    Raises
    ------
    fedsec.errors.UnknownNameError
        If ``name`` is not registered (the message lists the choices).
    fedsec.errors.ConfigError
        If ``params`` names an unknown parameter or has a bad value (the message names the
        attack and the parameter), or ART rejects the parameter values.
    ValueError
        If ``x``, ``y``, ``num_classes``, ``batch_size``, ``seed`` or ``eot_samples`` is invalid.
    """
    spec = ATTACKS[name]
    merged = _merge_params(spec, params)
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or len(x) == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a non-empty (N, C, H, W) tensor, got {shape}")
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not is_int(seed) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    if not is_int(eot_samples) or eot_samples < 1:
        raise ValueError(f"eot_samples must be an int >= 1, got {eot_samples!r}")

    x_np = x.detach().cpu().numpy().astype(np.float32, copy=True)
    if not np.all(np.isfinite(x_np)) or x_np.min() < 0.0 or x_np.max() > 1.0:
        low, high = float(np.nanmin(x_np)), float(np.nanmax(x_np))
        raise ValueError(f"x must hold finite values in [0, 1], got min {low}, max {high}")
    y_np = _labels(y, n=len(x_np), num_classes=int(num_classes))

    target: nn.Module = (
        model if eot_samples == 1 else ExpectationOverTransformation(model, samples=eot_samples)
    )
    c, h, w = (int(d) for d in x_np.shape[1:])
    run_on = model_device(model) if device is None else torch.device(device)
    start = time.perf_counter()
    with frozen_eval(model), seeded(int(seed), run_on):
        classifier = art_classifier(
            target,
            input_shape=(c, h, w),
            num_classes=int(num_classes),
            probabilities=spec.probabilities,
            device=run_on,
            harness=harness,
        )
        try:
            adv = spec.run(classifier, x_np, y_np, merged, int(batch_size))
        except ConfigError as err:
            raise ConfigError(f"attack {name!r}: {err}") from err
    adv = np.clip(np.asarray(adv, dtype=np.float32).reshape(x_np.shape), 0.0, 1.0)
    logger.debug(
        "attack %s on %s examples took %s s (eot_samples %s)",
        name,
        len(x_np),
        round(time.perf_counter() - start, 4),
        eot_samples,
    )
    return torch.from_numpy(adv).to(x.device)


# ---------------------------------------------------------------------------- helpers


def _merge_params(spec: AttackSpec, params: Mapping[str, float | int] | None) -> Mapping[str, float | int]:
    """The spec's defaults updated with ``params``, each value of its default's type."""
    merged: dict[str, float | int] = dict(spec.defaults)
    for key, value in (params or {}).items():
        if key not in spec.defaults:
            raise ConfigError(
                f"unknown parameter {key!r} for attack {spec.name!r}; "
                f"allowed: {', '.join(sorted(spec.defaults))}"
            )
        default = spec.defaults[key]
        if is_int(default):
            if not is_int(value):
                raise ConfigError(f"parameter {key!r} of attack {spec.name!r} must be an int, got {value!r}")
            merged[key] = int(value)
        else:
            if not is_real(value) or not math.isfinite(float(value)):
                raise ConfigError(
                    f"parameter {key!r} of attack {spec.name!r} must be a finite number, got {value!r}"
                )
            merged[key] = float(value)
    return MappingProxyType(merged)


def _labels(y: torch.Tensor | None, *, n: int, num_classes: int) -> np.ndarray | None:
    """``y`` as an int64 numpy copy after checking shape and range (None stays None)."""
    if y is None:
        return None
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != n:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be None or a 1-D tensor of {n} labels, got {shape}")
    if torch.is_floating_point(y) or torch.is_complex(y) or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer labels, got {y.dtype}")
    labels = y.detach().cpu().numpy().astype(np.int64, copy=True)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"y holds labels outside [0, {num_classes}): min {int(labels.min())}, max {int(labels.max())}"
        )
    return labels
