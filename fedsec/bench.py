"""Timing helpers for ``fedsec bench``: medians, ratios, budgets, the ``bench.json`` layout, attack floors.

The benchmark (issue #8) puts every figure next to a reference measured in the
same run (pure compute, Flower's own strategies, plain batched torch), so that a
ratio holds on a noisy machine even when the absolute seconds do not.  This
module holds the parts that need neither Flower nor a clock of their own:

* :func:`measure` — median wall time of a callable over repetitions, with an
  injectable timer (tests pass a stub and get exact medians);
* :func:`ratio`, :func:`per_100`, :func:`steady_round_seconds`,
  :func:`predict_seconds` — the arithmetic every table row uses;
* :class:`Budget` — a deadline that decides what still fits (quick mode);
* :func:`bench_document` — the layout of ``bench.json``;
* :func:`plain_fgsm` and :func:`plain_pgd` — the compute floor for fedsec's FGSM
  (Goodfellow et al., 2015) and PGD (Madry et al., 2018): the same attack in a few
  lines of batched torch, with the defaults of fedsec's registry.

Nothing here imports Flower.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "SECTIONS",
    "Budget",
    "Timer",
    "bench_document",
    "measure",
    "measure_samples",
    "per_100",
    "plain_fgsm",
    "plain_pgd",
    "predict_seconds",
    "ratio",
    "steady_fit_seconds",
    "steady_round_seconds",
]

#: A clock returning seconds (``time.perf_counter`` unless a test injects a stub).
Timer = Callable[[], float]

#: The sections of ``bench.json``, in the order the issue lists them.
SECTIONS: tuple[str, ...] = ("simulation", "startup", "aggregation", "attacks", "memory", "imports", "scale")

_SCALAR = (str, int, float, bool, type(None))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor or architecture."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------- timing


def measure_samples(
    fn: Callable[[], object], *, repeat: int, warmup: int = 0, timer: Timer = time.perf_counter
) -> list[float]:
    """Seconds of each of ``repeat`` timed calls of ``fn`` (after ``warmup`` untimed calls)."""
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = timer()
        fn()
        samples.append(timer() - start)
    return samples


def measure(
    fn: Callable[[], object], *, repeat: int, warmup: int = 0, timer: Timer = time.perf_counter
) -> float:
    """Median seconds of ``repeat`` timed calls of ``fn`` (after ``warmup`` untimed calls).

    Parameters
    ----------
    fn
        What to time; its result is discarded.
    repeat
        Timed calls, >= 1.
    warmup
        Untimed calls before the first timed one, >= 0.
    timer
        The clock; each timed call is ``timer()`` after minus ``timer()`` before.

    Returns
    -------
    float
        The median of the per-call durations.
    """
    return float(statistics.median(measure_samples(fn, repeat=repeat, warmup=warmup, timer=timer)))


# ---------------------------------------------------------------------------- arithmetic


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is not > 0."""
    if value is None or reference is None:
        return None
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return None
    return float(value) / float(reference)


def per_100(seconds: float, images: int) -> float:
    """Seconds per 100 images, from ``seconds`` spent on ``images`` images (>= 1)."""
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    return float(seconds) * 100.0 / images


def steady_round_seconds(records: Sequence[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """``(round 1 seconds, median seconds of rounds >= 2)`` from a run's ``metrics.jsonl`` records.

    Round 0 (the initial evaluation) is skipped; round 1 carries the client actors'
    warm-up, so it is returned separately.  Either value is None if its rounds are missing.
    """
    by_round = {int(r["round"]): float(r["seconds"]) for r in records if "seconds" in r}
    first = by_round.get(1)
    later = [s for rnd, s in sorted(by_round.items()) if rnd >= 2]
    return first, (float(statistics.median(later)) if later else None)


def steady_fit_seconds(records: Sequence[Mapping[str, Any]]) -> float | None:
    """The median over rounds >= 2 of ``fit_seconds`` (the seconds the round's clients spent in ``fit``,
    summed), or None if no such round recorded it."""
    values = [float(r["fit_seconds"]) for r in records if int(r["round"]) >= 2 and "fit_seconds" in r]
    return float(statistics.median(values)) if values else None


def predict_seconds(seconds: float, size: float, new_size: float, *, exponent: float) -> float:
    """Extrapolate ``seconds`` measured at ``size`` to ``new_size`` for an O(size**exponent) cost."""
    if size <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    return float(seconds) * (float(new_size) / float(size)) ** exponent


class Budget:
    """A wall-clock deadline: what is predicted to end after it is skipped.

    Parameters
    ----------
    seconds
        Seconds from now until the deadline; ``math.inf`` for none.
    timer
        The clock.
    """

    def __init__(self, seconds: float, *, timer: Timer = time.perf_counter) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.timer = timer
        self.deadline = timer() + seconds

    def left(self) -> float:
        """Seconds until the deadline (negative once past it)."""
        return self.deadline - self.timer()

    def allows(self, predicted: float) -> bool:
        """True if something predicted to take ``predicted`` seconds ends before the deadline."""
        return predicted <= self.left()


# ---------------------------------------------------------------------------- bench.json


def bench_document(
    *,
    date: str,
    machine: Mapping[str, Any],
    quick: bool,
    sections: Mapping[str, Sequence[Mapping[str, Any]]],
    notes: Sequence[str] = (),
    wall_seconds: float | None = None,
) -> dict[str, Any]:
    """The content of ``bench.json``.

    ``{"date", "machine", "quick", "sections": {name: [row, ...]}, "notes", "wall_seconds"}``
    with every section of :data:`SECTIONS` present (empty if it did not run) and each
    row a flat dict of JSON scalars (non-finite floats become None).

    Raises
    ------
    ValueError
        For an unknown section name or a row value that is not a scalar (naming it).
    """
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown bench sections {unknown}; known: {', '.join(SECTIONS)}")
    laid_out: dict[str, list[dict[str, Any]]] = {}
    for name in SECTIONS:
        rows = []
        for index, row in enumerate(sections.get(name, ())):
            flat: dict[str, Any] = {}
            for key, value in row.items():
                if not isinstance(value, _SCALAR):
                    raise ValueError(
                        f"section {name!r} row {index} key {key!r}: expected a scalar, "
                        f"got {type(value).__name__}"
                    )
                if isinstance(value, float) and not math.isfinite(value):
                    value = None
                flat[str(key)] = value
            rows.append(flat)
        laid_out[name] = rows
    return {
        "date": str(date),
        "machine": dict(machine),
        "quick": bool(quick),
        "sections": laid_out,
        "notes": [str(n) for n in notes],
        "wall_seconds": None if wall_seconds is None else round(float(wall_seconds), 1),
    }


# ---------------------------------------------------------------------------- attack floors


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def plain_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.3) -> torch.Tensor:
    """FGSM in batched torch: ``clip(x + eps·sign(∇x CE(model(x), y)), 0, 1)``.

    One forward and one backward pass over the whole batch; the model should be in
    eval mode (as fedsec's :func:`~fedsec.attacks.evasion.generate` puts it).
    """
    return (x + eps * _input_gradient(model, x, y).sign()).clamp(0.0, 1.0).detach()


def plain_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 0.3,
    eps_step: float = 0.01,
    max_iter: int = 40,
    random_init: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD in batched torch (BIM when ``random_init`` is False).

    Start from ``x`` plus uniform noise in ``[-eps, eps]`` (clipped to ``[0, 1]``),
    then ``max_iter`` times: step ``eps_step·sign(∇x CE)``, project onto the eps-ball
    around ``x``, clip to ``[0, 1]``.  Defaults are those of fedsec's ``pgd``.
    """
    adv = x.detach().clone()
    if random_init:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * (2 * eps) - eps
        adv = (adv + noise).clamp(0.0, 1.0)
    for _ in range(max_iter):
        adv = adv + eps_step * _input_gradient(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0.0, 1.0).detach()
    return adv
