"""``fedsec bench``: what a round, a defense and an attack cost, next to their references (issue #8).

Every figure is measured in the same run as its reference, so that the ratio holds
on a noisy machine.  One module per thing measured:

- :mod:`~simulations.bench.rounds` — section 1, a round of N=10 clients through
  ``flwr run`` on Flower's Ray simulation engine against the same round done in
  process (the compute floor); startup and round 1 reported apart.
- :mod:`~simulations.bench.aggregation` — section 2, ms per ``aggregate_train`` on
  synthetic updates for every defense (inside fedsec's update guard) at 1 and 2
  threads, next to its numpy floor (:mod:`~simulations.bench.floors`), Flower's and
  ByzFL's version of it (:mod:`~simulations.bench.peers`) and Flower's unguarded
  FedAvg, by number of clients and model; and each one's share of a round.
- :mod:`~simulations.bench.attacks` — section 3, seconds per 100 images per evasion
  attack against plain batched torch or ART at its default batch size.
- :mod:`~simulations.bench.memory` — section 4, peak memory of a simulation's
  processes and per Ray actor (and the ``flwr run`` driver the other sections use).
- :mod:`~simulations.bench.imports` — section 4b, RSS of a fresh interpreter after each
  import a client process makes, then after the libraries only some roles import.
- :mod:`~simulations.bench.scale` — section 5, 1000 simulated clients, a fraction
  sampled per round.

:mod:`~simulations.bench.common` holds the plan, the context and the timing and
thread helpers; :mod:`~simulations.bench.findings` the notes;
:mod:`~simulations.bench.report` the tables (rich and Markdown);
:func:`~simulations.bench.main.run_bench` runs it all and writes ``bench.json``
(layout: :func:`fedsec.bench.bench_document`) and ``bench.md``.  ``--quick``
shrinks every section to fit in a few minutes and skips whatever its deadline
would not allow, saying so in the row.
"""

from __future__ import annotations

from simulations.bench.aggregation import bench_aggregation, fill_round_shares, synthetic_replies
from simulations.bench.attacks import bench_attacks, frozen
from simulations.bench.common import BENCH_FILE, MARKDOWN_FILE, BenchPlan, Context
from simulations.bench.main import run_bench
from simulations.bench.memory import MemorySampler, simulate
from simulations.bench.report import COLUMNS, TITLES, markdown, print_tables
from simulations.bench.rounds import bench_simulation, compute_floor

__all__ = [
    "BENCH_FILE",
    "COLUMNS",
    "MARKDOWN_FILE",
    "TITLES",
    "BenchPlan",
    "Context",
    "MemorySampler",
    "bench_aggregation",
    "bench_attacks",
    "bench_simulation",
    "compute_floor",
    "fill_round_shares",
    "frozen",
    "markdown",
    "print_tables",
    "run_bench",
    "simulate",
    "synthetic_replies",
]
