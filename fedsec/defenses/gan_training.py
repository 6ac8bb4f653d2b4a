"""PDGAN's server-side GAN: training it against the global model, the audit warm-up, the audit set.

Step 1–2 of Algorithm 1 of Zhao, Chen, Chen, Xiang and Chen, "Detecting and
mitigating poisoning attacks in federated learning using generative adversarial
networks" (PDGAN): the generator is trained against a ``K + 1``-class
discriminator initialised from the global model (:func:`train_gan`, a
semi-supervised GAN: real auxiliary samples are classified into their ``K``
classes, generated ones as "fake", index ``K``), the audit starts once the GAN
has trained ``d_iter`` iterations (:func:`first_audit_round`), and
:func:`audit_set` draws the unlabelled audit images.  Scoring the clients on them
is :mod:`fedsec.defenses.audit`.  No Flower imports.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from fedsec.data.containers import TensorSplit
from fedsec.device import model_device
from fedsec.models.gan import ImageGenerator
from fedsec.numbers import is_int, is_real

__all__ = ["GanStats", "audit_set", "class_balance_loss", "first_audit_round", "train_gan"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- GAN training


@dataclass(frozen=True)
class GanStats:
    """Outcome of :func:`train_gan`.

    Attributes
    ----------
    d_loss
        Discriminator loss of the last step: ``CE(D(x_real), y_real) + CE(D(G(z)), fake)``.
    g_loss
        Generator loss of the last step: mean ``-log(1 - p_fake(G(z)))``, plus the
        weighted :func:`class_balance_loss` when it is on.
    steps
        Number of alternating (discriminator, generator) steps taken.
    class_entropy
        Entropy (nats) of the discriminator's mean real-class distribution over
        the last generated batch; ``log K`` when the batch covers the ``K``
        classes evenly, 0 when it is all one class.
    """

    d_loss: float
    g_loss: float
    steps: int
    class_entropy: float = math.nan


def _not_fake_loss(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean ``-log(1 - p_fake)`` = ``logsumexp(all logits) - logsumexp(real-class logits)``."""
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits[:, :num_classes], dim=1)).mean()


def class_balance_loss(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CatGAN's information-maximisation term on the real-class logits of a generated batch.

    With ``p_i = softmax(logits_i[:K])`` and ``p̄`` their batch mean, returns
    ``mean_i H(p_i) − H(p̄) + log K``: zero exactly when every sample is
    classified with certainty and the batch covers the ``K`` classes evenly,
    positive otherwise (Springenberg, "Unsupervised and semi-supervised learning
    with categorical generative adversarial networks", 2016; the same term
    drives DAFL's data-free generator).  Minimising it makes the generator
    produce confident samples of *every* class the discriminator knows, not
    only of the classes in the auxiliary set.
    """
    log_p = torch.log_softmax(logits[:, :num_classes], dim=1)
    per_sample = -(log_p.exp() * log_p).sum(dim=1).mean()
    return per_sample - _marginal_entropy(logits, num_classes) + math.log(num_classes)


def _marginal_entropy(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Entropy of the batch-mean softmax over the ``num_classes`` real-class logits."""
    marginal = torch.softmax(logits[:, :num_classes], dim=1).mean(dim=0)
    return -(marginal * torch.log(marginal.clamp_min(1e-12))).sum()


def train_gan(
    generator: ImageGenerator,
    discriminator: nn.Module,
    auxiliary: TensorSplit,
    *,
    num_classes: int,
    steps: int,
    batch_size: int,
    lr: float = 2e-4,
    class_balance: float = 0.0,
    rng: torch.Generator,
    device: torch.device | None = None,
) -> GanStats:
    """Train ``generator`` and ``discriminator`` in place as a semi-supervised GAN.

    Each step draws a batch of ``min(batch_size, N)`` distinct auxiliary samples and
    latent vectors from ``rng``, then

    * discriminator step: minimise ``CE(D(x), y) + CE(D(G(z).detach()), K)``;
    * generator step (fresh ``z``): minimise ``-log(1 - p_fake(G(z)))``, i.e.
      ``logsumexp`` over all ``K + 1`` logits minus ``logsumexp`` over the ``K``
      real-class logits, which pushes generated samples into the real classes;
      plus ``class_balance`` × :func:`class_balance_loss`, which spreads them
      over all ``K`` classes (the auxiliary set may hold only a few of them).

    Both networks use Adam with betas ``(0.5, 0.999)``.  Their training modes are
    restored afterwards and no gradients are left on their parameters.

    Parameters
    ----------
    generator
        The generator; its ``output_shape`` must equal the auxiliary images' shape.
    discriminator
        A ``K + 1``-output network (see :func:`fedsec.models.gan.discriminator_from`).
    auxiliary
        The server's small labelled set (labels in ``[0, num_classes)``, ``N >= 1``); not modified.
    num_classes
        Number of real classes ``K >= 2``; ``K`` is the fake index.
    steps
        Number of alternating steps, >= 1.
    batch_size
        Real (and generated) samples per step, >= 1.
    lr
        Adam learning rate of both networks, finite and > 0.
    class_balance
        Weight of :func:`class_balance_loss` in the generator loss, finite and
        >= 0; 0 is the plain semi-supervised GAN.
    rng
        Source of batch order and latent vectors (a CPU generator: the draws are the
        same on every device); same state, same run.
    device
        Where both networks train (None: where the generator's parameters are);
        the batches and latent vectors are moved there, the networks are not.

    Returns
    -------
    GanStats

    Raises
    ------
    ValueError
        If a parameter is invalid or the shapes disagree (the message names it).
    TypeError
        If ``rng`` is not a :class:`torch.Generator`.
    FloatingPointError
        If a loss becomes NaN or infinite (the message gives the step).
    """
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not is_real(lr) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not is_real(class_balance) or not math.isfinite(class_balance) or class_balance < 0:
        raise ValueError(f"class_balance must be a finite number >= 0, got {class_balance!r}")
    if not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
    n = len(auxiliary)
    if n < 1:
        raise ValueError("auxiliary is empty: need at least one labelled sample")
    if tuple(auxiliary.x.shape[1:]) != generator.output_shape:
        raise ValueError(
            f"auxiliary images have shape {tuple(auxiliary.x.shape[1:])}, "
            f"generator output_shape is {generator.output_shape}"
        )
    if int(auxiliary.y.min()) < 0 or int(auxiliary.y.max()) >= num_classes:
        raise ValueError(f"auxiliary labels must lie in [0, num_classes={num_classes})")

    target = model_device(generator) if device is None else torch.device(device)
    b = min(int(batch_size), n)
    fake_index = torch.full((b,), num_classes, dtype=torch.int64, device=target)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=float(lr), betas=(0.5, 0.999))
    g_opt = torch.optim.Adam(generator.parameters(), lr=float(lr), betas=(0.5, 0.999))
    modes = (generator.training, discriminator.training)
    generator.train()
    discriminator.train()
    d_value = g_value = entropy = math.nan
    try:
        for step in range(1, steps + 1):
            idx = torch.randperm(n, generator=rng)[:b]
            x_real, y_real = auxiliary.x[idx].to(target), auxiliary.y[idx].to(target)
            z = torch.randn(b, generator.latent_dim, generator=rng).to(target)
            z_gen = torch.randn(b, generator.latent_dim, generator=rng).to(target)

            d_opt.zero_grad(set_to_none=True)
            real_logits = discriminator(x_real)
            if real_logits.ndim != 2 or real_logits.shape[1] != num_classes + 1:
                raise ValueError(
                    f"discriminator output has shape {tuple(real_logits.shape)}, "
                    f"expected (B, num_classes + 1 = {num_classes + 1})"
                )
            fake_logits = discriminator(generator(z).detach())
            d_loss = nn.functional.cross_entropy(real_logits, y_real) + nn.functional.cross_entropy(
                fake_logits, fake_index
            )
            d_value = float(d_loss.detach())
            if not math.isfinite(d_value):
                raise FloatingPointError(f"discriminator loss became {d_value} at step {step}/{steps}")
            d_loss.backward()
            d_opt.step()

            g_opt.zero_grad(set_to_none=True)
            gen_logits = discriminator(generator(z_gen))
            g_loss = _not_fake_loss(gen_logits, num_classes)
            if class_balance > 0:
                g_loss = g_loss + float(class_balance) * class_balance_loss(gen_logits, num_classes)
            entropy = float(_marginal_entropy(gen_logits.detach(), num_classes))
            g_value = float(g_loss.detach())
            if not math.isfinite(g_value):
                raise FloatingPointError(f"generator loss became {g_value} at step {step}/{steps}")
            g_loss.backward()
            g_opt.step()
            logger.debug("GAN step %s/%s: d_loss %s, g_loss %s", step, steps, d_value, g_value)
    finally:
        d_opt.zero_grad(set_to_none=True)
        g_opt.zero_grad(set_to_none=True)
        generator.train(modes[0])
        discriminator.train(modes[1])
    return GanStats(d_loss=d_value, g_loss=g_value, steps=steps, class_entropy=entropy)


def first_audit_round(d_iter: int, steps_per_round: int) -> int:
    """The first round whose audit runs after at least ``d_iter`` GAN iterations.

    The server trains the GAN ``steps_per_round`` iterations every round, before
    that round's audit, so after round ``r`` it has trained ``r · steps_per_round``;
    the paper's "audit after ``d_iter`` iterations" is round
    ``max(1, ceil(d_iter / steps_per_round))`` (e.g. ``d_iter = 600`` at 100 steps a
    round: round 6).

    Raises
    ------
    ValueError
        If ``d_iter`` is not an int >= 0 or ``steps_per_round`` not an int >= 1.
    """
    if not is_int(d_iter) or d_iter < 0:
        raise ValueError(f"d_iter must be an int >= 0, got {d_iter!r}")
    if not is_int(steps_per_round) or steps_per_round < 1:
        raise ValueError(f"steps_per_round must be an int >= 1, got {steps_per_round!r}")
    return max(1, -(-int(d_iter) // int(steps_per_round)))


def audit_set(generator: ImageGenerator, n: int, *, rng: torch.Generator) -> torch.Tensor:
    """Generate ``n`` unlabelled audit images ``(n, C, H, W)`` in ``[0, 1]``.

    See :meth:`~fedsec.models.gan.ImageGenerator.sample`.
    """
    return generator.sample(n, generator=rng)
