"""The stealth side of multi-party targeted model poisoning: Eq. 4, the malicious step, knowledge.

Implements Chen et al., "Towards Multi-Party Targeted Model Poisoning Attacks
against Federated Learning Systems" (High-Confidence Computing 2021), on top of
Bhagoji et al., "Analyzing Federated Learning through an Adversarial Lens"
(ICML 2019):

* :class:`StealthObjective` — Eq. 4, ``λ·F(D_tar) + F(D_m) + p·(1 − cos(Δ, Δ_benign))``,
  a ``loss_fn`` for :func:`fedsec.training.train` (optionally divided by ``1 + λ``, which
  keeps its minimiser and makes the SGD step size independent of λ);
* :func:`stealth_direction` — the malicious step of Bhagoji et al.'s alternating
  minimisation (fedsec's default reading of Eq. 4, boosted by λ afterwards);
* :func:`known_clients` — which benign clients a limited-knowledge colluder sees in a
  round (the paper: 3 random normal nodes, drawn anew every round).

Nothing here talks to Flower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedsec.attacks.poisoning import _vector
from fedsec.data.containers import TensorSplit
from fedsec.numbers import is_int, is_real

__all__ = [
    "KNOWLEDGE_DRAWS",
    "StealthObjective",
    "flat_gradient",
    "known_clients",
    "remove_conflict",
    "stealth_direction",
]

#: How a limited-knowledge colluder picks the benign clients it knows (see :func:`known_clients`).
KNOWLEDGE_DRAWS = ("first", "random")
#: Seed-derivation key of the limited-knowledge draw (distinct from partition and round keys).
KNOWLEDGE_STREAM = 0x1C0


# ---------------------------------------------------------------------------- stealth objective


class StealthObjective:
    """Chen et al.'s stealthy targeted-poisoning loss (Eq. 4), a ``loss_fn`` for training.

    ``loss(model, xb, yb) = scale * (CE(model(xb), yb) + lam * CE(model(x_t), y_t)
    + penalty * (1 - cos(Δw, Δ_benign)))``: ``(xb, yb)`` a batch of the attacker's
    own benign-labelled data ``D_m``, ``(x_t, y_t)`` the targeted samples ``D_tar``
    (relabelled to the adversary's target), ``Δw = flat(params) - flat(global_params)``
    over ``model.parameters()`` (buffers such as BatchNorm statistics are excluded, they
    are not trained), and ``Δ_benign`` the attacker's estimate of a benign update flattened
    over the same parameters.  The cosine term is differentiable w.r.t. the parameters.
    It is taken as ``penalty`` (cosine 0) with no gradient when ``Δw`` or ``Δ_benign`` is
    zero, as at the first step from the global model; it is left out altogether when
    ``benign_update`` is None or zero.

    Parameters
    ----------
    targeted
        The adversary's objective set (see :func:`fedsec.data.poisoning.targeted_subset`).
        May be empty only if ``lam == 0``.
    lam
        Weight of the targeted term, finite and >= 0.
    penalty
        Weight ``p`` of the cosine term, finite and >= 0.
    global_params
        The global model's parameters aligned with ``list(model.parameters())``
        (e.g. ``[p.detach().clone() for p in model.parameters()]`` before training);
        copied.
    benign_update
        Flat benign update over the same parameters (length = total parameter count),
        or None.
    targeted_batch
        At most this many targeted samples per step, an int >= 1; when the set is
        larger, a random subset is drawn each step from ``generator``.
    generator
        Source of the targeted subsets; required when ``len(targeted) > targeted_batch``.
    scale
        Factor on the whole loss, finite and > 0.  It does not move the minimiser;
        ``1 / (1 + lam)`` (:meth:`normalised_scale`) makes the size of an SGD step
        independent of ``lam``: with the clients' learning rate 0.05 and momentum
        0.9, two local epochs of the unscaled loss at ``lam = 16`` moved the ``cnn``
        by 2.3·10⁴ in L2, against 3.0 for the benign update (MNIST-5k).

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """

    def __init__(
        self,
        *,
        targeted: TensorSplit,
        lam: float,
        penalty: float,
        global_params: Sequence[torch.Tensor],
        benign_update: np.ndarray | None = None,
        targeted_batch: int = 64,
        generator: torch.Generator | None = None,
        scale: float = 1.0,
    ) -> None:
        if not isinstance(targeted, TensorSplit):
            raise ValueError(f"targeted must be a TensorSplit, got {type(targeted).__name__}")
        if not is_real(lam) or not math.isfinite(float(lam)) or float(lam) < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        if not is_real(penalty) or not math.isfinite(float(penalty)) or float(penalty) < 0:
            raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
        if not is_real(scale) or not math.isfinite(float(scale)) or float(scale) <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        if float(lam) > 0 and len(targeted) == 0:
            raise ValueError("targeted is empty but lam > 0: nothing to poison towards")
        if not is_int(targeted_batch) or targeted_batch < 1:
            raise ValueError(f"targeted_batch must be an int >= 1, got {targeted_batch!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator is None and len(targeted) > targeted_batch and float(lam) > 0:
            raise ValueError(
                f"generator is required: targeted holds {len(targeted)} samples, more than "
                f"targeted_batch={targeted_batch}, so a random subset is drawn each step"
            )
        params = list(global_params)
        if not params or not all(isinstance(p, torch.Tensor) for p in params):
            raise ValueError("global_params must be a non-empty sequence of tensors")
        self.targeted = targeted
        self.lam = float(lam)
        self.penalty = float(penalty)
        self.scale = float(scale)
        self.targeted_batch = int(targeted_batch)
        self.generator = generator
        self.global_params: tuple[torch.Tensor, ...] = tuple(p.detach().clone() for p in params)
        total = sum(int(p.numel()) for p in self.global_params)
        self.benign_update: torch.Tensor | None = None
        if benign_update is not None:
            vec = _vector(benign_update, "benign_update", size=total)
            if float(np.linalg.norm(vec)) > 0.0:
                self.benign_update = torch.from_numpy(vec)

    def _delta(self, model: nn.Module) -> torch.Tensor:
        params = list(model.parameters())
        if len(params) != len(self.global_params):
            raise ValueError(
                f"model has {len(params)} parameter tensors but global_params has {len(self.global_params)}"
            )
        parts = []
        for index, (p, g) in enumerate(zip(params, self.global_params, strict=True)):
            if p.shape != g.shape:
                raise ValueError(
                    f"parameter {index} has shape {tuple(p.shape)} but global_params[{index}] "
                    f"has {tuple(g.shape)}"
                )
            parts.append((p - g.to(p.device)).reshape(-1).to(torch.float64))
        return torch.cat(parts)

    def cosine(self, model: nn.Module) -> torch.Tensor:
        """Differentiable ``cos(Δw, Δ_benign)`` in float64 (0 if either has zero norm)."""
        delta = self._delta(model)
        if self.benign_update is None:
            return delta.sum() * 0.0
        benign = self.benign_update.to(delta.device)
        norm = torch.linalg.vector_norm(delta)
        if float(norm.detach()) == 0.0:
            return delta.sum() * 0.0  # undefined direction: cosine 0, no gradient
        return torch.dot(delta, benign) / (norm * torch.linalg.vector_norm(benign))

    def _targeted_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.targeted)
        if n <= self.targeted_batch:
            return self.targeted.x.to(device), self.targeted.y.to(device)
        assert self.generator is not None  # checked in __init__
        idx = torch.randperm(n, generator=self.generator)[: self.targeted_batch]
        return self.targeted.x[idx].to(device), self.targeted.y[idx].to(device)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss on the benign batch ``(x, y)`` plus the targeted and stealth terms, × ``scale``."""
        loss = nn.functional.cross_entropy(model(x), y)
        if self.lam > 0:
            xt, yt = self._targeted_batch(x.device)
            loss = loss + self.lam * nn.functional.cross_entropy(model(xt), yt)
        if self.penalty > 0 and self.benign_update is not None:
            cos = self.cosine(model)
            loss = loss + (self.penalty * (1.0 - cos)).to(loss.dtype)
        return loss if self.scale == 1.0 else self.scale * loss

    @staticmethod
    def normalised_scale(lam: float) -> float:
        """``1 / (1 + lam)``: the loss becomes a weighted mean of its terms, one SGD step size for every λ."""
        return 1.0 / (1.0 + float(lam))


# ---------------------------------------------------------------------------- stealthy malicious direction


def remove_conflict(gradient: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``gradient`` without its component against ``reference`` (when their dot product is negative).

    A descent step along the result lowers the attacker's loss without, to
    first order, raising the loss whose gradient is ``reference`` (the benign
    data's): the projection of "gradient surgery" (Yu et al., NeurIPS 2020).
    """
    g = _vector(gradient, "gradient")
    r = _vector(reference, "reference", size=g.shape[0])
    dot = float(g @ r)
    norm2 = float(r @ r)
    if dot >= 0.0 or norm2 == 0.0:
        return g.copy()
    return g - (dot / norm2) * r


def flat_gradient(model: nn.Module, loss: torch.Tensor) -> np.ndarray:
    """``∂loss/∂θ`` over ``model.parameters()``, flattened to float64 on the CPU (grads are cleared again)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return np.concatenate(
        [
            (torch.zeros_like(p) if g is None else g).detach().double().cpu().reshape(-1).numpy()
            for p, g in zip(params, grads, strict=True)
        ]
    )


def stealth_direction(
    model: nn.Module,
    *,
    objective: Callable[[nn.Module], torch.Tensor],
    benign_loss: Callable[[nn.Module], torch.Tensor],
    steps: int,
    step_norm: float,
) -> np.ndarray:
    """The malicious step of the alternating minimisation: ``steps`` normalised descent steps.

    From the model's current weights, each step descends ``objective`` (the
    targeted loss plus the stealth penalty) along its gradient with the part
    that conflicts with ``benign_loss``'s gradient removed
    (:func:`remove_conflict`), scaled to length ``step_norm``.  The model is
    moved as it goes and restored at the end; the summed step (flattened over
    ``model.parameters()``) is returned, to be boosted by λ_m.
    """
    if not is_int(steps) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not is_real(step_norm) or not math.isfinite(float(step_norm)) or float(step_norm) < 0:
        raise ValueError(f"step_norm must be a finite number >= 0, got {step_norm!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    total = np.zeros(sum(p.numel() for p in params))
    was_training = model.training
    model.eval()
    try:
        for _ in range(steps):
            g = remove_conflict(
                flat_gradient(model, objective(model)), flat_gradient(model, benign_loss(model))
            )
            norm = float(np.linalg.norm(g))
            if norm == 0.0:
                break
            step = -g / norm * float(step_norm)
            total += step
            with torch.no_grad():
                offset = 0
                for p in params:
                    n = p.numel()
                    p.add_(torch.from_numpy(step[offset : offset + n]).reshape(p.shape).to(p.device, p.dtype))
                    offset += n
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        model.train(was_training)
    return total


# ---------------------------------------------------------------------------- limited knowledge


def known_clients(benign: Sequence[int], k: int, *, draw: str, seed: int, server_round: int) -> list[int]:
    """The ``k`` benign clients a limited-knowledge colluder knows the updates of in ``server_round``.

    ``draw = "random"`` is Chen et al.'s limited knowledge: the attacker knows the
    updates of ``k`` (3 in the paper) normal nodes drawn at random each round.
    The draw comes from a generator seeded by ``(seed, server_round)`` only, so
    every colluder of a run sees the same ``k`` clients without talking to the
    others, and another round draws anew.  ``draw = "first"`` takes the first
    ``k`` of ``benign`` every round (fedsec's earlier, fixed choice).

    Parameters
    ----------
    benign
        The benign client ids, distinct (e.g. the scenario's benign partitions).
    k
        How many are known, an int in ``[1, len(benign)]``.
    draw
        One of :data:`KNOWLEDGE_DRAWS`.
    seed
        The run seed, an int >= 0.
    server_round
        The round, an int >= 0.

    Returns
    -------
    list of int
        ``k`` distinct members of ``benign``, in ascending order.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """
    ids = [int(b) for b in benign]
    if len(set(ids)) != len(ids):
        raise ValueError(f"benign must hold distinct client ids, got {ids}")
    if not is_int(k) or not 1 <= k <= len(ids):
        raise ValueError(f"k must be an int in [1, {len(ids)}] (the benign clients), got {k!r}")
    if draw not in KNOWLEDGE_DRAWS:
        raise ValueError(f"draw must be one of {', '.join(KNOWLEDGE_DRAWS)}, got {draw!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not is_int(server_round) or server_round < 0:
        raise ValueError(f"server_round must be an int >= 0, got {server_round!r}")
    if draw == "first":
        return sorted(ids[:k])
    rng = np.random.default_rng([int(seed), KNOWLEDGE_STREAM, int(server_round)])
    return sorted(int(ids[i]) for i in rng.choice(len(ids), size=k, replace=False))
