"""The FDA³ attack monitor: which attack schemes each device uses, round by round.

In FDA³ (Song et al., "FDA³: Federated Defense Against Adversarial Attacks for
Cloud-Based IIoT Applications") the cloud holds an *attack monitor*: the library
of attack schemes it knows, and which schemes each device generates adversarial
examples with.  At the start every device gets its assigned schemes (the paper
gives one fifth of the devices to each of FGSM, BIM, JSMA, CW-L2 and DeepFool).
When a new attack is detected at round ``r``, the chosen devices download the
new scheme and use it, in addition to what they had, from round ``r`` on.

:class:`AttackMonitor` is that schedule as a frozen value; :meth:`AttackMonitor.from_config`
builds it from two flat run-config strings:

``fda3-assign``
    Comma-separated pieces, each one of

    * ``attack:ids`` — the attack for the listed partitions, ids being a
      number, a range ``a-b`` (inclusive) or several of those joined by ``+``:
      ``"fgsm:0-1,bim:2-3,jsma:4-5,cw2:6-7,deepfool:8-9"``, ``"fgsm:0+3+7-9"``.
      Repeat a partition to give it several schemes: ``"fgsm:0-9,bim:0"``.
    * ``round-robin:a+b+...`` — partition ``i`` gets attack ``i mod k``:
      ``"round-robin:fgsm+bim+jsma+cw2+deepfool"``.
    * ``even:a+b+...`` — contiguous equal blocks, partition ``i`` gets attack
      ``floor(i·k / num_partitions)`` (the paper's "one fifth per attack type"):
      ``"even:fgsm+bim+jsma+cw2+deepfool"``.

    ``round-robin`` and ``even`` are reserved words, not attack names.  Every
    partition in ``[0, num_partitions)`` must end up with at least one scheme.

``fda3-new-attacks``
    ``""`` (none) or ``;``-separated pieces ``attack@round:ids``, with ids as
    above: ``"pgd@10:0-1;simba@20:3"`` — partitions 0 and 1 add PGD from round
    10 on, partition 3 adds SimBA from round 20 on.

Pure Python: the Flower strategy asks :meth:`AttackMonitor.schemes_for` which
schemes to send each device, and logs :meth:`AttackMonitor.newly_added`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fedsec.errors import ConfigError
from fedsec.numbers import is_int
from fedsec.roles import describe_ids, parse_ids, piece_error

__all__ = ["ASSIGN_KEY", "DISTRIBUTIONS", "NEW_ATTACKS_KEY", "AttackMonitor", "NewAttack"]

ASSIGN_KEY = "fda3-assign"
NEW_ATTACKS_KEY = "fda3-new-attacks"
DISTRIBUTIONS = ("round-robin", "even")
"""Reserved words of ``fda3-assign`` that spread a list of attacks over all partitions."""

_NEW_ATTACK = re.compile(r"(?P<attack>[^@:]+)@(?P<round>[^@:]+):(?P<ids>[^@:]+)")


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class NewAttack:
    """A scheme some devices download when the cloud detects a new attack.

    Attributes
    ----------
    round
        First server round at which the devices use the scheme (>= 1).
    attack
        The attack's name.
    partitions
        The partition ids (devices) that download it; non-empty, no duplicates.
    """

    round: int
    attack: str
    partitions: tuple[int, ...]

    def __post_init__(self) -> None:
        if not is_int(self.round) or self.round < 1:
            raise ValueError(f"round must be an integer >= 1, got {self.round!r}")
        if not isinstance(self.attack, str) or not self.attack:
            raise ValueError(f"attack must be a non-empty string, got {self.attack!r}")
        partitions = tuple(self.partitions)
        if not partitions:
            raise ValueError("partitions must list at least one partition id")
        if not all(is_int(p) and p >= 0 for p in partitions):
            raise ValueError(f"partitions must be integers >= 0, got {partitions!r}")
        if len(set(partitions)) != len(partitions):
            raise ValueError(f"partitions must not repeat an id, got {partitions!r}")
        object.__setattr__(self, "partitions", partitions)


@dataclass(frozen=True)
class AttackMonitor:
    """The cloud's attack library and the schemes assigned to each device over time.

    Attributes
    ----------
    known
        Names of the attack schemes the cloud knows (its library); every
        assigned or added scheme must be one of them.
    assignments
        Partition id -> schemes used from round 1, each non-empty.  Stored as a
        read-only mapping ordered by partition id; repeated schemes are dropped.
    new_attacks
        Schemes added mid-run; stored sorted by round (ties keep their order).
        Every partition they list must be in ``assignments``.  Adding a scheme a
        device already uses has no effect on that device.

    Examples
    --------
    >>> monitor = AttackMonitor.from_config(
    ...     known={"fgsm", "bim", "simba"}, assign="fgsm:0,bim:1", new_attacks="simba@3:1",
    ...     num_partitions=2)
    >>> monitor.schemes_for(1, 2), monitor.schemes_for(1, 3)
    (('bim',), ('bim', 'simba'))
    """

    known: frozenset[str]
    assignments: Mapping[int, tuple[str, ...]]
    new_attacks: tuple[NewAttack, ...] = ()

    def __post_init__(self) -> None:
        known = frozenset(self.known)
        if not known:
            raise ValueError("known must name at least one attack")
        if not all(isinstance(name, str) and name for name in known):
            raise ValueError(f"known must hold non-empty strings, got {sorted(map(repr, known))}")
        listed = ", ".join(sorted(known))

        assignments: dict[int, tuple[str, ...]] = {}
        for pid in sorted(self.assignments):
            if not is_int(pid) or pid < 0:
                raise ValueError(f"assignments keys must be partition ids >= 0, got {pid!r}")
            schemes = self.assignments[pid]
            if isinstance(schemes, str):
                raise ValueError(f"assignments[{pid}] must be a sequence of attack names, not a string")
            schemes = _unique(schemes)
            if not schemes:
                raise ValueError(f"assignments[{pid}] must hold at least one attack scheme")
            for name in schemes:
                if name not in known:
                    raise ValueError(f"assignments[{pid}] names unknown attack {name!r}; known: {listed}")
            assignments[pid] = schemes

        additions = tuple(self.new_attacks)
        for index, addition in enumerate(additions):
            if not isinstance(addition, NewAttack):
                raise ValueError(f"new_attacks[{index}] must be a NewAttack, got {type(addition).__name__}")
            if addition.attack not in known:
                raise ValueError(
                    f"new_attacks[{index}] names unknown attack {addition.attack!r}; known: {listed}"
                )
            missing = [p for p in addition.partitions if p not in assignments]
            if missing:
                raise ValueError(f"new_attacks[{index}] lists partitions not in assignments: {missing}")

        object.__setattr__(self, "known", known)
        object.__setattr__(self, "assignments", MappingProxyType(assignments))
        object.__setattr__(self, "new_attacks", tuple(sorted(additions, key=lambda a: a.round)))

    def __hash__(self) -> int:  # the generated hash would fail on the mapping
        return hash((self.known, tuple(self.assignments.items()), self.new_attacks))

    # ------------------------------------------------------------------ queries
    @property
    def partitions(self) -> tuple[int, ...]:
        """The partition ids the monitor assigns schemes to, ascending."""
        return tuple(self.assignments)

    def schemes_for(self, partition_id: int, server_round: int) -> tuple[str, ...]:
        """The schemes a device uses in ``server_round``.

        Its assigned schemes first, then every :class:`NewAttack` that lists it
        and takes effect at or before ``server_round``, by round; no duplicates.

        Raises
        ------
        ValueError
            If ``partition_id`` has no assignment or ``server_round`` < 0.
        """
        self._check_round(server_round)
        if partition_id not in self.assignments:
            raise ValueError(
                f"partition_id {partition_id!r} has no assigned schemes; partitions: "
                f"{describe_ids(self.partitions)}"
            )
        schemes = list(self.assignments[partition_id])
        for addition in self.new_attacks:
            if addition.round <= server_round and partition_id in addition.partitions:
                schemes.append(addition.attack)
        return _unique(schemes)

    def newly_added(self, server_round: int) -> tuple[NewAttack, ...]:
        """The additions that take effect exactly in ``server_round`` (devices download them now)."""
        self._check_round(server_round)
        return tuple(a for a in self.new_attacks if a.round == server_round)

    def devices_for(self, attack: str, server_round: int) -> tuple[int, ...]:
        """The partition ids that use ``attack`` in ``server_round``, ascending.

        Raises
        ------
        ValueError
            If ``attack`` is not in :attr:`known` or ``server_round`` < 0.
        """
        if attack not in self.known:
            raise ValueError(f"attack {attack!r} is not known; known: {', '.join(sorted(self.known))}")
        return tuple(p for p in self.assignments if attack in self.schemes_for(p, server_round))

    @staticmethod
    def _check_round(server_round: int) -> None:
        if not is_int(server_round) or server_round < 0:
            raise ValueError(f"server_round must be an integer >= 0, got {server_round!r}")

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_config(
        cls, *, known: Collection[str], assign: str, new_attacks: str = "", num_partitions: int
    ) -> AttackMonitor:
        """Build the monitor from the ``fda3-assign`` and ``fda3-new-attacks`` strings.

        Parameters
        ----------
        known
            The attack names the cloud knows (e.g. ``fedsec.attacks.ATTACKS``).
        assign
            ``fda3-assign``: comma-separated ``attack:ids``,
            ``round-robin:a+b+...`` or ``even:a+b+...`` pieces, ids being
            numbers and inclusive ranges joined by ``+``.  Examples:
            ``"fgsm:0-1,bim:2-3,jsma:4-5,cw2:6-7,deepfool:8-9"`` (the paper's
            ten devices), ``"fgsm:0,bim:0,jsma:1-9"`` (partition 0 uses two
            schemes), ``"round-robin:fgsm+bim"`` (even ids FGSM, odd ids BIM),
            ``"even:fgsm+bim+jsma+cw2+deepfool"`` (one fifth each, contiguous).
        new_attacks
            ``fda3-new-attacks``: ``""`` or ``;``-separated ``attack@round:ids``,
            e.g. ``"pgd@10:0-1;simba@20:3"``.
        num_partitions
            Number of partitions (devices), >= 1; ids must be below it and each
            partition must receive at least one scheme from ``assign``.

        Raises
        ------
        ConfigError
            For a malformed piece, an unknown attack (listing the known ones),
            an id out of range, a round < 1, or a partition left without a
            scheme; the message names the config key and the offending piece.
        ValueError
            If ``num_partitions`` < 1 or ``known`` is empty.
        """
        if not is_int(num_partitions) or num_partitions < 1:
            raise ValueError(f"num_partitions must be an integer >= 1, got {num_partitions!r}")
        library = frozenset(known)
        if not library:
            raise ValueError("known must name at least one attack")
        assignments = _parse_assign(assign, library, num_partitions)
        additions = _parse_new_attacks(new_attacks, library, num_partitions)
        return cls(known=library, assignments=assignments, new_attacks=additions)


# ---------------------------------------------------------------------- DSL parsing


def _attack_name(key: str, piece: str, name: str, known: frozenset[str]) -> str:
    name = name.strip()
    if not name:
        raise piece_error(key, piece, "is malformed: empty attack name")
    if name not in known:
        raise piece_error(
            key, piece, f"names unknown attack {name!r}; known attacks: {', '.join(sorted(known))}"
        )
    return name


def _parse_assign(text: str, known: frozenset[str], num_partitions: int) -> dict[int, tuple[str, ...]]:
    key = ASSIGN_KEY
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"config key {key!r} must assign attack schemes to partitions, got {text!r}")
    schemes: dict[int, list[str]] = {p: [] for p in range(num_partitions)}
    for raw in text.split(","):
        piece = raw.strip()
        if not piece:
            raise piece_error(key, raw, "is malformed: empty piece (stray ',')")
        head, colon, tail = piece.partition(":")
        head, tail = head.strip(), tail.strip()
        if not colon or not head or not tail or ":" in tail:
            raise piece_error(key, piece, "is malformed: expected attack:ids, round-robin:a+b or even:a+b")
        if head in DISTRIBUTIONS:
            names = [_attack_name(key, piece, name, known) for name in tail.split("+")]
            k = len(names)
            for p in range(num_partitions):
                index = p % k if head == "round-robin" else p * k // num_partitions
                schemes[p].append(names[index])
        else:
            name = _attack_name(key, piece, head, known)
            for p in parse_ids(key, piece, tail, num_partitions):
                schemes[p].append(name)
    missing = [p for p, names in schemes.items() if not names]
    if missing:
        raise ConfigError(
            f"config key {key!r}: partition(s) {describe_ids(missing)} get no attack scheme from "
            f"{text!r}; every partition in [0, {num_partitions}) needs at least one"
        )
    return {p: _unique(names) for p, names in schemes.items()}


def _parse_new_attacks(text: str, known: frozenset[str], num_partitions: int) -> tuple[NewAttack, ...]:
    key = NEW_ATTACKS_KEY
    if not isinstance(text, str):
        raise ConfigError(f"config key {key!r} must be a string, got {text!r}")
    if not text.strip():
        return ()
    additions: list[NewAttack] = []
    for raw in text.split(";"):
        piece = raw.strip()
        if not piece:
            raise piece_error(key, raw, "is malformed: empty piece (stray ';')")
        match = _NEW_ATTACK.fullmatch(piece)
        if match is None:
            raise piece_error(key, piece, "is malformed: expected attack@round:ids, e.g. 'simba@20:3'")
        name = _attack_name(key, piece, match["attack"], known)
        round_text = match["round"].strip()
        if not re.fullmatch(r"[+-]?\d+", round_text):
            raise piece_error(key, piece, f"is malformed: round {round_text!r} must be an integer")
        server_round = int(round_text)
        if server_round < 1:
            raise piece_error(key, piece, f"has round {server_round}; rounds start at 1")
        ids = parse_ids(key, piece, match["ids"], num_partitions)
        additions.append(NewAttack(round=server_round, attack=name, partitions=ids))
    return tuple(additions)
