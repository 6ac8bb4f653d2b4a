"""Run-config values: their type, the checks :class:`~fedsec.config.RunConfig`'s fields name, and parsing.

A check takes a key's value and returns ``None`` if the value is allowed, else what
it must be (the middle of the :class:`~fedsec.errors.ConfigError` message "config key
K must be ..., got V").  :func:`_coerce` accepts a raw Flower value for a key whose
default has a given type, and :func:`parse_assignment` reads one ``KEY=VALUE``
override of the command line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from typing import Any

from fedsec.errors import ConfigError

__all__ = ["PAPER_ATTACKS", "ROBUST_HARNESSES", "ConfigValue", "parse_assignment"]

#: A Flower run-config value.
ConfigValue = bool | int | float | str


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"one of: {', '.join(allowed)}"

    return check


def _at_least(low: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value >= low else f">= {low:g}"

    return check


def _positive(value: Any) -> str | None:
    return None if value > 0 else "> 0"


def _fraction(value: Any) -> str | None:
    return None if 0.0 < value <= 1.0 else "in (0, 1]"


def _half_open_fraction(value: Any) -> str | None:
    return None if 0.0 <= value < 0.5 else "in [0, 0.5)"


def _unit(value: Any) -> str | None:
    return None if 0.0 <= value < 1.0 else "in [0, 1)"


def _open_unit(value: Any) -> str | None:
    return None if 0.0 < value < 1.0 else "in (0, 1)"


#: Attack harnesses of ``robust-harness`` (see :mod:`fedsec.attacks.harness`).
ROBUST_HARNESSES = ("logits", "paper")
#: The attacks the paper harness runs (DiPSeN's).
PAPER_ATTACKS = frozenset({"fgsm", "bim", "pgd"})


def _harnesses(value: Any) -> str | None:
    pieces = [p.strip() for p in str(value).split(",")]
    ok = pieces and all(p in ROBUST_HARNESSES for p in pieces) and len(set(pieces)) == len(pieces)
    return None if ok else f"a comma-separated list of distinct harnesses from: {', '.join(ROBUST_HARNESSES)}"


def _unit_interval(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else "in [0, 1]"


def _zero_or_above_one(value: Any) -> str | None:
    return None if value == 0 or value > 1 else "0 (off) or > 1"


def _attack_sizes(value: Any) -> str | None:
    """``"simba=500,cw2=500"``: attack names with positive integer sizes (names are checked by the parser)."""
    for item in (part.strip() for part in str(value).split(",")):
        name, sep, size = item.partition("=")
        if item and not (sep and name.strip() and size.strip().isdigit() and int(size) >= 1):
            return "'ATTACK=N,...' with N >= 1, e.g. 'simba=500,cw2=500'"
    return None


def _absolute_or_empty(value: Any) -> str | None:
    return None if value == "" or os.path.isabs(value) else "an absolute path (or empty for no records)"


def _registry_names(kind: str) -> tuple[str, ...]:
    # Imported lazily: the registries import torch, which this module need not.
    if kind == "dataset":
        from fedsec.data import DATASETS

        return tuple(DATASETS)
    if kind == "model":
        from fedsec.models import MODELS

        return tuple(MODELS)
    from fedsec.training import OPTIMIZERS

    return tuple(OPTIMIZERS)


def _coerce(key: str, raw: Any, expected: type) -> ConfigValue:
    """Accept ``raw`` for a key whose default has type ``expected``."""
    if expected is bool:
        if isinstance(raw, bool):
            return raw
    elif expected is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
    elif expected is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
    elif expected is str and isinstance(raw, str):
        return raw
    raise ConfigError(f"config key {key!r} must be a {expected.__name__}, got {raw!r}")


def parse_assignment(text: str) -> tuple[str, ConfigValue]:
    """Parse one ``KEY=VALUE`` override; VALUE is read as a TOML literal, else a string.

    >>> parse_assignment("learning-rate=0.1")
    ('learning-rate', 0.1)
    >>> parse_assignment("strategy=krum")
    ('strategy', 'krum')
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like KEY=VALUE")
    value = value.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    if not isinstance(parsed, bool | int | float | str):
        raise ConfigError(f"override {key!r}: value must be a bool, number or string, got {value!r}")
    return key, parsed
