"""ResNet-18 adapted to small images.

Implements ResNet-18 of He, Zhang, Ren and Sun (2016), "Deep Residual Learning
for Image Recognition", CVPR, using ``torchvision.models.resnet18(weights=None)``
(no pretrained weights are ever loaded) with the usual CIFAR adaptation:

* the 7x7 stride-2 stem convolution is replaced by a 3x3, stride-1, padding-1
  convolution with ``C`` input channels (1 for MNIST-like data, 3 for CIFAR-10),
  initialised like torchvision's own convolutions (Kaiming normal, fan-out);
* the stem max-pooling is replaced by ``nn.Identity``.

The final adaptive average pooling makes any ``H, W >= 1`` work.  The network
contains BatchNorm layers, so its ``state_dict`` (and ``fedsec.training.get_weights``)
includes running statistics and ``num_batches_tracked`` buffers.

The network returns **logits**; the softmax is applied by the loss
(``torch.nn.functional.cross_entropy``) or at prediction time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from fedsec.models.shapes import check_model_args

if TYPE_CHECKING:
    from torchvision.models import ResNet

__all__ = ["resnet18"]


def resnet18(*, input_shape: tuple[int, int, int], num_classes: int) -> ResNet:
    """Build a randomly initialised small-input ResNet-18 (registry factory; returns logits).

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one input image; only ``C`` shapes the network.
    num_classes
        Number of output classes ``K`` (at least 2).

    Returns
    -------
    torchvision.models.ResNet
        The adapted network mapping ``(B, C, H, W)`` to ``(B, K)`` logits.

    Raises
    ------
    ValueError
        If ``input_shape`` is not three positive integers or ``num_classes < 2``.
    """
    from torchvision.models import resnet18 as torchvision_resnet18  # ~165 MB: only where a ResNet is built

    check_model_args(input_shape, num_classes, model="ResNet-18")
    model = torchvision_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
