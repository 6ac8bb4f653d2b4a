"""A fedsec extension written outside fedsec: a model, a dataset, a client role and a strategy.

Importing this module registers them in fedsec's registries; the run-config key
``plugins`` makes every process of a run import it (the ``fedsec`` CLI, the
ServerApp, every ClientApp on Ray workers or SuperNodes)::

    fedsec run quickstart --set plugins=examples.fedsec_extension \\
        --set dataset=stripes --set model=tiny-mlp --set strategy=median-clipped-fedavg \\
        --set roles=sign-flip:2 --clients 4 --rounds 3

or with ``flwr run`` directly::

    flwr run . --run-config "plugins='examples.fedsec_extension' dataset='stripes' model='tiny-mlp'"

An installed package can instead declare the module under the entry-point
group ``fedsec.plugins`` (see :mod:`fedsec.plugins`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.common import NDArrays, Scalar
from flwr.serverapp.strategy import FedAvg
from torch import nn

from clients import BenignClient, benign_client, register_role
from fedsec.config import RunConfig
from fedsec.data import DATASETS, DatasetBundle, TensorSplit
from fedsec.models import MODELS
from strategies import STRATEGIES


# ------------------------------------------------------------------ a model
class TinyMLP(nn.Module):
    """Flatten, one hidden layer of 32 ReLU units, logits."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


def tiny_mlp(*, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return TinyMLP(input_shape, num_classes)


# ------------------------------------------------------------------ a dataset
def stripes(*, root: str | None = None, seed: int = 0) -> DatasetBundle:
    """1,200 noisy 8×8 images of horizontal (class 0) or vertical (class 1) stripes, made from ``seed``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 1200)
    phase = rng.integers(0, 2, 1200)
    grid = (np.arange(8) % 2)[None, :]
    images = np.where(
        labels[:, None, None] == 0, (grid.T + phase[:, None, None]) % 2, (grid + phase[:, None, None]) % 2
    )
    images = np.clip(images + rng.normal(0.0, 0.3, images.shape), 0.0, 1.0)[:, None].astype(np.float32)

    def split(index: slice) -> TensorSplit:
        return TensorSplit(
            x=torch.from_numpy(images[index]), y=torch.from_numpy(labels[index].astype(np.int64))
        )

    return DatasetBundle(
        name="stripes",
        train=split(slice(0, 1000)),
        test=split(slice(1000, None)),
        num_classes=2,
        input_shape=(1, 8, 8),
        class_names=("horizontal", "vertical"),
    )


# ------------------------------------------------------------------ a malicious client role
class SignFlipClient(BenignClient):
    """Trains honestly, then sends the opposite of its update (``w − δ`` instead of ``w + δ``)."""

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        trained, num_examples, metrics = super().fit(parameters, config)
        flipped = [(2 * p - t).astype(t.dtype) for p, t in zip(parameters, trained, strict=True)]
        return flipped, num_examples, metrics


def sign_flip_client(
    config: RunConfig, *, partition_id: int, num_partitions: int, state: Any = None
) -> SignFlipClient:
    client = benign_client(
        config, partition_id=partition_id, num_partitions=num_partitions, cls=SignFlipClient
    )
    assert isinstance(client, SignFlipClient)
    return client


# ------------------------------------------------------------------ a strategy
class MedianClippedFedAvg(FedAvg):
    """FedAvg of the updates clipped to the round's median update norm (a Message-API strategy)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: Any, grid: Any
    ) -> Iterable[Message]:
        self.keys = list(arrays.keys())
        self.current = arrays.to_numpy_ndarrays()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        updates = [
            [
                w - g
                for w, g in zip(
                    msg.content.array_records["arrays"].to_numpy_ndarrays(), self.current, strict=True
                )
            ]
            for msg in valid
        ]
        norms = [float(np.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in u))) for u in updates]
        bound = float(np.median(norms))
        scales = [min(1.0, bound / n) if n > 0 else 1.0 for n in norms]
        mean = [
            sum(s * u[k].astype(np.float64) for s, u in zip(scales, updates, strict=True)) / len(updates)
            for k in range(len(self.current))
        ]
        new = [(g + m).astype(g.dtype) for g, m in zip(self.current, mean, strict=True)]
        metrics = self.train_metrics_aggr_fn([msg.content for msg in valid], self.weighted_by_key)
        return ArrayRecord({k: Array(v) for k, v in zip(self.keys, new, strict=True)}), metrics


MODELS.register("tiny-mlp", tiny_mlp)
DATASETS.register("stripes", stripes)
register_role("sign-flip", sign_flip_client, objective="untargeted")
STRATEGIES.register("median-clipped-fedavg", lambda config, base, env: MedianClippedFedAvg(**base))

__all__ = ["MedianClippedFedAvg", "SignFlipClient", "TinyMLP", "sign_flip_client", "stripes", "tiny_mlp"]
