"""The benign Flower client: local SGD on its own partition (FedAvg, McMahan et al. 2017).

A thin ``NumPyClient`` adapter: it receives the global weights, runs
:func:`fedsec.training.train` for the configured local epochs, and returns the
new weights.  Malicious and defending clients in later modules reuse it by
composition (a different ``loss_fn``, poisoned data, an update transform),
never by copying the loop.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar
from torch import nn

from fedsec.config import RunConfig
from fedsec.data import DatasetBundle, TensorSplit
from fedsec.device import resolve_device
from fedsec.experiment import client_data, derive_seed, load_bundle, new_model, torch_generator
from fedsec.training import (
    LossFn,
    cross_entropy_loss,
    evaluate,
    flatten,
    get_weights,
    make_optimizer,
    set_weights,
    train,
)

logger = logging.getLogger(__name__)


def split_local(data: TensorSplit, *, fraction: float, seed: int) -> tuple[TensorSplit, TensorSplit]:
    """Split a client's partition into (train, local-evaluation) parts, deterministically."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    cut = len(data) - round(fraction * len(data))
    return data.subset(order[:cut]), data.subset(order[cut:])


LOCAL_EVAL_FRACTION = 0.1


class LocalDefense(Protocol):
    """A defense a device runs instead of plain local training (e.g. the layered defense's edge side).

    ``model`` is already on the run's device; the loops of :mod:`fedsec.training`
    move the (CPU) data's batches to wherever the model is.  ``server_round`` is
    the round of the train message (a defense whose behaviour is phased over
    training reads it).
    """

    def train(
        self,
        model: nn.Module,
        data: TensorSplit,
        *,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        epochs: int,
        batch_size: int,
        server_round: int = 0,
    ) -> float:
        """Train ``model`` in place on ``data``; return the last epoch's mean loss."""
        ...


def local_splits(
    config: RunConfig, bundle: DatasetBundle, *, partition_id: int, num_partitions: int
) -> tuple[TensorSplit, TensorSplit]:
    """A partition's local ``(train, eval)`` splits, as its client holds them."""
    data = client_data(config, bundle, partition_id=partition_id, num_partitions=num_partitions)
    return split_local(data, fraction=LOCAL_EVAL_FRACTION, seed=derive_seed(config.seed, partition_id))


def client_parts(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
) -> dict[str, Any]:
    """The constructor arguments every :class:`BenignClient` (and subclass) takes, for a partition.

    ``state`` is the node's Flower ``context.state``; the edge defense keeps its
    phased ABL isolation there.
    """
    bundle = load_bundle(config)
    train_data, eval_data = local_splits(
        config, bundle, partition_id=partition_id, num_partitions=num_partitions
    )
    defense = None
    if config.edge_defense:
        from clients.edge_defense import edge_defense

        defense = edge_defense(config, state=state)
    return {
        "config": config,
        "defense": defense,
        "partition_id": partition_id,
        "model": new_model(config, bundle),
        "train_data": train_data,
        "eval_data": eval_data,
        "num_classes": bundle.num_classes,
        "device": resolve_device(config.device),
    }


class BenignClient(NumPyClient):
    """Honest client: trains the global model on its data with the configured optimizer.

    Parameters
    ----------
    config
        The run configuration (optimizer, learning rate, epochs, batch size, seed).
    partition_id
        This client's partition; reported back as the ``partition-id`` metric.
    model
        A model of the run's architecture (its weights are overwritten each round).
    train_data, eval_data
        This client's local training and local evaluation data.
    num_classes
        Number of classes, for per-class evaluation counts.
    defense
        A :class:`LocalDefense` that replaces plain training (None: plain training).
    device
        Where the model trains and evaluates (it is moved there; the data stays on
        the CPU and goes there batch by batch).  ``None``: the CPU.
    """

    def __init__(
        self,
        *,
        config: RunConfig,
        partition_id: int,
        model: nn.Module,
        train_data: TensorSplit,
        eval_data: TensorSplit,
        num_classes: int,
        defense: LocalDefense | None = None,
        device: torch.device | None = None,
    ) -> None:
        if partition_id < 0:
            raise ValueError(f"partition_id must be >= 0, got {partition_id}")
        if len(train_data) == 0:
            raise ValueError(f"partition {partition_id} has no training data")
        self.config = config
        self.partition_id = partition_id
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.model = model.to(self.device)
        self.train_data = train_data
        self.eval_data = eval_data
        self.num_classes = num_classes
        self.defense = defense

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return get_weights(self.model)

    def local_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer of the run's kind and settings over the client's model."""
        return make_optimizer(
            self.config.optimizer,
            self.model.parameters(),
            lr=self.config.learning_rate,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
        )

    def local_train(
        self,
        parameters: NDArrays,
        server_round: int,
        *,
        data: TensorSplit | None = None,
        loss_fn: LossFn | None = None,
        epochs: int | None = None,
    ) -> float:
        """Load ``parameters`` and train locally; return the last epoch's mean loss.

        Malicious and defending clients reuse this loop with other ``data``
        (poisoned, filtered), another ``loss_fn`` (stealth, anomaly, distillation)
        or other ``epochs`` (``None``: ``local-epochs``).
        """
        data = self.train_data if data is None else data
        epochs = self.config.local_epochs if epochs is None else epochs
        set_weights(self.model, parameters)
        optimizer = self.local_optimizer()
        generator = torch_generator(self.config.seed, self.partition_id, server_round)
        if self.defense is not None and loss_fn is None:
            return self.defense.train(
                self.model,
                data,
                optimizer=optimizer,
                generator=generator,
                epochs=epochs,
                batch_size=self.config.batch_size,
                server_round=server_round,
            )
        result = train(
            self.model,
            data.x,
            data.y,
            epochs=epochs,
            batch_size=self.config.batch_size,
            optimizer=optimizer,
            generator=generator,
            loss_fn=loss_fn or cross_entropy_loss,
            device=self.device,
        )
        return result.loss

    def local_update(self, parameters: NDArrays) -> np.ndarray:
        """The model's current weights minus ``parameters``, flattened (float64)."""
        return flatten(get_weights(self.model)) - flatten(parameters)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        server_round = int(config.get("server-round", 0))
        loss = self.local_train(parameters, server_round)
        logger.debug("client %s round %s: train loss %.4f", self.partition_id, server_round, loss)
        metrics: dict[str, Any] = {"partition-id": self.partition_id, "train-loss": loss}
        return get_weights(self.model), len(self.train_data), metrics

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        set_weights(self.model, parameters)
        data = self.eval_data if len(self.eval_data) else self.train_data
        result = evaluate(
            self.model,
            data.x,
            data.y,
            num_classes=self.num_classes,
            batch_size=self.config.eval_batch_size,
            device=self.device,
        )
        return (
            result.loss,
            result.num_examples,
            {"partition-id": self.partition_id, "accuracy": result.accuracy},
        )
