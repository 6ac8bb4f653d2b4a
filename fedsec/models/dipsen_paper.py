"""DiPSeN and its basic CNN in the paper's own layout: one dense layer after the two hidden blocks.

Ibitoye, Shafiq and Matrawy, "DiPSeN: Differentially Private Self-normalizing
Neural Networks For Adversarial Robustness in Federated Learning" (2021):
§VI-B puts a single dense (output) layer after the two hidden blocks, and
§IV-C initialises the self-normalizing network with **LeCun uniform** weights,
``U(−sqrt(3/fan_in), +sqrt(3/fan_in))`` (Keras's ``lecun_uniform``), the
variance ``1/fan_in`` SELU needs.  fedsec's :mod:`fedsec.models.dipsen` keeps an
extra ``fc 128`` self-normalizing dense layer with LeCun *normal* weights
instead; both are registered, side by side.

Architecture (``PaperDiPSeN``, registry name ``dipsen-paper``)::

    conv 32@3x3 (padding 1) -> ReLU -> maxpool 2x2                    hidden block 1
    -> GaussianNoise(σ, S_f)                                          noise layer (on at inference)
    -> conv 64@3x3 (padding 1) -> SELU -> maxpool 2x2 -> AlphaDropout(p)   hidden block 2, self-normalizing
    -> flatten -> fc K                                                the one dense layer (logits)

Every convolution and dense weight is LeCun uniform, every bias zero (the
paper names one initialiser for the network; Keras's default bias is zero).
SELU is increasing, so pooling after it equals pooling before it.

``PaperBasicCNN`` (``dipsen-paper-basic``) is the same without the noise layer,
with ReLU in block 2, no dropout and PyTorch's default initialisation, as
:class:`fedsec.models.dipsen.BasicCNN`.  On ``(1, 28, 28)`` with 10 classes both
have 50,186 parameters.  Both return **logits**.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedsec.models.dipsen import MIN_SIZE, GaussianNoise, _block, _check_real, _flat_size
from fedsec.models.shapes import check_model_args

__all__ = ["PaperBasicCNN", "PaperDiPSeN", "dipsen_paper", "dipsen_paper_basic", "lecun_uniform_"]


def lecun_uniform_(weight: torch.Tensor) -> torch.Tensor:
    """Fill ``weight`` in place from ``U(−sqrt(3/fan_in), sqrt(3/fan_in))`` (LeCun uniform); return it.

    ``fan_in`` is the number of inputs of one output unit: ``in_features`` for a
    dense layer, ``in_channels·kh·kw`` for a convolution.  The variance is
    ``1/fan_in``, as for LeCun normal.
    """
    if weight.ndim < 2:
        raise ValueError(f"weight must have >= 2 dimensions, got shape {tuple(weight.shape)}")
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def _lecun(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    lecun_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class PaperDiPSeN(nn.Module):
    """DiPSeN as §VI-B lays it out (Ibitoye et al., 2021): ``(B, C, H, W)`` images to ``(B, K)`` logits.

    Submodules: ``block1`` (conv 32, ReLU, pool), ``noise``
    (:class:`~fedsec.models.dipsen.GaussianNoise`), ``block2`` (conv 64, SELU,
    pool, AlphaDropout: the self-normalizing block), ``head`` (``Linear(flat, K)``).

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
        AlphaDropout rate ``p`` in ``[0, 1)`` of block 2.
    test_noise
        Keep the noise on in ``eval()`` mode (the paper) or only in training.

    Raises
    ------
    ValueError
        If any parameter is invalid (the message names it).
    """

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
            input_shape, num_classes, min_size=MIN_SIZE, model="DiPSeN (paper layout)"
        )
        dropout = _check_real("dropout", dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.block1 = nn.Sequential(
            _lecun(nn.Conv2d(channels, 32, kernel_size=3, padding=1)), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.noise = GaussianNoise(sigma=sigma, sensitivity=sensitivity, at_inference=test_noise)
        self.block2 = nn.Sequential(
            _lecun(nn.Conv2d(32, 64, kernel_size=3, padding=1)),
            nn.SELU(),
            nn.MaxPool2d(2),
            nn.AlphaDropout(dropout),
        )
        self.head = _lecun(nn.Linear(_flat_size(height, width), num_classes))

    @property
    def sigma(self) -> float:
        """The noise multiplier ``σ`` of the noise layer."""
        return self.noise.sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (no softmax) for ``x`` of shape ``(B, C, H, W)``; noisy in every mode."""
        h = self.block2(self.noise(self.block1(x)))
        out: torch.Tensor = self.head(torch.flatten(h, 1))
        return out


class PaperBasicCNN(nn.Module):
    """The basic CNN in the paper's layout: two ReLU blocks, then one dense layer (``fc K``).

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

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = check_model_args(
            input_shape, num_classes, min_size=MIN_SIZE, model="the basic CNN (paper layout)"
        )
        self.block1 = _block(channels, 32)
        self.block2 = _block(32, 64)
        self.head = nn.Linear(_flat_size(height, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (no softmax) for ``x`` of shape ``(B, C, H, W)``."""
        out: torch.Tensor = self.head(torch.flatten(self.block2(self.block1(x)), 1))
        return out


def dipsen_paper(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    sigma: float = 0.1,
    sensitivity: float = 1.0,
    dropout: float = 0.05,
    test_noise: bool = True,
) -> PaperDiPSeN:
    """Build a :class:`PaperDiPSeN` (registry ``dipsen-paper``; options as ``dipsen``)."""
    return PaperDiPSeN(
        input_shape=input_shape,
        num_classes=num_classes,
        sigma=sigma,
        sensitivity=sensitivity,
        dropout=dropout,
        test_noise=test_noise,
    )


def dipsen_paper_basic(*, input_shape: tuple[int, int, int], num_classes: int) -> PaperBasicCNN:
    """Build a :class:`PaperBasicCNN` (registry ``dipsen-paper-basic``; no options)."""
    return PaperBasicCNN(input_shape=input_shape, num_classes=num_classes)
