"""DP-SGD: per-sample gradient clipping and Gaussian noise (Abadi et al., 2016), DiPSeN's Alg. 1.

DiPSeN (Ibitoye, Shafiq and Matrawy, "DiPSeN: Differentially Private
Self-normalizing Neural Networks For Adversarial Robustness in Federated
Learning", 2021) writes its noise in Alg. 1 as DP-SGD's gradient noise:

    g̃ = (1/B) · ( Σ_i g_i / max(1, ‖g_i‖₂ / C)  +  N(0, σ² C² I) )

for a batch of ``B`` samples, per-sample gradients ``g_i`` (over all parameters
jointly), clip norm ``C`` and noise multiplier ``σ``.  Its network instead adds
noise to an activation (the noise layer); this module offers the gradient form
as a client option so both can be compared.  Per-sample gradients come from
``torch.func`` (``vmap`` over ``grad``); the noise from an explicit
``torch.Generator``.  The privacy accounting (ε for a δ) is Flower's RDP
accountant, called from :mod:`clients.privacy` (this package imports no Flower).
Pure torch; the model is trained in place, the caller's tensors are not modified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

__all__ = ["clip_and_noise", "dp_sgd_train", "per_sample_gradients", "steps_per_epoch"]


def _check_nonnegative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def per_sample_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each sample's cross-entropy gradient, ``{name: (B, *shape)}``, and each sample's loss ``(B,)``.

    Only parameters with ``requires_grad`` are differentiated.  Random layers
    (DiPSeN's noise, AlphaDropout in training mode) draw independently per sample
    (``vmap(randomness="different")``) from torch's global generator.
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss_of_one(trainable: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**trainable, **frozen}, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    gradients, losses = vmap(grad_and_value(loss_of_one), in_dims=(None, 0, 0), randomness="different")(
        params, x, y
    )
    return gradients, losses


def clip_and_noise(
    gradients: Mapping[str, torch.Tensor],
    *,
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """DP-SGD's noisy mean gradient from per-sample gradients ``{name: (B, *shape)}``.

    Each sample's gradient (all parameters together) is scaled to L2 norm at
    most ``clip``; the clipped gradients are summed, ``N(0, (σ·C)²)`` noise is
    added to every coordinate of the sum, and the result divided by ``B``.
    The inputs are not modified.

    Parameters
    ----------
    gradients
        Per-sample gradients, every tensor with the same leading batch size ``B >= 1``.
    clip
        ``C > 0``, the per-sample L2 bound.
    noise_multiplier
        ``σ >= 0``; the noise std on the summed gradient is ``σ·C``.
    generator
        Source of the noise (a CPU generator; the noise is moved to each tensor's device).

    Raises
    ------
    ValueError
        If ``gradients`` is empty or its batch sizes differ, ``clip <= 0`` or ``noise_multiplier < 0``.
    """
    if not gradients:
        raise ValueError("gradients must hold at least one parameter's per-sample gradients")
    if _check_nonnegative("clip", clip) == 0:
        raise ValueError(f"clip must be > 0, got {clip!r}")
    sigma = _check_nonnegative("noise_multiplier", noise_multiplier)
    sizes = {g.shape[0] for g in gradients.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every per-sample gradient needs the same batch size >= 1, got {sorted(sizes)}")
    batch = sizes.pop()
    squared = sum(g.flatten(1).pow(2).sum(dim=1) for g in gradients.values())
    norms = torch.as_tensor(squared).sqrt()
    factors = torch.clamp(clip / (norms + 1e-12), max=1.0)
    noisy: dict[str, torch.Tensor] = {}
    for name, g in gradients.items():
        total = torch.einsum("b,b...->...", factors.to(g.dtype), g)
        noise = torch.randn(total.shape, generator=generator, dtype=total.dtype)
        noisy[name] = (total + noise.to(total.device) * (sigma * clip)) / batch
    return noisy


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Batches in one pass over ``num_samples`` shuffled samples (the last one may be smaller)."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
    return math.ceil(num_samples / batch_size)


def dp_sgd_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    clip: float,
    noise_multiplier: float,
    device: torch.device | None = None,
) -> float:
    """Train ``model`` in place with DP-SGD for ``epochs`` shuffled passes; return the last epoch's mean loss.

    Every batch's gradient is :func:`clip_and_noise` of its per-sample
    gradients, written to the parameters' ``.grad`` before ``optimizer.step()``
    (so momentum and weight decay act on the private gradient, as in Opacus).
    ``generator`` draws both the shuffles and the noise.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must be non-empty and equally long, got {len(x)} and {len(y)}")
    device = next(model.parameters()).device if device is None else torch.device(device)
    model.train()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    last = math.nan
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            xb, yb = x[index].to(device), y[index].to(device)
            gradients, losses = per_sample_gradients(model, xb, yb)
            noisy = clip_and_noise(
                gradients, clip=clip, noise_multiplier=noise_multiplier, generator=generator
            )
            optimizer.zero_grad(set_to_none=True)
            for name, p in trainable.items():
                p.grad = noisy[name].to(p.dtype)
            optimizer.step()
            total += float(losses.sum())
            count += len(index)
        last = total / count
    return last
