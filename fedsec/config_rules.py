"""Rules between run-config keys: combinations that each key allows alone but not together.

Each rule takes a :class:`~fedsec.config.RunConfig` whose keys passed their own
checks and returns ``None`` when the combination is allowed, else the whole
:class:`~fedsec.errors.ConfigError` message (naming the keys and what to change).
:func:`combination_problem` returns the first rule's complaint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fedsec.config_values import PAPER_ATTACKS

if TYPE_CHECKING:
    from fedsec.config import RunConfig

__all__ = ["RULES", "combination_problem"]


def _source_is_not_target(config: RunConfig) -> str | None:
    if config.attack_source != config.attack_target:
        return None
    return f"config keys 'attack-source' and 'attack-target' must differ, both are {config.attack_source}"


def _perfect_knowledge_without_node_state(config: RunConfig) -> str | None:
    if not (config.perfect_knowledge_hook and config.edge_defense and config.abl_schedule == "phased"):
        return None
    return (
        "config key 'perfect-knowledge-hook' rebuilds benign clients without their node state, "
        "but edge-defense with abl-schedule = 'phased' keeps the isolated set in it: the "
        "colluders' 'perfect' estimate would differ from what benign nodes send"
    )


def _attack_ends_after_it_starts(config: RunConfig) -> str | None:
    if not config.attack_end_round or config.attack_end_round >= config.attack_start_round:
        return None
    return (
        f"config key 'attack-end-round' must be 0 or >= attack-start-round "
        f"({config.attack_start_round}), got {config.attack_end_round}"
    )


def _paper_harness_runs_paper_attacks(config: RunConfig) -> str | None:
    if "paper" not in {h.strip() for h in config.robust_harness.split(",")}:
        return None
    extra = sorted({a.strip() for a in config.robust_attacks.split(",") if a.strip()} - PAPER_ATTACKS)
    if not extra:
        return None
    return (
        f"config key 'robust-harness' includes 'paper', which runs fgsm, bim, pgd only; "
        f"robust-attacks also names {', '.join(extra)}"
    )


def _momentum_needs_sgd(config: RunConfig) -> str | None:
    if config.optimizer == "sgd" or config.momentum == 0.0:
        return None
    return (
        f"config key 'momentum' applies to optimizer 'sgd' only; set momentum=0 with "
        f"optimizer={config.optimizer!r}"
    )


#: Every rule, in the order they are checked.
RULES: tuple[Callable[[RunConfig], str | None], ...] = (
    _source_is_not_target,
    _perfect_knowledge_without_node_state,
    _attack_ends_after_it_starts,
    _paper_harness_runs_paper_attacks,
    _momentum_needs_sgd,
)


def combination_problem(config: RunConfig) -> str | None:
    """The first rule ``config`` breaks (its error message), or ``None``."""
    for rule in RULES:
        problem = rule(config)
        if problem is not None:
            return problem
    return None
