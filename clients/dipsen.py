"""The DiPSeN client: FedAvg local training of the noisy self-normalizing CNN (Ibitoye et al.).

DiPSeN's Gaussian noise layer and AlphaDropout draw from torch's global RNG on
every forward pass.  This client runs the benign local training loop with that
RNG forked and seeded from (run seed, partition, round), so a run's noise draws
are reproducible and never leak into other code in the same process.  On CUDA
the noise comes from the GPU's generator, which is forked and seeded too (the
draws then differ from the CPU's, but repeat from run to run).

With ``dp-sgd-clip`` > 0 the client trains with DP-SGD instead (the gradient
noise of the paper's Alg. 1, :func:`fedsec.dpsgd.dp_sgd_train`) and reports
in its fit metrics the ε it has spent if it trained in every round so far
(``dp-epsilon``, Flower's RDP accountant via :mod:`clients.privacy`).
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.common import NDArrays, Scalar

from clients.benign import BenignClient
from fedsec.data import TensorSplit
from fedsec.device import rng_devices
from fedsec.dpsgd import dp_sgd_train, steps_per_epoch
from fedsec.experiment import derive_seed, torch_generator
from fedsec.protocol import EPSILON_KEY
from fedsec.training import LossFn, set_weights


class DiPSeNClient(BenignClient):
    """A :class:`~clients.benign.BenignClient` with per-round seeded stochastic layers; optionally DP-SGD."""

    def local_train(
        self,
        parameters: NDArrays,
        server_round: int,
        *,
        data: TensorSplit | None = None,
        loss_fn: LossFn | None = None,
        epochs: int | None = None,
    ) -> float:
        with torch.random.fork_rng(devices=rng_devices(self.device)):
            torch.manual_seed(derive_seed(self.config.seed, self.partition_id, server_round, 1))
            if self.config.dp_sgd_clip > 0 and loss_fn is None:
                return self._dp_sgd(parameters, server_round, data or self.train_data, epochs)
            return super().local_train(parameters, server_round, data=data, loss_fn=loss_fn, epochs=epochs)

    def _dp_sgd(
        self, parameters: NDArrays, server_round: int, data: TensorSplit, epochs: int | None
    ) -> float:
        set_weights(self.model, parameters)
        optimizer = self.local_optimizer()
        return dp_sgd_train(
            self.model,
            data.x,
            data.y,
            epochs=self.config.local_epochs if epochs is None else epochs,
            batch_size=self.config.batch_size,
            optimizer=optimizer,
            generator=torch_generator(self.config.seed, self.partition_id, server_round),
            clip=self.config.dp_sgd_clip,
            noise_multiplier=self.config.dp_sgd_noise,
            device=self.device,
        )

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        weights, num_examples, metrics = super().fit(parameters, config)
        if self.config.dp_sgd_clip > 0:
            from clients.privacy import dp_sgd_epsilon

            server_round = max(1, int(config.get("server-round", 1)))
            n = len(self.train_data)
            steps = server_round * self.config.local_epochs * steps_per_epoch(n, self.config.batch_size)
            extra: dict[str, Any] = {
                EPSILON_KEY: dp_sgd_epsilon(
                    noise_multiplier=self.config.dp_sgd_noise,
                    batch_size=self.config.batch_size,
                    dataset_size=n,
                    steps=steps,
                    delta=self.config.dp_sgd_delta,
                )
            }
            metrics = {**metrics, **extra}
        return weights, num_examples, metrics
