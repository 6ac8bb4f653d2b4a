"""What every bench section shares: the plan, the context, the machine, timing and thread helpers."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from fedsec.bench import Budget, cpu_model, measure_samples
from fedsec.config import RunConfig
from fedsec.config_values import ConfigValue
from fedsec.contexts import torch_threads

BENCH_FILE = "bench.json"
MARKDOWN_FILE = "bench.md"
MNIST_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
MB = 1024 * 1024
#: The strategies the issue names; quick mode benchmarks only these.
ISSUE_STRATEGIES = (
    "fedavg",
    "krum",
    "fedmedian",
    "fda3",
    "layered",
    "flame",
    "foolsgold",
    "detectors",
    "gan-audit",
)


@dataclass(frozen=True)
class BenchPlan:
    """Sizes of every section; :meth:`for_mode` gives the quick and the full plan."""

    quick: bool
    sim_models: tuple[str, ...]
    sim_rounds: dict[str, int]
    #: (model, clients) simulations beside the 10-client ones: the round a defense's share at that many
    #: clients is also taken against (every client training, the same data split more ways).
    sim_extra: tuple[tuple[str, int], ...]
    local_epochs: int | None  # None: the quickstart scenario's
    floor_rounds: int
    floor_one_thread_clients: int | None  # clients fitted for the 1-thread floor (scaled to N); None: all
    agg_sizes: dict[str, tuple[int, ...]]
    agg_strategies: tuple[str, ...] | None  # None: every defense and robust aggregator
    agg_repeat: int
    agg_cell_seconds: float
    #: (model, clients) cells also measured with 2 BLAS/torch threads (every cell runs with 1).
    agg_two_thread_cells: tuple[tuple[str, int], ...]
    attack_images: int
    simba_images: int
    art_default_images: int
    memory_clients: tuple[int, ...]
    memory_rounds: int
    scale_fractions: tuple[float, ...]
    scale_clients: int
    scale_rounds: int
    #: Federation sizes tried, ascending, at ``scale_search_fraction`` until one does not complete its
    #: ``scale_search_rounds`` within ``scale_search_seconds`` (the largest that does is reported).
    scale_search: tuple[int, ...]
    scale_search_fraction: float
    scale_search_rounds: int
    scale_search_seconds: float
    #: One-round runs timed alone and in a shared federation (start-up section); < 2 skips it.
    startup_runs: int
    deadline_seconds: float

    @classmethod
    def for_mode(cls, *, quick: bool) -> BenchPlan:
        if quick:
            return cls(
                quick=True,
                sim_models=("lenet", "cnn"),
                sim_rounds={"lenet": 3, "cnn": 2},
                sim_extra=(),
                local_epochs=1,
                floor_rounds=1,
                floor_one_thread_clients=2,
                agg_sizes={"lenet": (20,), "cnn": (100,)},
                agg_strategies=ISSUE_STRATEGIES,
                agg_repeat=1,
                agg_cell_seconds=6.0,
                agg_two_thread_cells=(("cnn", 100),),
                attack_images=100,
                simba_images=2,
                art_default_images=10,
                memory_clients=(10,),
                memory_rounds=2,
                scale_fractions=(),
                scale_clients=1000,
                scale_rounds=2,
                scale_search=(),
                scale_search_fraction=0.1,
                scale_search_rounds=2,
                scale_search_seconds=0.0,
                startup_runs=2,
                deadline_seconds=290.0,
            )
        return cls(
            quick=False,
            sim_models=("lenet", "cnn"),
            sim_rounds={"lenet": 5, "cnn": 5},
            sim_extra=(("cnn", 100),),
            local_epochs=None,
            floor_rounds=2,
            floor_one_thread_clients=None,
            agg_sizes={"lenet": (20, 100, 200), "cnn": (20, 100, 200)},
            agg_strategies=None,
            agg_repeat=3,
            agg_cell_seconds=60.0,
            agg_two_thread_cells=(("lenet", 100), ("cnn", 100), ("cnn", 200)),
            attack_images=100,
            simba_images=5,
            art_default_images=100,
            memory_clients=(10, 100),
            memory_rounds=2,
            scale_fractions=(0.01, 0.1),
            scale_clients=1000,
            scale_rounds=3,
            scale_search=(2000, 4000, 8000),
            scale_search_fraction=0.1,
            scale_search_rounds=2,
            scale_search_seconds=600.0,
            startup_runs=5,
            deadline_seconds=math.inf,
        )


@dataclass
class Context:
    """What the sections share: plan, output directory, deadline, console, and cross-section results."""

    plan: BenchPlan
    out: Path
    console: Console
    budget: Budget
    started: float = field(default_factory=time.perf_counter)
    round_seconds: dict[str, float] = field(default_factory=dict)  # model -> steady 10-client round (s)
    #: (model, clients) -> steady simulated round (s), the 10-client ones and ``plan.sim_extra``'s
    rounds_at: dict[tuple[str, int], float] = field(default_factory=dict)
    floor_seconds: dict[str, float] = field(default_factory=dict)  # model -> floor round (s)
    notes: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.started:6.1f}s[/dim] {message}")


def scenario_config(overrides: dict[str, ConfigValue]) -> RunConfig:
    """The quickstart scenario's config with ``overrides`` (the bench's common baseline)."""
    from simulations.scenarios import load_scenario

    return load_scenario("quickstart").config(overrides)


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Cores, GPU, CPU model, memory and the versions that matter."""
    cpu = cpu_model()
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "gpu": bool(torch.cuda.is_available()),
        "cpu": cpu,
        "memory_gb": memory_gb,
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flwr": package_version("flwr"),
        "ray": package_version("ray"),
        "art": package_version("adversarial-robustness-toolbox"),
        "numpy": np.__version__,
        "byzfl": package_version("byzfl"),
    }


def time_cell(fn: Callable[[], object], *, repeat: int, cell_seconds: float) -> tuple[float, int]:
    """Median seconds of ``fn`` over up to ``repeat`` calls that fit in ``cell_seconds``; and the count."""
    samples = measure_samples(fn, repeat=1)
    more = min(repeat - 1, int(cell_seconds / max(samples[0], 1e-9)) - 1)
    if more > 0:
        samples += measure_samples(fn, repeat=more)
    return float(statistics.median(samples)), len(samples)


@contextlib.contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """At most ``n`` threads for torch and for every BLAS/OpenMP pool numpy and scipy use (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    with torch_threads(n), threadpool_limits(limits=n):
        yield


def rounded(value: float | None, digits: int) -> float | None:
    """``round(value, digits)``; None for None, NaN or infinity."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
