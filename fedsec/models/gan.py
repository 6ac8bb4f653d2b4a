"""PDGAN's generator and its discriminator built from the global model.

Implements the GAN of Zhao, Chen, Chen, Xiang and Chen (2020/2022), "Detecting
and mitigating poisoning attacks in federated learning using generative
adversarial networks" (PDGAN), whose server trains a generator on a small
auxiliary set to produce audit data for the participants' models.

* :class:`Generator` (``gan-generator = "fedsec"``) is a small DCGAN-style
  generator (Radford et al., 2016): ``z -> Linear -> (base, H/4, W/4) -> BN ->
  ReLU -> ConvT 4/2/1 -> BN -> ReLU -> ConvT 4/2/1 -> sigmoid``, giving
  ``(C, H, W)`` images in ``[0, 1]`` at the dataset's own size.
* :class:`PaperGenerator` (``gan-generator = "paper"``) is the paper's: four
  4×4 transposed convolutions from ``z ∈ R^100`` (a ``1×1`` map) to ``32×32``
  (``4 -> 8 -> 16 -> 32``, DCGAN's widths ``4b, 2b, b``).  The paper resizes its
  inputs to 32×32; fedsec's classifiers take the dataset's own size, so the
  32×32 output is resized to ``(H, W)`` with bilinear
  :func:`torch.nn.functional.interpolate` (28×28 for MNIST and Fashion-MNIST)
  inside the module: the discriminator, the auxiliary set and the clients'
  models all stay at the dataset's size.
* The discriminator is the global classifier with one extra output, "fake"
  (index ``K``), a semi-supervised ``K + 1``-class GAN discriminator (Salimans et
  al., 2016).  :func:`discriminator_from` builds it from a registry model and
  copies the global model's weights into every shared layer and into the first
  ``K`` rows of the final layer; :func:`refresh_discriminator` repeats that copy
  each round.

The generators are not registry models (they are not classifiers); they have
their own small registry, :data:`GENERATOR_ARCHITECTURES` /
:func:`build_generator`.  The discriminator is a registry model, built through
:func:`fedsec.models.build_model`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import torch
from torch import nn

from fedsec.models import build_model
from fedsec.numbers import is_int

__all__ = [
    "GENERATOR_ARCHITECTURES",
    "Generator",
    "ImageGenerator",
    "PaperGenerator",
    "build_generator",
    "discriminator_from",
    "refresh_discriminator",
]

logger = logging.getLogger(__name__)


class ImageGenerator(nn.Module):
    """Base of the audit generators: latent vectors ``(B, latent_dim)`` to images ``(B, C, H, W)``.

    Subclasses build their layers (seeded by ``seed``) and define :meth:`forward`;
    this class validates the common parameters and draws audit samples.

    Parameters
    ----------
    latent_dim
        Size of the latent vector ``z``, >= 1.
    output_shape
        ``(C, H, W)`` of one generated image (the dataset's image shape).
    seed
        Weight-initialisation seed, an int >= 0.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """

    def __init__(self, *, latent_dim: int, output_shape: tuple[int, int, int], seed: int) -> None:
        super().__init__()
        if not is_int(latent_dim) or latent_dim < 1:
            raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}")
        if (
            not isinstance(output_shape, tuple | list)
            or len(output_shape) != 3
            or not all(is_int(d) and d > 0 for d in output_shape)
        ):
            raise ValueError(f"output_shape must be three positive ints (C, H, W), got {output_shape!r}")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        channels, height, width = (int(d) for d in output_shape)
        self.latent_dim = int(latent_dim)
        self.output_shape: tuple[int, int, int] = (channels, height, width)
        self.seed = int(seed)

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")

    def sample(self, n: int, *, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` images from ``z ~ N(0, I)`` in eval mode without gradients.

        Parameters
        ----------
        n
            Number of images, >= 1.
        generator
            Source of the latent vectors; same generator state, same images.

        Returns
        -------
        torch.Tensor
            ``(n, C, H, W)`` float32 images in ``[0, 1]``, detached.  The module's
            training mode is restored afterwards.

        Raises
        ------
        ValueError
            If ``n`` is not an int >= 1.
        TypeError
            If ``generator`` is not a :class:`torch.Generator`.
        """
        if not is_int(n) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        weight = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=weight.dtype)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                images: torch.Tensor = self(z.to(weight.device))
        finally:
            self.train(was_training)
        return images


class Generator(ImageGenerator):
    """fedsec's DCGAN-style generator: ``z -> Linear -> 2 × ConvT`` to the dataset's ``(C, H, W)``.

    Parameters
    ----------
    latent_dim
        Size of the latent vector ``z``, >= 1.
    output_shape
        ``(C, H, W)`` of one generated image; ``H`` and ``W`` must be divisible by 4.
    base_channels
        Channels of the ``(H/4, W/4)`` map the latent vector is projected to (halved
        by the first up-sampling); an even int >= 2.
    seed
        Weight-initialisation seed, an int >= 0; initialisation runs under
        :func:`torch.random.fork_rng`, so torch's global RNG is left untouched.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """

    def __init__(
        self,
        *,
        latent_dim: int = 100,
        output_shape: tuple[int, int, int],
        base_channels: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__(latent_dim=latent_dim, output_shape=output_shape, seed=seed)
        channels, height, width = self.output_shape
        if height % 4 or width % 4:
            raise ValueError(
                f"output_shape: H and W must be divisible by 4 (two stride-2 up-samplings), "
                f"got {tuple(output_shape)!r}"
            )
        if not is_int(base_channels) or base_channels < 2 or base_channels % 2:
            raise ValueError(f"base_channels must be an even int >= 2, got {base_channels!r}")
        self.base_channels = int(base_channels)
        self._grid = (height // 4, width // 4)
        half = base_channels // 2
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.project = nn.Linear(latent_dim, base_channels * self._grid[0] * self._grid[1])
            self.body = nn.Sequential(
                nn.BatchNorm2d(base_channels),
                nn.ReLU(),
                nn.ConvTranspose2d(base_channels, half, kernel_size=4, stride=2, padding=1),
                nn.BatchNorm2d(half),
                nn.ReLU(),
                nn.ConvTranspose2d(half, channels, kernel_size=4, stride=2, padding=1),
                nn.Sigmoid(),
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latent vectors ``z`` ``(B, latent_dim)`` to images ``(B, C, H, W)`` in ``[0, 1]``."""
        self._check_latent(z)
        h = self.project(z).view(z.shape[0], self.base_channels, *self._grid)
        out: torch.Tensor = self.body(h)
        return out


class PaperGenerator(ImageGenerator):
    """PDGAN's generator: four 4×4 transposed convolutions from ``z`` to ``32×32``, resized to ``(H, W)``.

    ``z (latent_dim, 1, 1) -> ConvT 4/1/0 -> (4b, 4, 4) -> BN -> ReLU -> ConvT 4/2/1
    -> (2b, 8, 8) -> BN -> ReLU -> ConvT 4/2/1 -> (b, 16, 16) -> BN -> ReLU ->
    ConvT 4/2/1 -> (C, 32, 32) -> sigmoid`` (Zhao et al.'s generator, with DCGAN's
    layer widths for ``b = base_channels = 64``), then, when the dataset's images
    are not 32×32, bilinear :func:`torch.nn.functional.interpolate` to ``(H, W)``
    (``align_corners=False``; differentiable, so the generator trains through it).
    The paper resizes MNIST and Fashion-MNIST up to 32×32 instead; resizing the
    generated images down keeps every classifier at the dataset's size.

    Parameters
    ----------
    latent_dim
        Size of the latent vector ``z``, >= 1 (the paper: 100).
    output_shape
        ``(C, H, W)`` of the images the generator returns (the dataset's shape).
    base_channels
        ``b``: channels of the last hidden map; an int >= 1.
    seed
        Weight-initialisation seed, an int >= 0 (torch's global RNG is left untouched).

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """

    #: Side of the images the transposed convolutions produce.
    NATIVE_SIZE = 32

    def __init__(
        self,
        *,
        latent_dim: int = 100,
        output_shape: tuple[int, int, int],
        base_channels: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(latent_dim=latent_dim, output_shape=output_shape, seed=seed)
        if not is_int(base_channels) or base_channels < 1:
            raise ValueError(f"base_channels must be an int >= 1, got {base_channels!r}")
        self.base_channels = int(base_channels)
        widths = (latent_dim, 4 * base_channels, 2 * base_channels, base_channels)
        layers: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
                stride, padding = (1, 0) if i == 0 else (2, 1)
                layers += [
                    nn.ConvTranspose2d(width_in, width_out, 4, stride, padding, bias=False),
                    nn.BatchNorm2d(width_out),
                    nn.ReLU(),
                ]
            layers += [nn.ConvTranspose2d(base_channels, self.output_shape[0], 4, 2, 1), nn.Sigmoid()]
            self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``z`` ``(B, latent_dim)`` to ``(B, C, H, W)`` images in ``[0, 1]`` (made at 32×32, resized)."""
        self._check_latent(z)
        out: torch.Tensor = self.body(z[:, :, None, None])
        size = self.output_shape[1:]
        if tuple(out.shape[2:]) != size:
            out = nn.functional.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


#: Audit generators by ``gan-generator`` name.
GENERATOR_ARCHITECTURES: dict[str, Callable[..., ImageGenerator]] = {
    "fedsec": Generator,
    "paper": PaperGenerator,
}


def build_generator(
    name: str,
    *,
    output_shape: tuple[int, int, int],
    latent_dim: int = 100,
    base_channels: int = 64,
    seed: int = 0,
) -> ImageGenerator:
    """The generator ``name`` (see :data:`GENERATOR_ARCHITECTURES`) for ``output_shape`` images.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the names) or a parameter is invalid.
    """
    if name not in GENERATOR_ARCHITECTURES:
        raise ValueError(
            f"generator architecture must be one of {', '.join(GENERATOR_ARCHITECTURES)}, got {name!r}"
        )
    return GENERATOR_ARCHITECTURES[name](
        latent_dim=latent_dim, output_shape=output_shape, base_channels=base_channels, seed=seed
    )


def discriminator_from(
    global_model: nn.Module,
    *,
    model_name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    seed: int,
) -> nn.Module:
    """Build a ``K + 1``-class discriminator initialised from the ``K``-class ``global_model``.

    The discriminator is ``build_model(model_name, input_shape=input_shape,
    num_classes=num_classes + 1, seed=seed)``; output ``num_classes`` is "fake".
    Every parameter and buffer of ``global_model`` is copied into the tensor of the
    same name; for the final classification layer (the only tensors whose shapes
    differ, ``K`` vs ``K + 1`` rows) the first ``K`` rows are copied and the fake
    row keeps its seeded initialisation.  ``global_model`` is not modified.

    Parameters
    ----------
    global_model
        The current global classifier, built as ``model_name`` with ``num_classes`` outputs.
    model_name
        Registry name of ``global_model``'s architecture (see :data:`fedsec.models.MODELS`).
    input_shape
        ``(C, H, W)`` of one input image.
    num_classes
        Number of real classes ``K >= 2``.
    seed
        Initialisation seed of the discriminator (decides the fake row).

    Returns
    -------
    torch.nn.Module
        The discriminator, on the CPU, in training mode.

    Raises
    ------
    ValueError
        If ``global_model`` does not have ``model_name``'s architecture with
        ``num_classes`` outputs (the message names the mismatching tensor), or an
        argument is invalid.
    """
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    discriminator = build_model(model_name, input_shape=input_shape, num_classes=num_classes + 1, seed=seed)
    try:
        final = _copy_shared(discriminator, global_model)
    except ValueError as err:
        raise ValueError(
            f"{err} (is global_model a {model_name!r} model for input_shape={tuple(input_shape)!r} "
            f"with num_classes={num_classes} outputs?)"
        ) from err
    rows = int(global_model.state_dict()[final[0]].shape[0])
    if rows != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but global_model's final layer {final[0]!r} has {rows} outputs"
        )
    logger.debug("discriminator %s initialised from the global model (final layer %s)", model_name, final)
    return discriminator


def refresh_discriminator(discriminator: nn.Module, global_model: nn.Module) -> None:
    """Copy ``global_model``'s weights into ``discriminator`` in place (the per-round refresh).

    Same copy as :func:`discriminator_from`: all shared tensors, and the first ``K``
    rows of the final layer; the fake row of ``discriminator`` is left as it is.

    Parameters
    ----------
    discriminator
        A ``K + 1``-output discriminator from :func:`discriminator_from` (updated in place).
    global_model
        The ``K``-output global classifier of the same architecture (not modified).

    Raises
    ------
    ValueError
        If the architectures do not match (the message names the tensor).
    """
    _copy_shared(discriminator, global_model)


def _copy_shared(discriminator: nn.Module, global_model: nn.Module) -> tuple[str, ...]:
    """Copy ``global_model`` into ``discriminator``; return the names of the final-layer tensors."""
    source = global_model.state_dict()
    target = discriminator.state_dict()
    if source.keys() != target.keys():
        missing = sorted(set(target) - set(source))
        extra = sorted(set(source) - set(target))
        raise ValueError(
            "global_model does not match the discriminator's architecture: "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    final: list[str] = []
    for key, src in source.items():
        dst = target[key]
        if src.shape == dst.shape:
            continue
        if src.ndim >= 1 and dst.shape[0] == src.shape[0] + 1 and dst.shape[1:] == src.shape[1:]:
            final.append(key)
            continue
        raise ValueError(
            f"global_model does not match the discriminator's architecture: {key!r} has shape "
            f"{tuple(src.shape)}, discriminator {tuple(dst.shape)}"
        )
    modules = {key.rpartition(".")[0] for key in final}
    if len(modules) != 1:
        raise ValueError(
            "global_model does not match the discriminator's architecture: expected exactly one final "
            f"layer with one output fewer, found tensors {final}"
        )
    with torch.no_grad():
        for key, src in source.items():
            dst = target[key]
            if key in final:
                dst[: src.shape[0]].copy_(src)
            else:
                dst.copy_(src)
    return tuple(final)
