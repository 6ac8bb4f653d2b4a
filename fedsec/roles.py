"""Partition-id lists and the client-role map of a scenario.

Flower's run config holds flat values, so scenarios write sets of partition
ids compactly: ``7``, ``0-4``, ``0+3+7-9``, or ``all``.  A scenario's ``roles`` key maps
roles to such id sets, ``"fda3-device:0-9"`` or ``"boosted:0,colluding:1-2"``;
partitions it does not list are ``benign``.  The role names themselves are
checked against the client registry (``clients.CLIENT_ROLES``) by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fedsec.errors import ConfigError

ROLES_KEY = "roles"
DEFAULT_ROLE = "benign"
_NUMBER = re.compile(r"\d+")


def piece_error(key: str, piece: str, problem: str) -> ConfigError:
    """``ConfigError`` naming the config key and the offending piece of its value."""
    return ConfigError(f"config key {key!r}: piece {piece!r} {problem}")


def parse_ids(key: str, piece: str, text: str, num_partitions: int) -> tuple[int, ...]:
    """Parse ``a``, ``a-b``, ``+``-joined combinations, or ``all``, into sorted unique ids."""
    if text.strip() == "all":
        return tuple(range(num_partitions))
    ids: set[int] = set()
    for item in text.split("+"):
        item = item.strip()
        low_text, dash, high_text = item.partition("-")
        low_text, high_text = low_text.strip(), high_text.strip()
        if not _NUMBER.fullmatch(low_text) or (dash and not _NUMBER.fullmatch(high_text)):
            raise piece_error(
                key, piece, f"is malformed: partition ids {item!r} must be a number or a range a-b"
            )
        low = int(low_text)
        high = int(high_text) if dash else low
        if high < low:
            raise piece_error(key, piece, f"has an empty range {item!r} (start > end)")
        if high >= num_partitions:
            raise piece_error(key, piece, f"has partition id {high} out of range [0, {num_partitions})")
        ids.update(range(low, high + 1))
    return tuple(sorted(ids))


def describe_ids(ids: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` for compact messages."""
    ordered = sorted(set(ids))
    spans: list[str] = []
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[start], ordered[end]
        spans.append(str(first) if first == last else f"{first}-{last}")
        start = end + 1
    return ", ".join(spans) or "none"


def parse_roles(text: str, num_partitions: int) -> dict[int, str]:
    """Role of every partition in ``[0, num_partitions)`` from a ``roles`` value.

    >>> parse_roles("boosted:0,colluding:1-2", 4)
    {0: 'boosted', 1: 'colluding', 2: 'colluding', 3: 'benign'}
    """
    roles = dict.fromkeys(range(num_partitions), DEFAULT_ROLE)
    assigned: dict[int, str] = {}
    for piece in (p.strip() for p in text.split(",")) if text.strip() else ():
        name, colon, ids_text = piece.partition(":")
        name = name.strip()
        if not colon or not name or not ids_text.strip():
            raise piece_error(ROLES_KEY, piece, "is malformed: expected ROLE:IDS, e.g. 'fda3-device:0-9'")
        for pid in parse_ids(ROLES_KEY, piece, ids_text, num_partitions):
            if pid in assigned and assigned[pid] != name:
                raise piece_error(
                    ROLES_KEY, piece, f"gives partition {pid} a second role (already {assigned[pid]!r})"
                )
            assigned[pid] = name
    roles.update(assigned)
    return roles
