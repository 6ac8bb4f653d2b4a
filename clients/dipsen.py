"""The DiPSeN client: FedAvg local training of the noisy self-normalizing CNN (Ibitoye et al.).

DiPSeN's Gaussian noise layer and AlphaDropout draw from torch's global RNG on
every forward pass.  This client runs the benign local training loop with that
RNG forked and seeded from (run seed, partition, round), so a run's noise draws
are reproducible and never leak into other code in the same process.  On CUDA
the noise comes from the GPU's generator, which is forked and seeded too (the
draws then differ from the CPU's, but repeat from run to run).
"""

from __future__ import annotations

import torch
from flwr.common import NDArrays

from clients.benign import BenignClient
from fedsec.data import TensorSplit
from fedsec.device import rng_devices
from fedsec.experiment import derive_seed
from fedsec.training import LossFn


class DiPSeNClient(BenignClient):
    """A :class:`~clients.benign.BenignClient` whose stochastic layers are seeded per round."""

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
            return super().local_train(parameters, server_round, data=data, loss_fn=loss_fn, epochs=epochs)
