"""The FDA³ paper's comparison models, trained the way the paper describes (Song et al., Figs. 2 and 4).

* ``None`` — the initial (clean pre-trained) model;
* ``X+AdvTrain`` — one device assigned attack X retrains the initial model
  locally on its own natural/adversarial pairs for X only;
* ``ALL+AdvTrain`` — one device retrains locally on pairs for all five attacks
  (five times the pairs);
* ``FL+AdvTrain`` — FDA³'s global model (measured by the run itself).

Local retraining uses the same loss (:class:`fedsec.fda3.MixedLoss`), optimizer
(Adam with the server's learning rate and betas), batch size and number of steps
(one per federated round) as FDA³, through :func:`fedsec.training.train`, so
the only difference from ``FL+AdvTrain`` is that one device trains alone.  The
devices' data and pairs come from the same partitions and caches as in the run.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from fedsec.attacks.monitor import AttackMonitor
from fedsec.attacks.params import display_name
from fedsec.data import TensorSplit
from fedsec.fda3 import AdversarialPairs, MixedLoss
from fedsec.training import evaluate, train

logger = logging.getLogger(__name__)

PairsOf = Callable[[int, tuple[str, ...]], AdversarialPairs]


def local_adversarial_training(
    initial: nn.Module,
    pairs: AdversarialPairs,
    *,
    alpha: float,
    steps: int,
    batch_size: int,
    lr: float,
    betas: tuple[float, float],
    generator: torch.Generator,
) -> nn.Module:
    """A copy of ``initial`` trained alone on ``pairs`` for ``steps`` Adam steps of the mixed loss."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    model = copy.deepcopy(initial)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    batch = min(batch_size, len(pairs))
    epochs = -(-steps * batch // len(pairs))  # enough epochs to take `steps` steps
    train(
        model,
        pairs.x,
        pairs.y,
        epochs=max(1, epochs),
        batch_size=batch,
        optimizer=optimizer,
        generator=generator,
        loss_fn=MixedLoss(alpha=alpha),
        max_steps=steps,
    )
    return model


def baseline_table(
    *,
    initial: nn.Module,
    final: nn.Module,
    monitor: AttackMonitor,
    attacks: Sequence[str],
    pairs_of: PairsOf,
    sets: Mapping[str, TensorSplit],
    num_classes: int,
    alpha: float,
    steps: int,
    batch_size: int,
    lr: float,
    betas: tuple[float, float],
    seed: int,
) -> dict[str, dict[str, float]]:
    """Rows ``None``, ``X+AdvTrain`` …, ``ALL+AdvTrain``, ``FL+AdvTrain``; columns = the test sets."""

    def scores(model: nn.Module) -> dict[str, float]:
        return {name: evaluate(model, s.x, s.y, num_classes=num_classes).accuracy for name, s in sets.items()}

    def trained(pairs: AdversarialPairs, offset: int) -> nn.Module:
        return local_adversarial_training(
            initial,
            pairs,
            alpha=alpha,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            betas=betas,
            generator=torch.Generator().manual_seed(seed + offset),
        )

    table = {"None": scores(initial)}
    for index, attack in enumerate(attacks):
        devices = monitor.devices_for(attack, 1)
        if not devices:
            logger.warning("no device is assigned %s; skipping %s+AdvTrain", attack, display_name(attack))
            continue
        logger.info("baseline %s+AdvTrain on device %s", display_name(attack), devices[0])
        table[f"{display_name(attack)}+AdvTrain"] = scores(trained(pairs_of(devices[0], (attack,)), index))
    first = monitor.partitions[0]
    logger.info("baseline ALL+AdvTrain on device %s", first)
    table["ALL+AdvTrain"] = scores(trained(pairs_of(first, tuple(attacks)), len(attacks)))
    table["FL+AdvTrain"] = scores(final)
    return table
