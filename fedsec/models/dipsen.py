"""DiPSeN: a differentially private self-normalizing CNN, and its basic counterpart.

Implements the network of Ibitoye, Shafiq and Matrawy, "DiPSeN: Differentially
Private Self-normalizing Neural Networks For Adversarial Robustness in Federated
Learning" (2021).  DiPSeN combines two ideas in one small CNN:

* a **Gaussian noise layer** after the first hidden block, in the style of the
  Gaussian mechanism / PixelDP (Lecuyer et al., 2019): the block's output is
  perturbed by ``N(0, (S_f·σ)²)`` noise, which makes the scoring function
  randomized.  The noise **stays on at inference** (in ``eval()`` mode too) unless
  ``test_noise`` is False.  ``S_f`` is a constant scale, not a bound on block 1's
  sensitivity (nothing bounds that), so the layer carries no (ε, δ) guarantee;
* a **self-normalizing layer** after the second hidden block (Klambauer et al.,
  2017): a dense layer with LeCun normal initialisation, SELU activation and
  AlphaDropout, which keeps activations near zero mean and unit variance.

Architecture (``DiPSeN``)::

    conv 32@3x3 (padding 1) -> ReLU -> maxpool 2x2          hidden block 1
    -> GaussianNoise(σ, S_f)                                 noise layer (always on)
    -> conv 64@3x3 (padding 1) -> ReLU -> maxpool 2x2        hidden block 2
    -> flatten -> fc 128 (LeCun normal) -> SELU -> AlphaDropout(p)   self-normalizing layer
    -> fc K                                                  logits

``BasicCNN`` is the comparison model: the same two blocks without the
noise layer, then ``fc 128 -> ReLU -> fc K`` with PyTorch's default
initialisation and no dropout.  These two keep fedsec's extra ``fc 128`` layer;
the paper's own layout, one dense layer after the two hidden blocks and LeCun
uniform initialisation, is in :mod:`fedsec.models.dipsen_paper`.

Both convolutions keep the spatial size and each pooling halves it (floor), so the
flatten size is ``64 * (H // 4) * (W // 4)``; inputs need ``H, W >= 4``.  On
``(1, 28, 28)`` with 10 classes both networks have 421,642 parameters (the noise
layer has none).  Both return **logits**.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedsec.models.shapes import check_model_args

__all__ = ["BasicCNN", "DiPSeN", "GaussianNoise", "NoisyCNN", "PlainCNN"]

#: Smallest height/width the networks accept (two 2x2 poolings).
MIN_SIZE = 4
#: Width of the dense (self-normalizing / ReLU) layer.
HIDDEN_UNITS = 128


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class GaussianNoise(nn.Module):
    """Add ``N(0, (S_f·σ)²)`` noise to the input, in training **and** evaluation mode.

    This is the noise layer of DiPSeN (Ibitoye et al., 2021), a Gaussian mechanism
    applied to the output of the first hidden block as in PixelDP (Lecuyer et al.,
    2019).  Unlike dropout-style layers it does **not** switch off in ``eval()``:
    the randomized scoring function is what provides the robustness, so every
    forward pass, including at inference and under attack, draws fresh noise.
    The noise comes from torch's global RNG (``torch.randn_like``); seed it to make
    runs repeatable.

    Parameters
    ----------
    sigma
        Noise multiplier ``σ >= 0``.  For an ``(ε, δ)`` Gaussian mechanism with
        ``ε < 1`` one takes ``σ = sqrt(2 ln(1.25/δ)) / ε``.  ``σ = 0`` makes the layer
        the identity.
    sensitivity
        ``S_f > 0``, the paper's "sensitivity" of the first block.  It is a **constant**
        that scales the noise (standard deviation ``S_f·σ``), not a bound on how much
        one input can change block 1's output: nothing clips or bounds that output
        (ReLU activations are unbounded), so the Gaussian-mechanism reading of ``σ``
        as an (ε, δ) guarantee does not hold for the layer.
    at_inference
        If True (the paper), the noise is also drawn in ``eval()`` mode; if False the
        layer is the identity in ``eval()`` mode (noise during training only).

    Raises
    ------
    ValueError
        If ``sigma`` is negative or ``sensitivity`` is not positive (the message
        names the parameter).
    """

    def __init__(self, *, sigma: float, sensitivity: float = 1.0, at_inference: bool = True) -> None:
        super().__init__()
        if not isinstance(at_inference, bool):
            raise ValueError(f"at_inference must be a bool, got {at_inference!r}")
        sigma = _check_real("sigma", sigma)
        sensitivity = _check_real("sensitivity", sensitivity)
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}")
        if sensitivity <= 0:
            raise ValueError(f"sensitivity must be > 0, got {sensitivity!r}")
        self.sigma = sigma
        self.sensitivity = sensitivity
        self.at_inference = at_inference

    @property
    def std(self) -> float:
        """The noise standard deviation ``S_f·σ``."""
        return self.sensitivity * self.sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + S_f·σ·z`` with fresh ``z ~ N(0, I)`` (a new tensor; ``x`` is untouched).

        ``x`` itself when ``σ = 0``, or in ``eval()`` mode with ``at_inference`` False.
        """
        if self.sigma == 0.0 or not (self.training or self.at_inference):
            return x
        return x + torch.randn_like(x) * self.std

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, sensitivity={self.sensitivity}, at_inference={self.at_inference}"


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    """``conv out@3x3 (padding 1) -> ReLU -> maxpool 2x2``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def _check_dropout(dropout: object) -> float:
    """An AlphaDropout rate in ``[0, 1)``."""
    rate = _check_real("dropout", dropout)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return rate


def _flat_size(height: int, width: int) -> int:
    return 64 * (height // 4) * (width // 4)


class NoisyCNN(nn.Module):
    """The shape both DiPSeN layouts share: ``block1 -> noise -> block2 -> flatten -> dense -> head``.

    Checks the options, builds the :class:`GaussianNoise` layer and asks the
    subclass for its four stages (:meth:`_stages`, in construction order, so a
    seed gives the same initial weights as before the split); ``dense`` may be
    ``nn.Identity()``.  Maps ``(B, C, H, W)`` images to ``(B, K)`` logits.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one input image; ``H, W >= 4``.
    num_classes
        Number of output classes ``K >= 2``.
    sigma
        Noise multiplier ``σ >= 0`` of the noise layer (0 disables the noise).
    sensitivity
        The constant ``S_f > 0``; the noise std is ``S_f·σ``.
    dropout
        AlphaDropout rate ``p`` in ``[0, 1)`` of the self-normalizing part.
    test_noise
        Keep the noise on in ``eval()`` mode (the paper) or only in training.

    Raises
    ------
    ValueError
        If any parameter is invalid (the message names it).
    """

    #: The model's name in error messages.
    display_name = "DiPSeN"

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        sigma: float = 0.1,
        sensitivity: float = 1.0,
        dropout: float = 0.05,
        test_noise: bool = True,
    ) -> None:
        super().__init__()
        channels, height, width = check_model_args(
            input_shape, num_classes, min_size=MIN_SIZE, model=self.display_name
        )
        rate = _check_dropout(dropout)
        stages = self._stages(channels, _flat_size(height, width), num_classes, rate)
        self.block1 = stages[0]
        self.noise = GaussianNoise(sigma=sigma, sensitivity=sensitivity, at_inference=test_noise)
        self.block2, self.dense, self.head = stages[1:]

    def _stages(
        self, channels: int, flat: int, num_classes: int, dropout: float
    ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
        """``(block1, block2, dense, head)``, built in that order."""
        raise NotImplementedError

    @property
    def sigma(self) -> float:
        """The noise multiplier ``σ`` of the noise layer."""
        return self.noise.sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (no softmax) for ``x`` of shape ``(B, C, H, W)``; noisy in every mode."""
        h = self.block2(self.noise(self.block1(x)))
        out: torch.Tensor = self.head(self.dense(torch.flatten(h, 1)))
        return out


class DiPSeN(NoisyCNN):
    """DiPSeN (Ibitoye et al., 2021) with fedsec's extra dense layer (options: :class:`NoisyCNN`).

    Submodules: ``block1`` (conv 32), ``noise`` (:class:`GaussianNoise`, on in
    train and eval mode), ``block2`` (conv 64), ``dense`` (the self-normalizing
    layer: ``Linear(flat, 128)`` with LeCun normal weights ``N(0, 1/fan_in)`` and
    zero bias, SELU, AlphaDropout), ``head`` (``Linear(128, K)``).
    """

    def _stages(
        self, channels: int, flat: int, num_classes: int, dropout: float
    ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
        block1 = _block(channels, 32)
        block2 = _block(32, 64)
        linear = nn.Linear(flat, HIDDEN_UNITS)
        nn.init.normal_(linear.weight, mean=0.0, std=math.sqrt(1.0 / flat))  # LeCun normal
        nn.init.zeros_(linear.bias)
        dense = nn.Sequential(linear, nn.SELU(), nn.AlphaDropout(dropout))
        return block1, block2, dense, nn.Linear(HIDDEN_UNITS, num_classes)


class PlainCNN(nn.Module):
    """The basic CNNs' shape: ``block1 -> block2 -> flatten -> dense -> head``, no noise, no options.

    The subclass builds the four stages (:meth:`_stages`, in construction
    order); ``dense`` may be ``nn.Identity()``.  Maps ``(B, C, H, W)`` images to
    ``(B, K)`` logits.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one input image; ``H, W >= 4``.
    num_classes
        Number of output classes ``K >= 2``.

    Raises
    ------
    ValueError
        If ``input_shape`` or ``num_classes`` is invalid (the message names it).
    """

    #: The model's name in error messages.
    display_name = "the basic CNN"

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = check_model_args(
            input_shape, num_classes, min_size=MIN_SIZE, model=self.display_name
        )
        self.block1, self.block2, self.dense, self.head = self._stages(
            channels, _flat_size(height, width), num_classes
        )

    def _stages(self, channels: int, flat: int, num_classes: int) -> tuple[nn.Module, ...]:
        """``(block1, block2, dense, head)``, built in that order."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (no softmax) for ``x`` of shape ``(B, C, H, W)``."""
        h = self.block2(self.block1(x))
        out: torch.Tensor = self.head(self.dense(torch.flatten(h, 1)))
        return out


class BasicCNN(PlainCNN):
    """The basic CNN DiPSeN is compared with (Ibitoye et al., 2021): no noise, ReLU dense layer.

    Submodules: ``block1`` (conv 32), ``block2`` (conv 64), ``dense``
    (``Linear(flat, 128)`` with PyTorch's default init, ReLU), ``head``
    (``Linear(128, K)``).
    """

    def _stages(self, channels: int, flat: int, num_classes: int) -> tuple[nn.Module, ...]:
        block1, block2 = _block(channels, 32), _block(32, 64)
        dense = nn.Sequential(nn.Linear(flat, HIDDEN_UNITS), nn.ReLU())
        return block1, block2, dense, nn.Linear(HIDDEN_UNITS, num_classes)
