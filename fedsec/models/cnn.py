"""The standard federated-learning CNN for MNIST.

Implements the "CNN" of McMahan, Moore, Ramage, Hampson and Agüera y Arcas (2017),
"Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS (the FedAvg paper):

``conv 32@5x5 -> ReLU -> maxpool 2x2 -> conv 64@5x5 -> ReLU -> maxpool 2x2
-> fc 512 -> ReLU -> fc K``

Both convolutions are 'same'-padded (padding 2), so on ``(1, 28, 28)`` inputs with
10 classes the feature map is 64x7x7 and the network has 1,663,370 parameters
(the paper reports "1,663,370 total parameters").  Other input sizes work too:
the flatten size is ``64 * (H // 4) * (W // 4)``, which needs ``H, W >= 4``.

The network returns **logits**; the softmax is applied by the loss
(``torch.nn.functional.cross_entropy``) or at prediction time.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsec.models.shapes import check_model_args

__all__ = ["FedAvgCNN", "cnn"]

#: Smallest height/width the network accepts (two 2x2 poolings).
MIN_SIZE = 4


class FedAvgCNN(nn.Module):
    """The McMahan et al. (2017) MNIST CNN mapping ``(B, C, H, W)`` to ``(B, K)`` logits.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one input image; ``H`` and ``W`` must be at least 4.
    num_classes
        Number of output classes ``K`` (at least 2).

    Raises
    ------
    ValueError
        If ``input_shape`` is not three positive integers with ``H, W >= 4``, or
        ``num_classes < 2``.
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = check_model_args(
            input_shape, num_classes, min_size=MIN_SIZE, model="the CNN"
        )
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (no softmax) for a batch ``x`` of shape ``(B, C, H, W)``."""
        out: torch.Tensor = self.classifier(self.features(x))
        return out


def cnn(*, input_shape: tuple[int, int, int], num_classes: int) -> FedAvgCNN:
    """Build a :class:`FedAvgCNN` (registry factory; returns logits)."""
    return FedAvgCNN(input_shape=input_shape, num_classes=num_classes)
