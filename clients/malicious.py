"""Malicious Flower clients: data poisoning, boosted and stealthy model poisoning, backdoors.

Implements the attackers of Chen et al., "Towards multi-party targeted model
poisoning attacks against federated learning systems" (High-Confidence
Computing 2021) — colluding stealthy clients with perfect or limited knowledge
and the single-node baselines SNAL2 and SAnoDC — and the backdoor attacks the
layered-defense and PDGAN papers are judged against: label flipping, BadNets
pixel triggers (Gu et al. 2017), DBA (Xie et al. 2020), constrain-and-scale
(Bagdasaryan et al. 2020) and the clean-label backdoor (Turner et al. 2019).

Every client here is a :class:`~clients.benign.BenignClient` that trains with
the one loop (:meth:`BenignClient.local_train`) on other data or with another
loss, then transforms its update with :mod:`fedsec.attacks.poisoning`.  Before
``attack-start-round`` each behaves honestly.

The data-poisoning roles (``label-flip``, ``badnets``, ``dba``, ``clean-label``)
are by default honest devices with poisoned data: they train like every device,
edge defense included.  ``poison-epochs`` (the DBA paper trains its MNIST
attackers 10 local epochs) and ``poison-scale`` (model replacement) turn them
into attackers that control their training, who then skip the edge defense.

Perfect knowledge (PK) — seeing the round's benign updates — is a named,
simulation-only hook (:func:`simulated_benign_updates`): the colluder
recomputes what the benign clients send this round from their partitions,
which only a simulation holds.  It is refused unless the run sets
``perfect-knowledge-hook = true``; ``fedsec deploy`` refuses that setting.
Limited knowledge without the hook estimates the benign update from the
global-model history kept in the node's Flower ``Context.state`` and from its
own honest training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.benign import BenignClient, client_parts
from fedsec.attacks.poisoning import StealthObjective, apply_update, boost, select_lambda, stealth_direction
from fedsec.config import RunConfig
from fedsec.data import TensorSplit
from fedsec.data.poisoning import (
    Trigger,
    chosen_targets,
    clean_label_poison,
    dba_parts,
    flip_labels,
    pixel_pattern,
    poison_with_trigger,
    targeted_subset,
)
from fedsec.errors import ConfigError
from fedsec.experiment import derive_seed, load_bundle
from fedsec.roles import parse_roles
from fedsec.training import LossFn, evaluate, flatten, get_weights, set_weights

logger = logging.getLogger(__name__)

HISTORY_KEY = "fedsec-previous-global"
#: Seed-derivation key of the poisoning draws (distinct from partition and round keys).
POISON_STREAM = 0x9015


def global_trigger(config: RunConfig, input_shape: tuple[int, int, int]) -> Trigger:
    """The run's backdoor trigger (what the server's ASR test set is stamped with)."""
    return pixel_pattern(input_shape, kind=config.trigger, size=config.trigger_size)


def sampled_per_round(config: RunConfig) -> int:
    """Clients FedAvg averages each round (n in constrain-and-scale's γ = n/η)."""
    return max(1, math.ceil(config.fraction_fit * config.num_clients))


class MaliciousClient(BenignClient):
    """A client that trains honestly before ``attack-start-round`` and attacks from then on."""

    def __init__(self, *, state: RecordDict | None = None, num_partitions: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state
        self.num_partitions = num_partitions

    def attack(self, parameters: NDArrays, server_round: int) -> tuple[NDArrays, dict[str, Scalar]]:
        """This round's malicious weights and metrics to report."""
        raise NotImplementedError

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        server_round = int(config.get("server-round", 0))
        if server_round < self.config.attack_start_round:
            result = super().fit(parameters, config)
        else:
            weights, metrics = self.attack(parameters, server_round)
            result = (weights, len(self.train_data), {"partition-id": self.partition_id, **metrics})
        if self.state is not None:
            self.state[HISTORY_KEY] = ArrayRecord([np.asarray(p) for p in parameters])
        return result


# ---------------------------------------------------------------------------- data poisoning


class DataPoisoningClient(MaliciousClient):
    """Trains on a poisoned copy of its data (label flip, BadNets, DBA), optionally longer and scaled.

    Parameters
    ----------
    poisoned
        The poisoned training data used from ``attack-start-round`` on.
    factor
        The update sent is ``factor`` × the trained update (1: as trained; model
        replacement otherwise, e.g. Bagdasaryan et al.'s γ or Bhagoji et al.'s λ).
    epochs
        Local epochs on the poisoned data (``None``: ``local-epochs``), e.g. the
        DBA paper's longer poison training.
    estimate
        Bhagoji et al.'s estimation of the other clients' update: first train
        honestly on the client's own clean data from the global model ``w`` (to
        ``S``, where the benign clients are about to move the model), train the
        poisoned data from ``S`` (to ``X``), and send ``w + factor·(X − S)``. With
        ``factor`` = n/m the aggregate then lands near ``X`` even when the benign
        clients pull against the attack; without it (``S = w``) the benign pull
        undoes a flip in the round after it lands.
    """

    def __init__(
        self,
        *,
        poisoned: TensorSplit,
        factor: float = 1.0,
        epochs: int | None = None,
        estimate: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1 or None, got {epochs}")
        self.poisoned = poisoned
        self.factor = factor
        self.epochs = epochs
        self.estimate = estimate

    def poison(self, parameters: NDArrays, server_round: int) -> TensorSplit:
        return self.poisoned

    def loss_fn(self, parameters: NDArrays) -> LossFn | None:
        """The training loss (``None``: cross-entropy, or the edge defense's)."""
        return None

    def attack(self, parameters: NDArrays, server_round: int) -> tuple[NDArrays, dict[str, Scalar]]:
        poisoned = self.poison(parameters, server_round)
        loss_fn = self.loss_fn(parameters)
        start = parameters
        if self.estimate:
            self.local_train(parameters, server_round)
            start = get_weights(self.model)
        loss = self.local_train(start, server_round, data=poisoned, loss_fn=loss_fn, epochs=self.epochs)
        metrics: dict[str, Scalar] = {"train-loss": loss}
        if self.factor == 1.0 and not self.estimate:
            return get_weights(self.model), metrics
        update = boost(self.local_update(start), self.factor)
        return apply_update(parameters, update), {**metrics, "attack-scale": self.factor}


class CleanLabelClient(DataPoisoningClient):
    """Turner et al.'s clean-label backdoor: PGD-hardened target-class images + trigger, true labels.

    The proxy model for the perturbation is the current global model, so the
    poisons are remade every round.
    """

    def __init__(self, *, trigger: Trigger, input_shape: tuple[int, int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger = trigger
        self.input_shape = input_shape

    def poison(self, parameters: NDArrays, server_round: int) -> TensorSplit:
        set_weights(self.model, parameters)
        return clean_label_poison(
            self.train_data,
            self.trigger,
            target=self.config.attack_target,
            fraction=self.config.poison_fraction,
            model=self.model,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            eps=self.config.clean_label_eps,
            eps_step=self.config.clean_label_eps / 4,
            max_iter=self.config.clean_label_iterations,
            seed=_seed(self.config, self.partition_id, server_round),
            copies=self.config.clean_label_copies,
        )


# ---------------------------------------------------------------------------- scaled updates


class ScaledUpdateClient(DataPoisoningClient):
    """A :class:`DataPoisoningClient` that always scales, optionally with constrain-and-scale's loss.

    ``boosted`` (Bhagoji et al.'s explicit boosting / model replacement) scales
    by λ = ``boost-factor``; ``constrain-scale`` (Bagdasaryan et al.) trains
    with ``α·CE + (1-α)·‖w − w_global‖²`` and scales by γ = ``scale-factor``
    (default n/η: the clients averaged per round, FedAvg's η = 1).
    """

    def __init__(self, *, factor: float, anomaly_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(factor=factor, **kwargs)
        if not 0.0 <= anomaly_weight < 1.0:
            raise ValueError(f"anomaly_weight must be in [0, 1), got {anomaly_weight}")
        self.anomaly_weight = anomaly_weight

    def loss_fn(self, parameters: NDArrays) -> LossFn | None:
        if not self.anomaly_weight:
            return None
        set_weights(self.model, parameters)
        return AnomalyEvasionLoss(
            reference=[p.detach().clone() for p in self.model.parameters()], weight=self.anomaly_weight
        )


@dataclass
class AnomalyEvasionLoss:
    """``(1-α)·CE + α·‖θ − θ_global‖²`` — constrain-and-scale's anomaly-evasion objective.

    The anomaly term is the squared L2 distance to the global model, the
    quantity a norm-based detector looks at.
    """

    reference: list[torch.Tensor]
    weight: float

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(model(x), y)
        distance = sum(((p - r) ** 2).sum() for p, r in zip(model.parameters(), self.reference, strict=True))
        return (1.0 - self.weight) * ce + self.weight * distance


# ---------------------------------------------------------------------------- stealthy model poisoning


@dataclass(frozen=True)
class Stealth:
    """How a stealthy attacker behaves (the paper's variants).

    Attributes
    ----------
    knowledge
        ``"perfect"`` (every benign update of the round, via the simulation hook),
        ``"limited"`` (``lk-known-clients`` of them via the hook, or the
        history estimate when 0) or ``"estimate"`` (history + own honest training).
    cosine
        Train with the cosine penalty toward the benign update.
    bounded
        Keep the L2 distance to every known benign update within C.
    """

    knowledge: str
    cosine: bool
    bounded: bool


STEALTH_VARIANTS = {
    "colluding-pk": Stealth(knowledge="perfect", cosine=True, bounded=True),
    "colluding-lk": Stealth(knowledge="limited", cosine=True, bounded=True),
    "snal2": Stealth(knowledge="estimate", cosine=False, bounded=True),
    "sanodc": Stealth(knowledge="estimate", cosine=False, bounded=False),
}


def targeted_examples(config: RunConfig) -> TensorSplit:
    """The ``targeted-samples`` chosen source-class test images, labelled the target.

    Attackers and the server's evaluation draw the same images from the run seed.
    """
    return chosen_targets(
        load_bundle(config).test,
        source=config.attack_source,
        target=config.attack_target,
        count=config.targeted_samples,
        seed=derive_seed(config.seed, POISON_STREAM) % 2**32,
    )


def benign_partitions(config: RunConfig, num_partitions: int) -> list[int]:
    """Partitions the scenario makes benign (what a perfect-knowledge colluder simulates)."""
    return [p for p, role in parse_roles(config.roles, num_partitions).items() if role == "benign"]


def simulated_benign_updates(
    config: RunConfig, parameters: NDArrays, server_round: int, partitions: list[int], num_partitions: int
) -> list[np.ndarray]:
    """**Simulation-only hook**: the benign updates of ``partitions`` in ``server_round``.

    Rebuilds each benign client from its partition and trains it from
    ``parameters`` exactly as it trains itself this round (same data, same
    seeded shuffling), which is possible only where every partition lives in
    one place.  Refused unless ``perfect-knowledge-hook`` is on.
    """
    if not config.perfect_knowledge_hook:
        raise ConfigError(
            "colluders with perfect (or hook-based limited) knowledge need the simulation-only hook: "
            "set perfect-knowledge-hook = true in the scenario (never available in deployment)"
        )
    updates = []
    for partition in partitions:
        honest = BenignClient(**client_parts(config, partition_id=partition, num_partitions=num_partitions))
        honest.local_train(parameters, server_round)
        updates.append(honest.local_update(parameters))
    return updates


def spread(vectors: list[np.ndarray]) -> float:
    """The largest pairwise L2 distance among ``vectors`` (the norm of a single one)."""
    if len(vectors) == 1:
        return float(np.linalg.norm(vectors[0]))
    return max(float(np.linalg.norm(a - b)) for i, a in enumerate(vectors) for b in vectors[i + 1 :])


class StealthyClient(MaliciousClient):
    """Chen et al.'s stealthy targeted poisoning (Eq. 4) and its single-node baselines.

    Each round, by alternating minimisation (Bhagoji et al.), it

    1. estimates the benign updates ``B`` (by ``stealth.knowledge``) — the
       benign-data part of Eq. 4, whose mean is the update's centre;
    2. takes the malicious step ``δ_t`` from ``w + mean B``: ``stealth-steps``
       descent steps on the targeted loss plus the cosine penalty
       ``p·(1 − cos(δ, mean B))`` (off for SNAL2/SAnoDC), each with the part
       that would raise its benign-data loss removed and scaled to
       ``stealth-step`` × ‖mean B‖ (:func:`fedsec.attacks.poisoning.stealth_direction`);
    3. sends ``mean B + λ_m·δ_t`` for the largest ``λ_m`` in ``stealth-lambdas``
       whose L2 distance to every update in ``B`` is at most C (``l2-bound``, or
       the spread of ``B``) and whose local validation accuracy stays within
       ``accuracy-slack`` of the benign estimate's (awareness of the server's
       accuracy check).  If no λ fits, the smallest λ's update is shrunk toward
       mean ``B`` until it does.  SAnoDC has no bound: it takes the largest λ.

    λ_m weights the targeted objective as an explicit boost of its step: the
    literal weighted loss ``CE + λ_m·CE_targeted`` trained with the clients'
    SGD diverged for λ_m ≥ 16 and, shrunk into the bound, left the targeted
    samples untouched (measured on MNIST-5k, see the README).
    """

    def __init__(self, *, stealth: Stealth, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stealth = stealth
        source = self.config.attack_source
        if self.config.targeted_samples:
            self.targeted = targeted_examples(self.config)
            self.clean = self.train_data
        else:
            self.targeted = targeted_subset(self.train_data, source=source, target=self.config.attack_target)
            self.clean = self.train_data.subset(np.flatnonzero(self.train_data.y.numpy() != source))

    def benign_estimates(self, parameters: NDArrays, server_round: int) -> list[np.ndarray]:
        """The benign updates this attacker knows or estimates this round."""
        config = self.config
        if self.stealth.knowledge == "perfect" or (
            self.stealth.knowledge == "limited" and config.lk_known_clients > 0
        ):
            partitions = benign_partitions(config, self.num_partitions)
            if self.stealth.knowledge == "limited":
                partitions = partitions[: config.lk_known_clients]
            return simulated_benign_updates(config, parameters, server_round, partitions, self.num_partitions)
        self.local_train(parameters, server_round)
        estimates = [self.local_update(parameters)]
        previous = self.state.get(HISTORY_KEY) if self.state is not None else None
        if isinstance(previous, ArrayRecord):
            history = flatten(parameters) - flatten(previous.to_numpy_ndarrays())
            if np.linalg.norm(history) > 0:
                estimates.append(history)
        return estimates

    def local_accuracy(self, parameters: NDArrays, update: np.ndarray) -> float:
        """Accuracy of ``w + update`` on all the attacker's clean data (its guess at the server's check)."""
        set_weights(self.model, apply_update(parameters, update))
        return evaluate(
            self.model, self.clean.x, self.clean.y, num_classes=self.num_classes, device=self.device
        ).accuracy

    def targeted_step(self, parameters: NDArrays, center: np.ndarray, server_round: int) -> np.ndarray:
        """The malicious step ``δ_t`` from ``w + center`` (class docstring), as a state-dict vector."""
        config = self.config
        set_weights(self.model, parameters)
        objective = StealthObjective(
            targeted=self.targeted,
            lam=0.0,
            penalty=config.stealth_penalty if self.stealth.cosine else 0.0,
            global_params=[p.detach().clone() for p in self.model.parameters()],
            benign_update=center if self.stealth.cosine else None,
        )
        set_weights(self.model, apply_update(parameters, center))
        targeted_x, targeted_y = self.targeted.x.to(self.device), self.targeted.y.to(self.device)
        clean_x, clean_y = self.clean.x.to(self.device), self.clean.y.to(self.device)
        step = stealth_direction(
            self.model,
            objective=lambda model: objective(model, targeted_x, targeted_y),
            benign_loss=lambda model: nn.functional.cross_entropy(model(clean_x), clean_y),
            steps=config.stealth_steps,
            step_norm=config.stealth_step * float(np.linalg.norm(center)),
        )
        return parameter_to_state_vector(self.model, step)

    def attack(self, parameters: NDArrays, server_round: int) -> tuple[NDArrays, dict[str, Scalar]]:
        config = self.config
        benign = self.benign_estimates(parameters, server_round)
        center = np.mean(benign, axis=0)
        radius = (config.l2_bound or spread(benign)) if self.stealth.bounded else math.inf
        floor = self.local_accuracy(parameters, center) - config.accuracy_slack
        step = self.targeted_step(parameters, center, server_round)

        def craft(lam: float) -> np.ndarray:
            return center + lam * step

        def accurate(update: np.ndarray) -> bool:
            return not self.stealth.bounded or self.local_accuracy(parameters, update) >= floor

        choice = select_lambda(
            parse_lambdas(config.stealth_lambdas), craft, benign=benign, radius=radius, accept=accurate
        )
        logger.info(
            "client %s round %s: λ=%s within bound=%s (C=%.3f)",
            self.partition_id,
            server_round,
            choice.lam,
            choice.within_bound,
            radius,
        )
        return apply_update(parameters, choice.update), {
            "attack-lambda": choice.lam,
            "attack-within-bound": int(choice.within_bound),
            "attack-radius": float(radius) if math.isfinite(radius) else -1.0,
        }


def parameter_to_state_vector(model: nn.Module, vector: np.ndarray) -> np.ndarray:
    """A vector over ``model.parameters()`` laid out over ``state_dict()`` (zeros for buffers)."""
    parameter_ids = {id(p): i for i, p in enumerate(model.parameters())}
    offsets = np.cumsum([0] + [p.numel() for p in model.parameters()])
    pieces = []
    for tensor in model.state_dict(keep_vars=True).values():
        index = parameter_ids.get(id(tensor))
        if index is None:
            pieces.append(np.zeros(tensor.numel()))
        else:
            pieces.append(vector[offsets[index] : offsets[index + 1]])
    return np.concatenate(pieces)


def parse_lambdas(text: str) -> list[float]:
    """``"1,2,4"`` → ``[1.0, 2.0, 4.0]``; ConfigError naming ``stealth-lambdas`` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"config key 'stealth-lambdas' must be comma-separated numbers, got {text!r}"
        ) from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise ConfigError(f"config key 'stealth-lambdas' must list positive numbers, got {text!r}")
    return values


# ---------------------------------------------------------------------------- registry factories


def _parts(
    config: RunConfig,
    partition_id: int,
    num_partitions: int,
    state: RecordDict | None,
    *,
    controls_training: bool = False,
) -> dict[str, Any]:
    """Client arguments; an attacker that ``controls_training`` never runs the edge defense.

    Data-poisoning roles model honest devices whose data was poisoned, so they
    train the way every device does (with the edge defense, if the run has one).
    """
    parts = client_parts(config, partition_id=partition_id, num_partitions=num_partitions)
    if controls_training:
        parts["defense"] = None
    return {**parts, "state": state, "num_partitions": num_partitions}


def _data_poisoner_parts(
    config: RunConfig, partition_id: int, num_partitions: int, state: RecordDict | None
) -> dict[str, Any]:
    """:func:`_parts` of a data-poisoning role, with its ``poison-epochs`` and ``poison-scale``.

    A scaled data poisoner also follows ``boost-estimate`` (see :class:`DataPoisoningClient`).

    With the defaults (0 and 1) the attacker is an honest device with poisoned
    data and runs the edge defense like every device; with longer poison
    training or a scaled update it controls its training, so it does not.
    """
    scaled = config.poison_scale != 1.0
    controls = config.poison_epochs > 0 or scaled
    parts = _parts(config, partition_id, num_partitions, state, controls_training=controls)
    return {
        **parts,
        "factor": config.poison_scale,
        "epochs": config.poison_epochs or None,
        "estimate": scaled and config.boost_estimate,
    }


def _input_shape(parts: dict[str, Any]) -> tuple[int, int, int]:
    return tuple(int(d) for d in parts["train_data"].x.shape[1:])  # type: ignore[return-value]


def _seed(config: RunConfig, partition_id: int, *keys: int) -> int:
    """A 32-bit seed for this attacker's poisoning draws (numpy's legacy seeding needs < 2**32)."""
    return derive_seed(config.seed, partition_id, POISON_STREAM, *keys) % 2**32


def label_flip_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> MaliciousClient:
    """Label flipping: ``poison-fraction`` of the source-class samples relabelled to the target."""
    parts = _data_poisoner_parts(config, partition_id, num_partitions, state)
    poisoned = flip_labels(
        parts["train_data"],
        source=config.attack_source,
        target=config.attack_target,
        fraction=config.poison_fraction,
        seed=_seed(config, partition_id),
    )
    return DataPoisoningClient(poisoned=poisoned, **parts)


def _trigger_poisoned(
    config: RunConfig, parts: dict[str, Any], trigger: Trigger, partition_id: int
) -> TensorSplit:
    return poison_with_trigger(
        parts["train_data"],
        trigger,
        target=config.attack_target,
        fraction=config.poison_fraction,
        seed=_seed(config, partition_id),
    )


def badnets_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> MaliciousClient:
    """BadNets: ``poison-fraction`` of the samples stamped with the global trigger, labelled the target."""
    parts = _data_poisoner_parts(config, partition_id, num_partitions, state)
    trigger = global_trigger(config, _input_shape(parts))
    return DataPoisoningClient(poisoned=_trigger_poisoned(config, parts, trigger, partition_id), **parts)


def dba_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> MaliciousClient:
    """DBA: this attacker stamps its local part of the global trigger (part = its rank among DBA clients)."""
    parts = _data_poisoner_parts(config, partition_id, num_partitions, state)
    attackers = [p for p, role in parse_roles(config.roles, num_partitions).items() if role == "dba"]
    rank = attackers.index(partition_id) if partition_id in attackers else partition_id
    local = dba_parts(global_trigger(config, _input_shape(parts)), config.dba_parts)[rank % config.dba_parts]
    return DataPoisoningClient(poisoned=_trigger_poisoned(config, parts, local, partition_id), **parts)


def clean_label_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> MaliciousClient:
    """Clean-label backdoor: target-class images hardened against the global model, stamped, labels kept."""
    parts = _data_poisoner_parts(config, partition_id, num_partitions, state)
    shape = _input_shape(parts)
    return CleanLabelClient(
        trigger=global_trigger(config, shape), input_shape=shape, poisoned=parts["train_data"], **parts
    )


def boosted_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> MaliciousClient:
    """Boosted model replacement: label-flip training, then the update × ``boost-factor``."""
    parts = _parts(config, partition_id, num_partitions, state, controls_training=True)
    poisoned = flip_labels(
        parts["train_data"],
        source=config.attack_source,
        target=config.attack_target,
        fraction=config.poison_fraction,
        seed=_seed(config, partition_id),
    )
    return ScaledUpdateClient(
        factor=config.boost_factor,
        poisoned=poisoned,
        epochs=config.poison_epochs or None,
        estimate=config.boost_estimate,
        **parts,
    )


def constrain_scale_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> MaliciousClient:
    """Constrain-and-scale: trigger poisoning with an anomaly-evasion loss, update × γ (default n/η)."""
    parts = _parts(config, partition_id, num_partitions, state, controls_training=True)
    trigger = global_trigger(config, _input_shape(parts))
    return ScaledUpdateClient(
        factor=config.scale_factor or float(sampled_per_round(config)),
        anomaly_weight=config.anomaly_weight,
        poisoned=_trigger_poisoned(config, parts, trigger, partition_id),
        **parts,
    )


def _stealthy(name: str) -> Any:
    def factory(
        config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
    ) -> MaliciousClient:
        return StealthyClient(
            stealth=STEALTH_VARIANTS[name], **_parts(config, partition_id, num_partitions, state)
        )

    factory.__doc__ = f"Stealthy targeted poisoning, variant {name!r} ({STEALTH_VARIANTS[name]})."
    return factory


#: What each malicious role is after: ``targeted`` (source-class test samples
#: classified as the target) or ``backdoor`` (triggered test samples → target).
OBJECTIVES = {
    "label-flip": "targeted",
    "boosted": "targeted",
    **dict.fromkeys(STEALTH_VARIANTS, "targeted"),
    "badnets": "backdoor",
    "dba": "backdoor",
    "clean-label": "backdoor",
    "constrain-scale": "backdoor",
}

#: Malicious client roles (merged into :data:`clients.CLIENT_ROLES`).
MALICIOUS_FACTORIES: dict[str, Any] = {
    "label-flip": label_flip_client,
    "badnets": badnets_client,
    "dba": dba_client,
    "clean-label": clean_label_client,
    "boosted": boosted_client,
    "constrain-scale": constrain_scale_client,
    **{name: _stealthy(name) for name in STEALTH_VARIANTS},
}
