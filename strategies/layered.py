"""Server side of the layered backdoor defense, as Flower strategy wrappers.

Implements the server layer of "A layered defense framework for edge-computing
intelligent services" (the layered backdoor-defense paper):

* :class:`LayeredDefense` drops every update whose cosine similarity to the
  previous round's global update is negative, keeps the HDBSCAN majority
  cluster of the rest (pairwise cosine distances), and lets the inner strategy
  (FedAvg) aggregate what was kept.  The math is
  :func:`fedsec.defenses.selection.layered_selection`.
* :class:`ServerDistillation` fine-tunes every aggregate of any inner strategy
  with self-attention distillation (:func:`fedsec.defenses.attention.distill`)
  on a small clean set the server holds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedsec.data import TensorSplit
from fedsec.defenses.attention import distill
from fedsec.defenses.selection import layered_selection, median_norm_clip
from fedsec.experiment import torch_generator
from fedsec.numbers import is_int, is_real
from fedsec.results import RunRecorder
from fedsec.training import get_weights, make_optimizer, set_weights
from fedsec.updates import flatten_arrays
from strategies.batch import RoundBatch
from strategies.messages import to_arrayrecord
from strategies.wrapper import (
    FilteringStrategy,
    GroundTruth,
    StrategyWrapper,
    Verdict,
)

__all__ = ["SERVER_DISTILL_STREAM", "LayeredDefense", "ServerDistillation"]

logger = logging.getLogger(__name__)

#: Key of the random stream that shuffles the server's distillation batches
#: (``torch_generator(seed, SERVER_DISTILL_STREAM, server_round)``).
SERVER_DISTILL_STREAM = 2**31 - 2


class LayeredDefense(FilteringStrategy):
    """Negative-cosine drop and HDBSCAN majority cluster before ``inner`` aggregates.

    The reference direction is the previous global update: the global model
    sent in this round minus the one sent in the round before (tracked in
    :meth:`configure_train`).  In round 1 there is none and the negative-cosine
    step is skipped.  A round whose aggregate kept the previous model (zero
    global update) does not erase the reference: the last non-zero global
    update stays in force.

    Parameters
    ----------
    inner
        The strategy that aggregates the kept updates (FedAvg in the paper).
    drop_negative
        Run step 1 (drop updates with negative cosine to the previous global update).
    cluster
        Run step 2 (keep only the HDBSCAN majority cluster).
    clip
        Then clip every kept update to the median L2 norm of all the round's
        updates (FLAME's adaptive clipping; not in the paper).  Cosine-based
        selection ignores magnitude, so a scaled update that lands in the
        majority cluster (constrain-and-scale) would otherwise replace the model.
    min_samples
        HDBSCAN's ``min_samples`` in step 2: ``None`` (default) is the cluster
        size, scikit-learn's default, since the paper names only
        ``min_cluster_size``; 1 is single linkage, as FLAME.  See
        :func:`fedsec.defenses.selection.hdbscan_majority`.
    recorder, truth
        As for :class:`~strategies.wrapper.FilteringStrategy`.

    Every round's record holds ``layered_step1``: ``status`` (``applied``,
    ``skipped-stale`` when more than half of the updates had a negative cosine,
    ``no-reference`` in round 1, ``off``), ``applied`` (bool), ``negative`` (the
    number of negative cosines, ``None`` without a reference) and ``updates``
    (the round's number of updates).
    """

    def __init__(
        self,
        *,
        inner: Strategy,
        drop_negative: bool = True,
        cluster: bool = True,
        clip: bool = False,
        min_samples: int | None = None,
        recorder: RunRecorder | None = None,
        truth: GroundTruth | None = None,
    ) -> None:
        if min_samples is not None and (
            isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1
        ):
            raise ValueError(f"min_samples must be None or an integer >= 1, got {min_samples!r}")
        for name, flag in (("drop_negative", drop_negative), ("cluster", cluster), ("clip", clip)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        super().__init__(inner=inner, name="layered", recorder=recorder, truth=truth)
        self.drop_negative = drop_negative
        self.cluster = cluster
        self.clip = clip
        self.min_samples = min_samples
        #: Flattened previous global update, ``None`` until two global models were sent.
        self.previous_global_update: np.ndarray | None = None
        self._last_sent: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"LayeredDefense(drop_negative={self.drop_negative}, cluster={self.cluster}, "
            f"clip={self.clip}, min_samples={self.min_samples}, {self.inner!r})"
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        instructions = super().configure_train(server_round, arrays, config, grid)
        assert self.global_arrays is not None
        current = flatten_arrays(self.global_arrays)
        if self._last_sent is not None and self._last_sent.shape == current.shape:
            moved = current - self._last_sent
            if np.any(moved != 0):
                self.previous_global_update = moved
            else:
                logger.info(
                    "round %s: the global model did not move; keeping the earlier global update",
                    server_round,
                )
        self._last_sent = current
        return instructions

    def checkpoint_state(self) -> dict[str, Any]:
        """The reference direction and the last global model seen (what round ``r + 1`` compares with)."""
        return {"previous_global_update": self.previous_global_update, "last_sent": self._last_sent}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.previous_global_update = state.get("previous_global_update")
        self._last_sent = state.get("last_sent")

    def select_batch(self, server_round: int, batch: RoundBatch) -> Verdict:
        deltas = batch.updates
        labels = list(batch.labels)
        selection = layered_selection(
            deltas,
            previous_global_update=self.previous_global_update,
            drop_negative=self.drop_negative,
            cluster=self.cluster,
            min_samples=self.min_samples,
        )
        record: dict[str, Any] = {
            "layered_step1": {
                "status": selection.step1,
                "applied": selection.step1 == "applied",
                "negative": selection.negative,
                "updates": len(labels),
            }
        }
        if selection.step1 == "skipped-stale":
            logger.info(
                "round %s: step 1 skipped (%s of %s updates negative)",
                server_round,
                selection.negative,
                len(labels),
            )
        if selection.cosines is not None:
            record["layered_cosine"] = {
                label: float(c) for label, c in zip(labels, selection.cosines, strict=True)
            }
        scales: dict[int, float] = {}
        if self.clip:
            bound, factors = median_norm_clip(deltas)
            scales = {i: float(factors[i]) for i in selection.kept if factors[i] < 1.0}
            record["layered_clip_norm"] = bound
            record["layered_clipped"] = {labels[i]: factor for i, factor in scales.items()}
        return Verdict(kept=selection.kept, dropped=dict(selection.dropped), record=record, scales=scales)


class ServerDistillation(StrategyWrapper):
    """Fine-tune every aggregate of ``inner`` with self-attention distillation on a clean set.

    Parameters
    ----------
    inner
        Any Message-API strategy; its aggregated arrays are the starting point.
    model
        A network of the run's architecture (its ``state_dict`` matches the
        global parameters); reused every round, loaded with the aggregate first.
    clean
        The server's clean split (at least one example).
    delta
        Weight ``δ`` of the distillation loss, finite and >= 0.
    epochs
        Distillation epochs per round, >= 1.
    learning_rate
        SGD learning rate (no momentum), finite and > 0.
    batch_size
        Mini-batch size, >= 1.
    seed
        Run seed; batches are shuffled by ``torch_generator(seed, SERVER_DISTILL_STREAM, round)``.
    recorder
        Where ``server_distill_loss`` goes; ``None`` only logs it.
    device
        Where the distillation runs (``model`` is moved there; the clean set stays
        on the CPU and goes there batch by batch).  ``None``: the CPU.
    """

    def __init__(
        self,
        *,
        inner: Strategy,
        model: nn.Module,
        clean: TensorSplit,
        delta: float,
        epochs: int,
        learning_rate: float,
        batch_size: int,
        seed: int,
        recorder: RunRecorder | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inner=inner)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(clean, TensorSplit) or len(clean.y) == 0:
            raise ValueError("clean must be a non-empty TensorSplit (the server's clean set)")
        if not is_real(delta) or not math.isfinite(delta) or delta < 0:
            raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
        if not is_int(epochs) or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
        if not is_real(learning_rate) or not math.isfinite(learning_rate) or learning_rate <= 0:
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.model = model.to(self.device)
        self.clean = clean
        self.delta = float(delta)
        self.epochs = int(epochs)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.recorder = recorder

    def __repr__(self) -> str:
        return f"ServerDistillation(delta={self.delta}, epochs={self.epochs}, {self.inner!r})"

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        keys = list(arrays.keys())
        set_weights(self.model, arrays.to_numpy_ndarrays())
        optimizer = make_optimizer("sgd", self.model.parameters(), lr=self.learning_rate)
        loss = distill(
            self.model,
            self.clean.x,
            self.clean.y,
            delta=self.delta,
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=optimizer,
            generator=torch_generator(self.seed, SERVER_DISTILL_STREAM, server_round),
            device=self.device,
        )
        logger.info("round %s: server distillation loss %.4f", server_round, loss)
        if self.recorder is not None:
            self.recorder.note(server_round, server_distill_loss=float(loss))
        return to_arrayrecord(get_weights(self.model), keys), metrics
