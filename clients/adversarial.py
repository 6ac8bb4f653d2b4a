"""The FDA³ device: adversarial training that sends gradients (Song et al., Algorithm 1).

Each round the cloud's fit config carries the attack schemes of every device
(``fda3-schemes``, the attack monitor's view of this round) and the digest of
the initial model.  The device

1. keeps a buffer of natural examples the **initial** model classifies with
   confidence ≥ ``fda3-confidence`` (``fda3-buffer-size`` of them), labelled
   with the model's predictions as in the paper (``fda3-buffer-labels =
   "predicted"``), or only those it also gets right, with their true labels
   (``"verified"``);
2. turns the buffer into adversarial examples with each of its schemes, by
   transfer from the initial model (|att| schemes → |att| sets; the naturals
   are repeated to match), caching them on disk so later rounds — and a scheme
   added mid-run — only generate what is new;
3. returns the gradients of ``α·CE(nat) + (1−α)·CE(adv)`` on one batch (and,
   for a model with buffers such as BatchNorm statistics, the batch's change
   to each buffer, which the cloud averages).

The first round's parameters are the initial model; the device caches them
under their digest, so a scheme added at round r is still generated against the
initial model.  A thin adapter: the math is in :mod:`fedsec.fda3`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar
from torch import nn

from fedsec.attacks.evasion import ATTACKS
from fedsec.attacks.params import parse_attack_params
from fedsec.cache import cached_tensors, tensors_digest
from fedsec.config import RunConfig
from fedsec.data import TensorSplit
from fedsec.experiment import torch_generator
from fedsec.fda3 import AdversarialPairs, confident_buffer, loss_gradients, make_pairs
from fedsec.training import get_weights, set_weights

logger = logging.getLogger(__name__)

SCHEMES_KEY = "fda3-schemes"
INITIAL_DIGEST_KEY = "fda3-initial-digest"


def encode_schemes(schemes: dict[int, tuple[str, ...]]) -> str:
    """``{0: ("fgsm",), 1: ("bim", "pgd")}`` → ``"0:fgsm;1:bim+pgd"`` (fit-config value)."""
    return ";".join(f"{pid}:{'+'.join(names)}" for pid, names in sorted(schemes.items()))


def decode_schemes(text: str, partition_id: int) -> tuple[str, ...]:
    """This device's schemes from an :func:`encode_schemes` value."""
    for piece in text.split(";"):
        pid, _, names = piece.partition(":")
        if pid.strip() == str(partition_id):
            return tuple(n for n in names.split("+") if n)
    raise ValueError(f"the fit config assigns no attack scheme to partition {partition_id}")


def weights_digest(parameters: NDArrays) -> str:
    """Digest of a list of weight arrays (identifies the initial model)."""
    return tensors_digest(list(parameters))


class AdversarialClient(NumPyClient):
    """FDA³ device for ``partition_id``: sends gradients of the α-weighted natural/adversarial loss.

    Parameters
    ----------
    config
        Run configuration (``fda3-*`` keys, ``attack-params``, seed).
    partition_id
        This device's partition (picks its schemes out of the fit config).
    model
        A model of the run's architecture.
    data
        This device's local data.
    num_classes
        Number of classes of the dataset.
    cache_dir
        Where the initial model and generated pairs are cached.
    data_key
        Identifies ``data`` in cache keys (dataset, split, partition).
    device
        Where the model runs: the buffer's forward passes, ART's attacks and the
        gradient step (the model is moved there; data stays on the CPU).  ``None``: the CPU.
    """

    def __init__(
        self,
        *,
        config: RunConfig,
        partition_id: int,
        model: nn.Module,
        data: TensorSplit,
        num_classes: int,
        cache_dir: Path,
        data_key: dict[str, object],
        device: torch.device | None = None,
    ) -> None:
        if len(data) == 0:
            raise ValueError(f"partition {partition_id} has no data")
        self.config = config
        self.partition_id = partition_id
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.model = model.to(self.device)
        self.data = data
        self.num_classes = num_classes
        self.cache_dir = cache_dir
        self.data_key = data_key
        self.attack_params = parse_attack_params(config.attack_params)

    def initial_model(self, parameters: NDArrays, digest: str) -> nn.Module:
        """The initial model (cached at first sight); falls back to ``parameters`` if never seen."""
        received = weights_digest(parameters)
        names = list(self.model.state_dict())

        def build() -> dict[str, torch.Tensor]:
            if received != digest:
                logger.warning(
                    "device %s never saw the initial model; using the current one for transfer",
                    self.partition_id,
                )
            return {
                name: torch.from_numpy(array.copy()) for name, array in zip(names, parameters, strict=True)
            }

        state = cached_tensors("fda3-initial", {"digest": digest}, build, self.cache_dir)
        set_weights(self.model, [state[name].numpy() for name in names])
        return self.model

    def pairs(self, schemes: tuple[str, ...], parameters: NDArrays, digest: str) -> AdversarialPairs:
        """Natural/adversarial pairs for ``schemes`` against the initial model (cached per scheme)."""
        model = self.initial_model(parameters, digest)
        buffer_key = {
            "data": self.data_key,
            "digest": digest,
            "size": self.config.fda3_buffer_size,
            "confidence": self.config.fda3_confidence,
            "labels": self.config.fda3_buffer_labels,
        }

        def build_buffer() -> dict[str, torch.Tensor]:
            buffer = confident_buffer(
                model,
                self.data,
                threshold=self.config.fda3_confidence,
                size=self.config.fda3_buffer_size,
                labels=self.config.fda3_buffer_labels,
                device=self.device,
            )
            return {"x": buffer.x, "y": buffer.y}

        stored = cached_tensors("fda3-buffer", buffer_key, build_buffer, self.cache_dir)
        buffer = TensorSplit(x=stored["x"], y=stored["y"])
        parts = []
        for scheme in schemes:
            effective = {**ATTACKS[scheme].defaults, **self.attack_params.get(scheme, {})}
            key = {**buffer_key, "attack": scheme, "params": effective}

            def build_pairs(scheme: str = scheme) -> dict[str, torch.Tensor]:
                logger.info(
                    "device %s: generating %s examples for %s", self.partition_id, len(buffer), scheme
                )
                made = make_pairs(
                    model,
                    buffer,
                    [scheme],
                    num_classes=self.num_classes,
                    seed=self.config.seed + self.partition_id,
                    params=self.attack_params,
                    device=self.device,
                )
                return {"x": made.x, "y": made.y}

            parts.append(cached_tensors("fda3-pairs", key, build_pairs, self.cache_dir))
        return AdversarialPairs(
            x=torch.cat([p["x"] for p in parts]), y=torch.cat([p["y"] for p in parts]), attacks=schemes
        )

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return get_weights(self.model)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        server_round = int(config.get("server-round", 0))
        schemes = decode_schemes(str(config[SCHEMES_KEY]), self.partition_id)
        digest = str(config.get(INITIAL_DIGEST_KEY) or weights_digest(parameters))
        pairs = self.pairs(schemes, parameters, digest)
        set_weights(self.model, parameters)
        gradients, loss = loss_gradients(
            self.model,
            pairs,
            alpha=self.config.fda3_alpha,
            batch_size=self.config.fda3_batch_size,
            generator=torch_generator(self.config.seed, self.partition_id, server_round),
            device=self.device,
        )
        metrics: dict[str, Scalar] = {
            "partition-id": self.partition_id,
            "train-loss": loss,
            "attacks": "+".join(schemes),
        }
        return gradients, min(len(pairs), self.config.fda3_batch_size), metrics
