"""Server-side evaluation beyond clean accuracy: pre-trained initial models and robust test sets.

Used by the FDA³ and DiPSeN experiments: the initial global model is
pre-trained on the clean training split (cached on disk keyed by what shapes
it), adversarial test sets are made once against that initial model from
held-out test images (cached keyed by the model's weights and the attack's
parameters), and every round the global model's accuracy on each set is
recorded next to its clean accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsec.attacks.evasion import ATTACKS, generate
from fedsec.attacks.params import display_name, parse_attack_sizes
from fedsec.cache import cached_tensors, default_cache_dir, tensors_digest
from fedsec.config import RunConfig
from fedsec.data import DatasetBundle, TensorSplit
from fedsec.device import model_device, rng_devices
from fedsec.experiment import pretrain_data, server_split_sizes, torch_generator
from fedsec.training import evaluate, make_optimizer, train

logger = logging.getLogger(__name__)

NATURE = "Nature"
#: Row of the fraction of inputs whose input gradient is exactly zero, followed by `` (<harness>)``.
ZERO_GRADIENT_ROW = "Zero input gradient"
#: Seed-derivation key of the pre-training shuffle (distinct from any partition id).
PRETRAIN_STREAM = 2**31 - 1


def cache_dir_of(config: RunConfig) -> Path:
    """The configured cache directory, or the default one."""
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def pretrain(config: RunConfig, bundle: DatasetBundle, model: nn.Module) -> nn.Module:
    """Pre-train ``model`` in place for ``pretrain-epochs`` on the pre-training data; cached.

    That data is :func:`~fedsec.experiment.pretrain_data`: with ``pretrain-size``,
    a server-held split no client ever sees (as FDA³'s cloud pre-trains on data
    the devices do not hold); without it, the clients' own training data (the
    server's other held-out splits excluded).
    """
    if config.pretrain_epochs == 0:
        return model
    key = {
        "dataset": config.dataset,
        "model": config.model,
        "seed": config.seed,
        "epochs": config.pretrain_epochs,
        "lr": config.learning_rate,
        "momentum": config.momentum,
        "batch": config.batch_size,
        "server-splits": server_split_sizes(config),
        "init": tensors_digest(model.state_dict()),
    }

    def build() -> dict[str, torch.Tensor]:
        train_split = pretrain_data(config, bundle)
        logger.info(
            "pre-training %s for %s epochs on %s examples",
            config.model,
            config.pretrain_epochs,
            len(train_split),
        )
        optimizer = make_optimizer(
            config.optimizer, model.parameters(), lr=config.learning_rate, momentum=config.momentum
        )
        train(
            model,
            train_split.x,
            train_split.y,
            epochs=config.pretrain_epochs,
            batch_size=config.batch_size,
            optimizer=optimizer,
            generator=torch_generator(config.seed, PRETRAIN_STREAM),
        )
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    state = cached_tensors("pretrained", key, build, cache_dir_of(config))
    model.load_state_dict(state)
    return model


def attack_subset(test: TensorSplit, *, size: int, seed: int) -> TensorSplit:
    """A seeded random subset of ``size`` held-out test images (all of them if fewer)."""
    order = np.random.default_rng(seed).permutation(len(test))[: min(size, len(test))]
    return test.subset(np.sort(order))


def attack_set_size(config: RunConfig, attack: str) -> int:
    """Test images of ``attack``'s set: its ``eval-attack-sizes`` entry, else ``eval-attack-size``."""
    return parse_attack_sizes(config.eval_attack_sizes).get(attack, config.eval_attack_size)


def adversarial_test_sets(
    config: RunConfig,
    model: nn.Module,
    test: TensorSplit,
    attacks: Sequence[str],
    *,
    num_classes: int,
    params: Mapping[str, Mapping[str, float | int]],
) -> dict[str, TensorSplit]:
    """``{"Nature": clean subset, "FGSM": ..., ...}`` made against ``model``; cached per attack.

    ``Nature`` holds ``eval-attack-size`` held-out images; each attack's set the
    first :func:`attack_set_size` of the same seeded draw (so a smaller set is a
    subset of a larger one, and costly attacks can run on fewer images).
    """
    sets = {NATURE: attack_subset(test, size=config.eval_attack_size, seed=config.seed)}
    weights = tensors_digest(model.state_dict())
    for index, attack in enumerate(attacks):
        subset = attack_subset(test, size=attack_set_size(config, attack), seed=config.seed)
        data = tensors_digest({"x": subset.x, "y": subset.y})
        effective = {**ATTACKS[attack].defaults, **params.get(attack, {})}
        key = {"attack": attack, "params": effective, "model": weights, "data": data, "seed": config.seed}

        def build(
            attack: str = attack, index: int = index, subset: TensorSplit = subset
        ) -> dict[str, torch.Tensor]:
            logger.info("making the %s test set (%s images)", attack, len(subset))
            x = generate(
                attack,
                model,
                subset.x,
                subset.y,
                num_classes=num_classes,
                params=params.get(attack),
                seed=config.seed + 1000 + index,
            )
            return {"x": x}

        adversarial = cached_tensors("testset", key, build, cache_dir_of(config))
        sets[display_name(attack)] = TensorSplit(x=adversarial["x"], y=subset.y.clone())
    return sets


def accuracy_on(model: nn.Module, sets: Mapping[str, TensorSplit], *, num_classes: int) -> dict[str, float]:
    """Accuracy of ``model`` on every named set."""
    return {
        name: evaluate(model, split.x, split.y, num_classes=num_classes).accuracy
        for name, split in sets.items()
    }


def white_box_robustness(
    model: nn.Module,
    data: TensorSplit,
    attacks: Sequence[str],
    *,
    num_classes: int,
    params: Mapping[str, Mapping[str, float | int]],
    seed: int,
    eot_samples: int = 1,
    harnesses: Sequence[str] = ("logits",),
) -> dict[str, float]:
    """Accuracy under each attack made white-box against ``model`` itself, per attack harness.

    ``harnesses`` (:mod:`fedsec.attacks.harness`) choose the loss the attacks
    differentiate.  ``"logits"`` gives rows named after the attack (``"FGSM"``);
    with ``eot_samples > 1`` every attack is also run with gradients averaged
    over that many forward passes (expectation over transformation), reported
    as ``"<ATTACK> (EOT×k)"``: for a model whose forward pass is random (DiPSeN's
    noise layer), a gap between the two rows is gradient masking, not
    robustness.  ``"paper"`` (DiPSeN's §VI-E: clipped softmax, ART's default
    steps, PGD without random start) gives rows ``"<ATTACK> (paper harness:
    clipped softmax)"``.  Each harness also adds the row ``"Zero input gradient
    (<harness>)"``: the fraction of ``data`` whose input gradient under that
    harness is exactly zero (inputs FGSM cannot move).
    """
    from fedsec.attacks.harness import harness_label, harness_params, zero_gradient_fraction

    scores: dict[str, float] = {}
    for harness in harnesses:
        variants = [1] if eot_samples <= 1 or harness != "logits" else [1, eot_samples]
        for samples in variants:
            for index, attack in enumerate(attacks):
                x = generate(
                    attack,
                    model,
                    data.x,
                    data.y,
                    num_classes=num_classes,
                    params=harness_params(harness, attack, params.get(attack)),
                    seed=seed + index,
                    eot_samples=samples,
                    harness=harness,
                )
                name = display_name(attack) + harness_label(harness)
                name = name if samples == 1 else f"{name} (EOT×{samples})"
                scores[name] = evaluate(model, x, data.y, num_classes=num_classes).accuracy
                logger.info("white-box %s: accuracy %.4f", name, scores[name])
    for harness in harnesses:
        with torch.random.fork_rng(devices=rng_devices(model_device(model))):
            torch.manual_seed(seed)  # one seeded noise draw; the caller's RNG state is kept
            zero = zero_gradient_fraction(model, data.x, data.y, harness=harness)
        scores[f"{ZERO_GRADIENT_ROW} ({harness})"] = zero
        logger.info("zero input gradient under the %s harness: %.4f of the inputs", harness, zero)
    return scores
