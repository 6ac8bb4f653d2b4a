"""The peers of fedsec's aggregators: Flower's own strategies and ByzFL's aggregators, on the same replies.

Flower's versions (``flower-<name>`` in fedsec's registry) run unguarded, as a
plain Flower app uses them.  ByzFL (``byzfl``, a bench-only extra) aggregates an
``(n, d)`` matrix; to compare like with like its cell includes decoding the
replies into that matrix and turning the result back into an ``ArrayRecord``.
ByzFL is given a torch tensor for Krum and Multi-Krum (its torch path computes
distances with ``torch.cdist``; its numpy path with scipy in float64) and a
numpy array for the others, the faster input of each on this bench's sizes.

ByzFL's Krum(f) scores each update by its ``n − f − 1`` nearest others and
Multi-Krum(f) averages the ``n − f`` best, unweighted; Blanchard et al.'s Krum,
Flower's and fedsec's use ``n − f − 2`` neighbours.  The bench gives ByzFL
``f + 1`` and fedsec's and Flower's Multi-Krum ``n − f − 1`` updates to keep, so
all three compute the same rule; ByzFL's TrMean(f) cuts ``f = int(beta · n)``
values from each end, as FedTrimmedAvg(beta) does.  ByzFL 0.0.11 has no Bulyan.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, Message
from flwr.serverapp.strategy import Strategy

from fedsec.config import RunConfig
from simulations.bench.floors import decode_matrix, layout
from strategies.messages import to_arrayrecord

__all__ = [
    "BYZFL",
    "FLOWER",
    "NOT_INSTALLED",
    "ByzflPeer",
    "byzfl_aggregate",
    "byzfl_available",
    "flower_strategy",
]

#: fedsec's aggregator -> Flower's version of it in fedsec's registry.
FLOWER = {
    "fedavg": "flower-fedavg",
    "krum": "flower-krum",
    "multikrum": "flower-multikrum",
    "fedmedian": "flower-fedmedian",
    "fedtrimmedavg": "flower-fedtrimmedavg",
    "bulyan": "flower-bulyan",
}

NOT_INSTALLED = "ByzFL not installed (pip install -e .[bench]; make installs it)"


@dataclass(frozen=True)
class ByzflPeer:
    """A ByzFL aggregator class, the input type it gets, and how its ``f`` follows from the run's."""

    name: str
    tensor: bool
    f: Callable[[int, int, float], int | None]  # (n, f, beta) -> ByzFL's f; None: the class takes none

    def describe(self, n: int, f: int, beta: float) -> str:
        value = self.f(n, f, beta)
        args = "" if value is None else f"f={value}"
        return f"byzfl.{self.name}({args}), {'torch' if self.tensor else 'numpy'} input"

    def build(self, n: int, f: int, beta: float) -> Callable[[object], object]:
        import byzfl

        cls = getattr(byzfl, self.name)
        value = self.f(n, f, beta)
        return cls() if value is None else cls(f=value)


#: fedsec's aggregator -> ByzFL's version of it.
BYZFL = {
    "fedavg": ByzflPeer("Average", tensor=False, f=lambda n, f, beta: None),
    "krum": ByzflPeer("Krum", tensor=True, f=lambda n, f, beta: f + 1),
    "multikrum": ByzflPeer("MultiKrum", tensor=True, f=lambda n, f, beta: f + 1),
    "fedmedian": ByzflPeer("Median", tensor=False, f=lambda n, f, beta: None),
    "fedtrimmedavg": ByzflPeer("TrMean", tensor=False, f=lambda n, f, beta: int(beta * n)),
}


def byzfl_available() -> bool:
    """Whether ByzFL can be imported (``pip install -e '.[bench]'``)."""
    return importlib.util.find_spec("byzfl") is not None


def flower_strategy(name: str, config: RunConfig, initial: list[np.ndarray], grid: object) -> Strategy:
    """Flower's strategy ``name`` (``flower-<...>``) unguarded, after ``configure_train`` of round 1."""
    from flwr.app import ConfigRecord

    from strategies import STRATEGIES, flower_kwargs
    from strategies.wrapper import ServerEnv

    if not name.startswith("flower-"):
        raise ValueError(f"{name!r} is not one of Flower's strategies in fedsec's registry")
    strategy = STRATEGIES[name](config, flower_kwargs(config), ServerEnv())
    list(strategy.configure_train(1, ArrayRecord(initial), ConfigRecord(), grid))  # type: ignore[arg-type]
    return strategy


def _unflatten(vector: np.ndarray, shapes: Sequence[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
    out, start = [], 0
    for shape, dtype in shapes:
        size = int(np.prod(shape))
        out.append(vector[start : start + size].reshape(shape).astype(dtype, copy=False))
        start += size
    return out


def byzfl_aggregate(
    label: str,
    replies: Sequence[Message],
    *,
    f: int,
    beta: float,
    aggregator: Callable[[object], object] | None = None,
) -> ArrayRecord:
    """ByzFL's version of ``label`` on ``replies``: decode, aggregate, back to an ``ArrayRecord``.

    ``aggregator``: ``BYZFL[label].build(...)`` made beforehand (a timed call should not import ByzFL).
    """
    peer = BYZFL[label]
    if aggregator is None:
        aggregator = peer.build(len(replies), f, beta)
    matrix = decode_matrix(replies)
    result = aggregator(torch.from_numpy(matrix) if peer.tensor else matrix)
    vector = result.numpy() if isinstance(result, torch.Tensor) else np.asarray(result)
    return to_arrayrecord(_unflatten(np.asarray(vector, dtype=np.float32), layout(replies[0])))
