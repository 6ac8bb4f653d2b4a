"""Context managers that make model work reproducible and side-effect free.

:func:`seeded` seeds numpy's and torch's global generators for a block (ART's
attacks and the clean-label construction draw from them) and restores their
states; :func:`frozen_eval` puts a model in eval mode with frozen parameters and
restores its modes, ``requires_grad`` flags and gradients; :func:`torch_threads`
sets torch's intra-op threads for a block.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from fedsec.device import rng_devices

__all__ = ["frozen_eval", "seeded", "torch_threads", "usable_cores"]


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed numpy's and torch's global generators (and ``device``'s); restore their states on exit.

    Any non-negative ``seed`` works (a 63-bit :func:`fedsec.experiment.derive_seed` included): numpy's
    legacy generator takes its low 32 bits.
    """
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=rng_devices(device)):
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters; restore modes, flags and grads on exit."""
    modes = [(module, module.training) for module in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` in the block (``0``: :func:`usable_cores`), restored after."""
    if n < 0:
        raise ValueError(f"threads must be >= 0, got {n}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n or usable_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
