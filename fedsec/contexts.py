"""Context managers that make model work reproducible and side-effect free.

:func:`seeded` seeds numpy's and torch's global generators for a block (ART's
attacks and the clean-label construction draw from them) and restores their
states; :func:`frozen_eval` puts a model in eval mode with frozen parameters and
restores its modes, ``requires_grad`` flags and gradients.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from fedsec.device import rng_devices

__all__ = ["frozen_eval", "seeded"]


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
