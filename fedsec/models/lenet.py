"""LeNet-5 for small grayscale or colour images.

Implements the convolutional network of LeCun, Bottou, Bengio and Haffner (1998),
"Gradient-Based Learning Applied to Document Recognition", Proc. IEEE 86(11), in
its common modern form (ReLU activations and max-pooling instead of scaled tanh
and trainable sub-sampling; a plain linear output layer instead of RBF units):

``conv 6@5x5 (padding 2) -> ReLU -> maxpool 2x2 -> conv 16@5x5 -> ReLU -> maxpool 2x2
-> fc 120 -> ReLU -> fc 84 -> ReLU -> fc K``

The network returns **logits**; the softmax is applied by the loss
(``torch.nn.functional.cross_entropy``) or at prediction time.

Adaptation to input sizes
-------------------------
The first convolution keeps the spatial size (padding 2), so a 28x28 MNIST digit
follows the classic path (28 -> 14 -> 10 -> 5, flatten 16*5*5 = 400, 61,706
parameters for 10 classes).  The second convolution is unpadded whenever the
pooled map is at least 6 pixels along that axis; along an axis where it is
smaller (inputs of 8 to 11 pixels, e.g. scikit-learn's 8x8 digits) it is padded
by 2 so that it keeps the size instead of shrinking the map to nothing.  No
adaptive pooling is used: the flatten size follows from arithmetic, so 8x8
(flatten 16*2*2), 12x12 (16*1*1), 28x28 (16*5*5) and 32x32 (16*6*6) all work.
"""

from __future__ import annotations

import torch
from torch import nn

from fedsec.models.shapes import check_model_args

__all__ = ["LeNet5", "lenet"]

#: Smallest height/width the network accepts.
MIN_SIZE = 8


def _conv2_padding(pooled: int) -> int:
    """Padding of the second convolution along one axis of size ``pooled``."""
    return 0 if pooled >= 6 else 2


def _feature_size(size: int) -> int:
    """Spatial size along one axis after the two conv/pool blocks."""
    pooled = size // 2  # conv1 keeps the size (padding 2); pool halves it
    padding = _conv2_padding(pooled)
    return (pooled + 2 * padding - 4) // 2


class LeNet5(nn.Module):
    """LeNet-5 mapping ``(B, C, H, W)`` images to ``(B, K)`` logits.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one input image; ``H`` and ``W`` must be at least 8.
    num_classes
        Number of output classes ``K`` (at least 2).

    Raises
    ------
    ValueError
        If ``input_shape`` is not three positive integers with ``H, W >= 8``, or
        ``num_classes < 2``.
    """

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = check_model_args(
            input_shape, num_classes, min_size=MIN_SIZE, model="LeNet-5"
        )
        pad_h = _conv2_padding(height // 2)
        pad_w = _conv2_padding(width // 2)
        flat = 16 * _feature_size(height) * _feature_size(width)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=(pad_h, pad_w)),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (no softmax) for a batch ``x`` of shape ``(B, C, H, W)``."""
        out: torch.Tensor = self.classifier(self.features(x))
        return out


def lenet(*, input_shape: tuple[int, int, int], num_classes: int) -> LeNet5:
    """Build a :class:`LeNet5` (registry factory; returns logits)."""
    return LeNet5(input_shape=input_shape, num_classes=num_classes)
