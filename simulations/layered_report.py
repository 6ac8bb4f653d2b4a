"""Tables of a run of the layered backdoor defense, from its per-round records.

Implements the bookkeeping for the server layer of "A layered defense framework
for edge-computing intelligent services": step 1 (drop updates with a negative
cosine to the previous global update) is skipped in a round where more than
half of the updates are negative (:func:`fedsec.defenses.selection.layered_selection`).
Each round records what happened under ``layered_step1``
(:class:`strategies.layered.LayeredDefense`); this module counts it per run:

* ``Layered defense: step 1 (negative-cosine drop)`` — row = the run's attack
  (variant), columns ``<defense> step 1 applied`` (rounds in which step 1 ran),
  ``<defense> step 1 rounds`` (rounds in which it could run: a previous global
  update existed and the step was on), so a cell pair reads "step 1 applied in
  X of Y rounds", and ``<defense> negative updates (mean)`` (the mean number of
  updates per round with a negative cosine over those rounds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedsec.config import RunConfig
from simulations.poisoning_report import row_name

STEP1_TABLE = "Layered defense: step 1 (negative-cosine drop)"
#: ``layered_step1.status`` values of the rounds in which step 1 could run.
JUDGED = ("applied", "skipped-stale")

Rounds = Sequence[Mapping[str, Any]]


def step1_counts(rounds: Rounds) -> dict[str, Any] | None:
    """``{"applied": X, "rounds": Y, "negative": mean}`` over the rounds that recorded step 1.

    ``None`` when no round recorded ``layered_step1`` (the run did not use the
    layered strategy); ``negative`` is ``None`` when no round could run step 1.
    """
    records = [r["layered_step1"] for r in rounds if isinstance(r.get("layered_step1"), Mapping)]
    if not records:
        return None
    judged = [s for s in records if s.get("status") in JUDGED]
    negatives = [int(s["negative"]) for s in judged if s.get("negative") is not None]
    return {
        "applied": sum(1 for s in judged if s.get("status") == "applied"),
        "rounds": len(judged),
        "negative": sum(negatives) / len(negatives) if negatives else None,
    }


def layered_tables(config: RunConfig, rounds: Rounds) -> dict[str, dict[str, dict[str, Any]]]:
    """The step-1 table of one run (empty when the run did not use the layered strategy)."""
    counts = step1_counts(rounds)
    if counts is None:
        return {}
    column = config.defense or config.strategy
    return {
        STEP1_TABLE: {
            row_name(config): {
                f"{column} step 1 applied": counts["applied"],
                f"{column} step 1 rounds": counts["rounds"],
                f"{column} negative updates (mean)": counts["negative"],
            }
        }
    }
