"""The FDA³ paper's comparison models, trained the way the paper describes (Song et al., Figs. 2 and 4).

* ``None (white-box)`` — the initial (clean pre-trained) model; the test sets
  were made against it, so its row is white-box while every other row is a
  transfer attack;
* ``X+AdvTrain`` — one device assigned attack X retrains the initial model
  locally on its own natural/adversarial pairs for X only;
* ``ALL+AdvTrain`` — one device retrains locally on pairs for all five attacks
  (five times the pairs);
* ``FL+AdvTrain`` — FDA³'s global model (measured by the run itself).

Local retraining uses the same loss (:class:`fedsec.fda3.MixedLoss`), optimizer
(Adam with the server's learning rate and betas) and batch size as FDA³, through
:func:`fedsec.training.train`.  The paper retrains for 50 epochs over the
device's pairs (``epochs``); a model whose epochs take a different number of
steps than the federated run's rounds (``ALL+AdvTrain``: 5 attacks × 100 pairs
at batch 100 is 250 steps, against 50 rounds) is also trained for one step per
round, in a row named ``"<row> (<rounds> steps)"``.  Which device trains each
baseline is drawn from the seed among the devices that qualify.  The devices'
data and pairs come from the same partitions and caches as in the run.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedsec.attacks.monitor import AttackMonitor
from fedsec.attacks.params import display_name
from fedsec.fda3 import AdversarialPairs, MixedLoss
from fedsec.training import train

logger = logging.getLogger(__name__)

PairsOf = Callable[[int, tuple[str, ...]], AdversarialPairs]

#: Row of the initial model: the test sets were made against it (white-box for it alone).
NONE_ROW = "None (white-box)"
FL_ROW = "FL+AdvTrain"
#: Seed-derivation key of the baselines' device draw.
DEVICE_STREAM = 0xFDA3


def epoch_steps(pairs: int, *, epochs: int, batch_size: int) -> int:
    """Adam steps of ``epochs`` passes over ``pairs`` pairs in batches of ``batch_size`` (last one short)."""
    if pairs < 1 or epochs < 1 or batch_size < 1:
        raise ValueError(f"pairs, epochs and batch_size must be >= 1, got {pairs}, {epochs}, {batch_size}")
    return epochs * math.ceil(pairs / min(batch_size, pairs))


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


def baseline_models(
    *,
    initial: nn.Module,
    final: nn.Module,
    monitor: AttackMonitor,
    attacks: Sequence[str],
    pairs_of: PairsOf,
    alpha: float,
    epochs: int,
    rounds: int,
    batch_size: int,
    lr: float,
    betas: tuple[float, float],
    seed: int,
) -> dict[str, nn.Module]:
    """The table's models by row: None, ``X+AdvTrain`` …, ``ALL+AdvTrain``, ``FL+AdvTrain``.

    ``epochs`` passes over a device's pairs (0: ``rounds`` steps, one per
    federated round, instead); where the two schedules differ, both rows.
    ``X+AdvTrain``'s device is drawn from the seed among those assigned X,
    ``ALL+AdvTrain``'s among all devices.
    """
    if epochs < 0 or rounds < 1:
        raise ValueError(f"epochs must be >= 0 and rounds >= 1, got {epochs}, {rounds}")
    rng = np.random.default_rng([seed, DEVICE_STREAM])
    jobs: list[tuple[str, int, tuple[str, ...]]] = []
    for attack in attacks:
        devices = monitor.devices_for(attack, 1)
        if not devices:
            logger.warning("no device is assigned %s; skipping %s+AdvTrain", attack, display_name(attack))
            continue
        jobs.append((f"{display_name(attack)}+AdvTrain", int(rng.choice(devices)), (attack,)))
    jobs.append(("ALL+AdvTrain", int(rng.choice(monitor.partitions)), tuple(attacks)))
    models: dict[str, nn.Module] = {NONE_ROW: initial}
    for offset, (row, device, schemes) in enumerate(jobs):
        pairs = pairs_of(device, schemes)
        steps = epoch_steps(len(pairs), epochs=epochs, batch_size=batch_size) if epochs else rounds
        for name, count in {row: steps, f"{row} ({rounds} steps)": rounds}.items():
            if name != row and count == steps:
                continue  # the two schedules agree: one row
            logger.info("baseline %s on device %s: %s steps", name, device, count)
            models[name] = local_adversarial_training(
                initial,
                pairs,
                alpha=alpha,
                steps=count,
                batch_size=batch_size,
                lr=lr,
                betas=betas,
                generator=torch.Generator().manual_seed(seed + offset),
            )
    models[FL_ROW] = final
    return models
