"""Self-attention distillation (SAD) for classifiers.

Implements the attention maps and the distillation loss of Hou, Ma, Liu and Loy
(2019), "Learning Lightweight Lane Detection CNNs by Self Attention
Distillation", ICCV, in the classification form the layered defense uses
(its Eqs. 10–12):

* attention map of a block output ``A ∈ R^{C×H×W}``:
  ``G²_sum(A) = Σ_c A_c²`` (an ``H×W`` map), optionally bilinearly resized, then
  a spatial softmax ``Ψ`` over its ``H·W`` positions;
* distillation loss over successive blocks ``m, m+1``:
  ``Σ_m mean_batch ||Ψ(A_m) − Ψ(A_{m+1})||²₂`` where the deeper map is the
  (detached) target, resized to block ``m``'s ``H×W`` before the softmax;
* training loss ``CE(f(x), y) + δ·L_distill``.

Block outputs are captured with forward hooks (:class:`ActivationRecorder`);
training goes through :func:`fedsec.training.train` with
:class:`AttentionDistillationLoss` as its ``loss_fn``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.hooks import RemovableHandle

from fedsec.numbers import is_int, is_real
from fedsec.training import train

__all__ = [
    "ActivationRecorder",
    "AttentionDistillationLoss",
    "attention_layers",
    "attention_map",
    "distill",
    "distillation_loss",
]

logger = logging.getLogger(__name__)

_RESNET_BLOCKS = ("layer1", "layer2", "layer3", "layer4")


def attention_map(activation: torch.Tensor, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Spatial-softmax attention map ``Ψ(G²_sum(A))`` of a block output.

    Parameters
    ----------
    activation
        ``(B, C, H, W)`` block output; not modified (gradients flow through it).
    size
        Output ``(H', W')``.  If given and different from ``(H, W)``, the ``(B, 1, H, W)``
        map ``Σ_c A_c²`` is resized with ``functional.interpolate(mode="bilinear",
        align_corners=False)`` before the softmax.  ``None`` keeps ``(H, W)``.

    Returns
    -------
    torch.Tensor
        ``(B, H'·W')`` rows summing to 1 (positions flattened row-major).

    Raises
    ------
    ValueError
        If ``activation`` is not 4-D or ``size`` is not two positive ints.
    """
    if not isinstance(activation, torch.Tensor) or activation.ndim != 4:
        shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
        raise ValueError(f"activation must be a (B, C, H, W) tensor, got {shape}")
    energy = activation.pow(2).sum(dim=1)  # (B, H, W)
    if size is not None:
        if (
            not isinstance(size, tuple | list)
            or len(size) != 2
            or not all(is_int(s) and s >= 1 for s in size)
        ):
            raise ValueError(f"size must be None or two ints >= 1, got {size!r}")
        target = (int(size[0]), int(size[1]))
        if target != tuple(energy.shape[-2:]):
            energy = functional.interpolate(
                energy.unsqueeze(1), size=target, mode="bilinear", align_corners=False
            ).squeeze(1)
    return torch.softmax(energy.flatten(start_dim=1), dim=1)


def distillation_loss(activations: Sequence[torch.Tensor]) -> torch.Tensor:
    """Self-attention distillation loss over successive block outputs.

    For each pair ``m, m+1`` (shallow to deep) with ``A_m`` of size ``H_m×W_m``::

        source = attention_map(A_m)                               # (B, H_m·W_m)
        target = attention_map(A_{m+1}.detach(), size=(H_m, W_m))  # no gradient
        term_m = mean_b Σ_j (source[b, j] − target[b, j])²

    and the loss is ``Σ_m term_m``: the squared Euclidean norm over the ``H_m·W_m``
    positions (a sum, not a mean), averaged over the batch, summed over pairs.
    Gradients reach only the shallower activation of each pair.

    Parameters
    ----------
    activations
        At least two ``(B, C_m, H_m, W_m)`` tensors with the same ``B``, in block order.

    Returns
    -------
    torch.Tensor
        Scalar loss, >= 0.

    Raises
    ------
    ValueError
        If fewer than two activations are given, one is not 4-D, or batch sizes differ.
    """
    if len(activations) < 2:
        raise ValueError(f"activations must hold at least 2 block outputs, got {len(activations)}")
    for index, act in enumerate(activations):
        if not isinstance(act, torch.Tensor) or act.ndim != 4:
            shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
            raise ValueError(f"activations[{index}] must be a (B, C, H, W) tensor, got {shape}")
        if act.shape[0] != activations[0].shape[0]:
            raise ValueError(
                f"activations[{index}] has batch size {act.shape[0]}, expected {activations[0].shape[0]}"
            )
    total = activations[0].new_zeros(())
    for shallow, deep in itertools.pairwise(activations):
        height, width = int(shallow.shape[-2]), int(shallow.shape[-1])
        source = attention_map(shallow)
        target = attention_map(deep.detach(), size=(height, width))
        total = total + (source - target).pow(2).sum(dim=1).mean()
    return total


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are ``model``'s distillation "blocks", shallow to deep.

    Parameters
    ----------
    model
        A network.  If it has modules ``layer1`` … ``layer4`` (torchvision ResNet),
        those four are the blocks; otherwise every :class:`torch.nn.Conv2d` in
        ``model.modules()`` order.

    Returns
    -------
    list of torch.nn.Module

    Raises
    ------
    ValueError
        If fewer than two blocks are found.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    blocks = [getattr(model, name, None) for name in _RESNET_BLOCKS]
    if all(isinstance(block, nn.Module) for block in blocks):
        return [block for block in blocks if block is not None]
    convs: list[nn.Module] = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if len(convs) < 2:
        raise ValueError(
            f"model must have layer1..layer4 or at least 2 Conv2d layers for attention "
            f"distillation, found {len(convs)} Conv2d"
        )
    return convs


class ActivationRecorder:
    """Records the outputs of ``layers`` during forward passes via forward hooks.

    Hooks are registered on construction (and again on ``__enter__`` after
    :meth:`close`) and removed by :meth:`close` / ``__exit__``.  Each layer keeps one
    slot; when a layer fires whose slot is already filled, a new forward pass has
    begun and every slot is cleared first.  So each layer must run at most once per
    forward pass.

    Parameters
    ----------
    layers
        The modules to watch (at least one), e.g. from :func:`attention_layers`.

    Raises
    ------
    ValueError
        If ``layers`` is empty or holds something that is not a module.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        layer_list = list(layers)
        if not layer_list:
            raise ValueError("layers must hold at least one module")
        for index, layer in enumerate(layer_list):
            if not isinstance(layer, nn.Module):
                raise ValueError(f"layers[{index}] must be a torch.nn.Module, got {type(layer).__name__}")
        self.layers: tuple[nn.Module, ...] = tuple(layer_list)
        self._slots: list[torch.Tensor | None] = [None] * len(layer_list)
        self._handles: list[RemovableHandle] = []
        self.open()

    @property
    def activations(self) -> list[torch.Tensor]:
        """Outputs recorded in the current forward pass, in ``layers`` order."""
        return [slot for slot in self._slots if slot is not None]

    @property
    def active(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def clear(self) -> None:
        """Forget the recorded outputs."""
        self._slots = [None] * len(self.layers)

    def open(self) -> None:
        """Register the forward hooks (no-op if already registered)."""
        if self._handles:
            return
        self._handles = [
            layer.register_forward_hook(self._make_hook(index)) for index, layer in enumerate(self.layers)
        ]

    def close(self) -> None:
        """Remove the hooks and forget the recorded outputs (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def _make_hook(self, index: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {index} ({type(module).__name__}) returned {type(output).__name__}, "
                    "expected a tensor"
                )
            if self._slots[index] is not None:
                self.clear()
            self._slots[index] = output

        return hook

    def __enter__(self) -> ActivationRecorder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AttentionDistillationLoss:
    """``CE(model(x), y) + δ·distillation_loss(block outputs)``, a ``loss_fn`` for ``train``.

    Owns an :class:`ActivationRecorder` on the block layers; call :meth:`close` (or
    use it as a context manager) to remove the hooks when done.

    Parameters
    ----------
    layers
        The block modules, shallow to deep (at least 2), or the model itself, in
        which case :func:`attention_layers` picks them.
    delta
        Weight ``δ`` of the distillation term, finite and >= 0.

    Raises
    ------
    ValueError
        If ``delta`` is invalid or fewer than two layers are given.
    """

    def __init__(self, *, layers: Sequence[nn.Module] | nn.Module, delta: float) -> None:
        if not is_real(delta) or not math.isfinite(delta) or delta < 0:
            raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
        blocks = attention_layers(layers) if isinstance(layers, nn.Module) else list(layers)
        if len(blocks) < 2:
            raise ValueError(f"layers must hold at least 2 modules, got {len(blocks)}")
        self.delta = float(delta)
        self.recorder = ActivationRecorder(blocks)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward ``x`` once and return the combined scalar loss.

        Raises
        ------
        RuntimeError
            If the hooks were removed or a block did not run in this forward pass.
        """
        if not self.recorder.active:
            raise RuntimeError("AttentionDistillationLoss is closed: its hooks were removed")
        self.recorder.clear()
        logits = model(x)
        activations = self.recorder.activations
        self.recorder.clear()
        if len(activations) != len(self.recorder.layers):
            raise RuntimeError(
                f"recorded {len(activations)} of {len(self.recorder.layers)} block outputs: "
                "are the layers part of this model?"
            )
        ce = functional.cross_entropy(logits, y)
        return ce + self.delta * distillation_loss(activations)

    def close(self) -> None:
        """Remove the forward hooks (idempotent)."""
        self.recorder.close()

    def __enter__(self) -> AttentionDistillationLoss:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def distill(
    model: nn.Module,
    data_x: torch.Tensor,
    data_y: torch.Tensor,
    *,
    delta: float,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    device: torch.device | None = None,
) -> float:
    """Train ``model`` in place with :class:`AttentionDistillationLoss` and remove the hooks.

    Parameters
    ----------
    model
        The network; its blocks come from :func:`attention_layers`.
    data_x, data_y
        Inputs ``(N, C, H, W)`` and integer labels ``(N,)``; not modified.
    delta
        Distillation weight ``δ``, finite and >= 0.
    epochs, batch_size, optimizer, generator, device
        As for :func:`fedsec.training.train` (``device``: where the batches go;
        None: where the model's parameters are).

    Returns
    -------
    float
        The last epoch's mean training loss (:attr:`fedsec.training.TrainResult.loss`).

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    with AttentionDistillationLoss(layers=attention_layers(model), delta=delta) as loss_fn:
        result = train(
            model,
            data_x,
            data_y,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            generator=generator,
            loss_fn=loss_fn,
            device=device,
        )
    logger.debug("attention distillation: loss %.4f after %s epochs (delta %s)", result.loss, epochs, delta)
    return result.loss
