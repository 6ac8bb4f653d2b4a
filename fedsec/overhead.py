"""Training-step overhead of one model against another, measured side by side in one run.

DiPSeN's paper reports that its noise and self-normalizing layers add +0.9% to
a training step.  :func:`step_overhead` times SGD steps of several models on the
same batch, interleaving the models in each repetition so that machine noise
affects them alike, and reports the median milliseconds per step of each and
the ratio of each to the reference.  The steps run where the models and the
batch are; on CUDA the clock waits for the GPU (``torch.cuda.synchronize``)
before it is read.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional

Timer = Callable[[], float]


def _sgd_steps(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, optimizer: torch.optim.Optimizer
) -> None:
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_overhead(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    reference: str,
    steps: int = 10,
    repetitions: int = 11,
    timer: Timer = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """``{name: {"ms_per_step": m, "ratio": m / m_reference}}`` for every model.

    Each repetition runs ``steps`` SGD steps of every model in turn (after one
    untimed warm-up repetition); the median over repetitions is reported.  The
    models and ``x``, ``y`` must be on one device.
    """
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models: {', '.join(models)}")
    if steps < 1 or repetitions < 1:
        raise ValueError(f"steps and repetitions must be >= 1, got {steps}, {repetitions}")
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01) for name, m in models.items()}
    for name, model in models.items():
        model.train()
        _sgd_steps(model, x, y, 1, optimizers[name])  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repetitions):
        for name, model in models.items():
            _synchronize(x.device)
            start = timer()
            _sgd_steps(model, x, y, steps, optimizers[name])
            _synchronize(x.device)
            samples[name].append((timer() - start) * 1000.0 / steps)
    return ratios({name: statistics.median(values) for name, values in samples.items()}, reference=reference)


def ratios(ms_per_step: Mapping[str, float], *, reference: str) -> dict[str, dict[str, float]]:
    """Attach the ratio to ``reference`` to each model's milliseconds per step."""
    base = ms_per_step[reference]
    if base <= 0:
        raise ValueError(f"reference time must be > 0, got {base}")
    return {name: {"ms_per_step": ms, "ratio": ms / base} for name, ms in ms_per_step.items()}
