"""Data-poisoning and scaled-update attackers: label flipping, backdoors, boosting, constrain-and-scale.

Implements the attacks the layered-defense and PDGAN papers are judged
against: label flipping, BadNets pixel triggers (Gu et al. 2017), DBA (Xie
et al., ICLR 2020), constrain-and-scale (Bagdasaryan et al. 2020), the
clean-label backdoor (Turner et al. 2019) and Bhagoji et al.'s explicit
boosting ("Analyzing Federated Learning through an Adversarial Lens", ICML
2019).

The data-poisoning roles (``label-flip``, ``badnets``, ``dba``, ``clean-label``)
are by default honest devices with poisoned data: they train like every device,
edge defense included.  ``poison-epochs`` (the DBA paper trains its MNIST
attackers 10 local epochs) and ``poison-scale`` (model replacement) turn them
into attackers that control their training, who then skip the edge defense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import RecordDict
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.attacker import MaliciousClient, attacker_parts, global_trigger, poison_seed, sampled_per_round
from fedsec.attacks.poisoning import apply_update, boost
from fedsec.config import RunConfig
from fedsec.data import TensorSplit
from fedsec.data.clean_label import clean_label_poison
from fedsec.data.poisoning import flip_labels
from fedsec.data.triggers import Trigger, dba_parts, poison_with_trigger
from fedsec.roles import parse_roles
from fedsec.training import LossFn, get_weights, set_weights

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
            seed=poison_seed(self.config, self.partition_id, server_round),
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


# ---------------------------------------------------------------------------- factories


def _data_poisoner_parts(
    config: RunConfig, partition_id: int, num_partitions: int, state: RecordDict | None
) -> dict[str, Any]:
    """:func:`~clients.attacker.attacker_parts` of a data poisoner, with ``poison-epochs``, ``poison-scale``.

    A scaled data poisoner also follows ``boost-estimate`` (see :class:`DataPoisoningClient`).

    With the defaults (0 and 1) the attacker is an honest device with poisoned
    data and runs the edge defense like every device; with longer poison
    training or a scaled update it controls its training, so it does not.
    """
    scaled = config.poison_scale != 1.0
    controls = config.poison_epochs > 0 or scaled
    parts = attacker_parts(config, partition_id, num_partitions, state, controls_training=controls)
    return {
        **parts,
        "factor": config.poison_scale,
        "epochs": config.poison_epochs or None,
        "estimate": scaled and config.boost_estimate,
    }


def _input_shape(parts: dict[str, Any]) -> tuple[int, int, int]:
    return tuple(int(d) for d in parts["train_data"].x.shape[1:])  # type: ignore[return-value]


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
        seed=poison_seed(config, partition_id),
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
        seed=poison_seed(config, partition_id),
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
    parts = attacker_parts(config, partition_id, num_partitions, state, controls_training=True)
    poisoned = flip_labels(
        parts["train_data"],
        source=config.attack_source,
        target=config.attack_target,
        fraction=config.poison_fraction,
        seed=poison_seed(config, partition_id),
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
    parts = attacker_parts(config, partition_id, num_partitions, state, controls_training=True)
    trigger = global_trigger(config, _input_shape(parts))
    return ScaledUpdateClient(
        factor=config.scale_factor or float(sampled_per_round(config)),
        anomaly_weight=config.anomaly_weight,
        poisoned=_trigger_poisoned(config, parts, trigger, partition_id),
        **parts,
    )


#: The roles of this module and their factories (merged into :data:`clients.CLIENT_ROLES`).
DATA_POISONING_FACTORIES: dict[str, Any] = {
    "label-flip": label_flip_client,
    "badnets": badnets_client,
    "dba": dba_client,
    "clean-label": clean_label_client,
    "boosted": boosted_client,
    "constrain-scale": constrain_scale_client,
}
