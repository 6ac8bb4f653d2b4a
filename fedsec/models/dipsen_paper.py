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

from fedsec.models.dipsen import NoisyCNN, PlainCNN, _block

__all__ = ["PaperBasicCNN", "PaperDiPSeN", "lecun_uniform_"]


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


class PaperDiPSeN(NoisyCNN):
    """DiPSeN as §VI-B lays it out (Ibitoye et al., 2021); options as :class:`~fedsec.models.dipsen.NoisyCNN`.

    Submodules: ``block1`` (conv 32, ReLU, pool), ``noise``
    (:class:`~fedsec.models.dipsen.GaussianNoise`), ``block2`` (conv 64, SELU,
    pool, AlphaDropout: the self-normalizing block), ``dense`` (the identity:
    no hidden dense layer), ``head`` (``Linear(flat, K)``).
    """

    display_name = "DiPSeN (paper layout)"

    def _stages(
        self, channels: int, flat: int, num_classes: int, dropout: float
    ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
        block1 = nn.Sequential(
            _lecun(nn.Conv2d(channels, 32, kernel_size=3, padding=1)), nn.ReLU(), nn.MaxPool2d(2)
        )
        block2 = nn.Sequential(
            _lecun(nn.Conv2d(32, 64, kernel_size=3, padding=1)),
            nn.SELU(),
            nn.MaxPool2d(2),
            nn.AlphaDropout(dropout),
        )
        return block1, block2, nn.Identity(), _lecun(nn.Linear(flat, num_classes))


class PaperBasicCNN(PlainCNN):
    """The basic CNN in the paper's layout: two ReLU blocks, then one dense layer, ``fc K``.

    ``dense`` is the identity (no hidden dense layer).
    """

    display_name = "the basic CNN (paper layout)"

    def _stages(self, channels: int, flat: int, num_classes: int) -> tuple[nn.Module, ...]:
        block1, block2 = _block(channels, 32), _block(32, 64)
        return block1, block2, nn.Identity(), nn.Linear(flat, num_classes)
