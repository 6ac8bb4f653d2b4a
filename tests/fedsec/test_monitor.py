"""The FDA³ attack monitor: assignment DSLs, mid-run additions, and config errors naming key and piece."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from fedsec.attacks.monitor import AttackMonitor, NewAttack
from fedsec.errors import ConfigError

KNOWN = frozenset({"fgsm", "bim", "pgd", "jsma", "cw2", "deepfool", "simba"})
PAPER = "fgsm:0-1,bim:2-3,jsma:4-5,cw2:6-7,deepfool:8-9"
FIVE = "fgsm+bim+jsma+cw2+deepfool"


def build(assign: str, new_attacks: str = "", num_partitions: int = 10) -> AttackMonitor:
    return AttackMonitor.from_config(
        known=KNOWN, assign=assign, new_attacks=new_attacks, num_partitions=num_partitions
    )


def first_round_schemes(monitor: AttackMonitor) -> dict[int, tuple[str, ...]]:
    return {p: monitor.schemes_for(p, 1) for p in monitor.partitions}


# ----------------------------------------------------------------------------- fda3-assign forms


def test_paper_default_assignment_gives_two_devices_per_attack():
    monitor = build(PAPER)

    assert dict(monitor.assignments) == {
        0: ("fgsm",),
        1: ("fgsm",),
        2: ("bim",),
        3: ("bim",),
        4: ("jsma",),
        5: ("jsma",),
        6: ("cw2",),
        7: ("cw2",),
        8: ("deepfool",),
        9: ("deepfool",),
    }
    assert monitor.new_attacks == ()
    assert monitor.devices_for("jsma", 1) == (4, 5)
    assert monitor.devices_for("simba", 1) == ()


def test_id_lists_ranges_and_repeats_give_several_schemes_in_order_without_duplicates():
    monitor = build("fgsm:0+2,bim:1-2+3,fgsm:3,bim:3", num_partitions=4)

    assert dict(monitor.assignments) == {
        0: ("fgsm",),
        1: ("bim",),
        2: ("fgsm", "bim"),
        3: ("bim", "fgsm"),
    }


def test_whitespace_around_pieces_is_ignored():
    assert build(" fgsm : 0 - 1 , bim: 2 + 3 ", num_partitions=4) == build(
        "fgsm:0-1,bim:2-3", num_partitions=4
    )


def test_round_robin_cycles_through_the_attacks():
    monitor = build("round-robin:fgsm+bim+jsma", num_partitions=7)

    assert first_round_schemes(monitor) == {
        0: ("fgsm",),
        1: ("bim",),
        2: ("jsma",),
        3: ("fgsm",),
        4: ("bim",),
        5: ("jsma",),
        6: ("fgsm",),
    }


def test_even_gives_contiguous_blocks():
    # partition i gets attack floor(i·3/7): 0,0,0,1,1,2,2
    monitor = build("even:fgsm+bim+jsma", num_partitions=7)

    assert first_round_schemes(monitor) == {
        0: ("fgsm",),
        1: ("fgsm",),
        2: ("fgsm",),
        3: ("bim",),
        4: ("bim",),
        5: ("jsma",),
        6: ("jsma",),
    }


def test_even_over_ten_partitions_is_the_paper_default():
    assert build(f"even:{FIVE}") == build(PAPER)


@pytest.mark.parametrize(("num_partitions", "per_attack"), [(10, 2), (50, 10)])
@pytest.mark.parametrize("form", ["round-robin", "even"])
def test_distributions_give_each_attack_an_equal_share(form, num_partitions, per_attack):
    monitor = build(f"{form}:{FIVE}", num_partitions=num_partitions)

    counts = Counter(s for p in monitor.partitions for s in monitor.schemes_for(p, 1))

    assert counts == dict.fromkeys(("fgsm", "bim", "jsma", "cw2", "deepfool"), per_attack)
    assert all(len(monitor.schemes_for(p, 1)) == 1 for p in range(num_partitions))


def test_even_over_fifty_partitions_uses_blocks_of_ten():
    monitor = build(f"even:{FIVE}", num_partitions=50)

    assert monitor.devices_for("fgsm", 1) == tuple(range(0, 10))
    assert monitor.devices_for("cw2", 1) == tuple(range(30, 40))
    assert monitor.devices_for("deepfool", 1) == tuple(range(40, 50))


def test_round_robin_over_fifty_partitions_strides_by_five():
    monitor = build(f"round-robin:{FIVE}", num_partitions=50)

    assert monitor.devices_for("bim", 1) == tuple(range(1, 50, 5))


def test_a_distribution_combines_with_explicit_pieces():
    monitor = build("even:fgsm+bim,jsma:0", num_partitions=4)

    assert dict(monitor.assignments) == {0: ("fgsm", "jsma"), 1: ("fgsm",), 2: ("bim",), 3: ("bim",)}


# ----------------------------------------------------------------------------- fda3-new-attacks


def test_new_attacks_are_parsed_and_sorted_by_round():
    monitor = build(PAPER, "simba@20:3;pgd@10:0-1")

    assert monitor.new_attacks == (
        NewAttack(round=10, attack="pgd", partitions=(0, 1)),
        NewAttack(round=20, attack="simba", partitions=(3,)),
    )


def test_new_attack_is_used_from_its_round_on():
    monitor = build(PAPER, "simba@5:3+8")

    before, at, after = (monitor.schemes_for(3, r) for r in (4, 5, 6))

    assert before == ("bim",)
    assert at == ("bim", "simba")
    assert after == ("bim", "simba")
    assert monitor.schemes_for(2, 9) == ("bim",)  # not chosen: never downloads it
    assert monitor.newly_added(5) == (NewAttack(round=5, attack="simba", partitions=(3, 8)),)
    assert monitor.newly_added(4) == ()
    assert monitor.newly_added(6) == ()
    assert monitor.devices_for("simba", 4) == ()
    assert monitor.devices_for("simba", 5) == (3, 8)


def test_additions_come_after_assigned_schemes_by_round_without_duplicates():
    monitor = build("fgsm:0,bim:1", "simba@7:0;pgd@3:0;fgsm@2:0", num_partitions=2)

    assert monitor.schemes_for(0, 1) == ("fgsm",)
    assert monitor.schemes_for(0, 3) == ("fgsm", "pgd")
    assert monitor.schemes_for(0, 10) == ("fgsm", "pgd", "simba")
    assert monitor.newly_added(2) == (NewAttack(round=2, attack="fgsm", partitions=(0,)),)


def test_empty_new_attacks_means_none():
    assert build(PAPER, "  ").new_attacks == ()


# ----------------------------------------------------------------------------- config errors

ASSIGN_ERRORS = [
    ("fgsm:0-1,bim:2-3", 5, "partition\\(s\\) 4 get no attack scheme"),
    ("fgsm:0-9", 12, "partition\\(s\\) 10-11 get no attack scheme"),
    ("fgsm:0-10", 10, "piece 'fgsm:0-10' has partition id 10 out of range \\[0, 10\\)"),
    ("fgsm:0-9,bim:12", 10, "piece 'bim:12' has partition id 12 out of range"),
    ("fgsm:3-1,bim:0-9", 10, "piece 'fgsm:3-1' has an empty range '3-1'"),
    ("fgsm:x", 10, "piece 'fgsm:x' is malformed"),
    ("fgsm:-1", 10, "piece 'fgsm:-1' is malformed"),
    ("fgsm:0++1", 10, "piece 'fgsm:0\\+\\+1' is malformed"),
    ("fgsm", 10, "piece 'fgsm' is malformed"),
    ("fgsm:0:1", 10, "piece 'fgsm:0:1' is malformed"),
    (":0-9", 10, "piece ':0-9' is malformed"),
    ("fgsm:0-9,,bim:1", 10, "piece '' is malformed: empty piece"),
    ("foo:0-9", 10, "piece 'foo:0-9' names unknown attack 'foo'; known attacks: bim, cw2, deepfool, fgsm"),
    ("round-robin:fgsm+foo", 10, "piece 'round-robin:fgsm\\+foo' names unknown attack 'foo'"),
    ("round-robin:fgsm++bim", 10, "piece 'round-robin:fgsm\\+\\+bim' is malformed: empty attack name"),
    ("even:", 10, "piece 'even:' is malformed"),
    ("", 10, "must assign attack schemes"),
]


@pytest.mark.parametrize(("assign", "num_partitions", "message"), ASSIGN_ERRORS)
def test_bad_assign_raises_naming_key_and_piece(assign, num_partitions, message):
    with pytest.raises(ConfigError, match="config key 'fda3-assign'") as caught:
        build(assign, num_partitions=num_partitions)
    assert re.search(message, str(caught.value)), str(caught.value)


NEW_ATTACK_ERRORS = [
    ("pgd@0:1", "piece 'pgd@0:1' has round 0; rounds start at 1"),
    ("pgd@-2:1", "piece 'pgd@-2:1' has round -2"),
    ("pgd@x:1", "piece 'pgd@x:1' is malformed: round 'x' must be an integer"),
    ("pgd:1", "piece 'pgd:1' is malformed: expected attack@round:ids"),
    ("pgd@10", "piece 'pgd@10' is malformed"),
    ("pgd@10:1@2", "piece 'pgd@10:1@2' is malformed"),
    ("foo@10:1", "piece 'foo@10:1' names unknown attack 'foo'; known attacks: bim, .*simba"),
    ("pgd@10:10", "piece 'pgd@10:10' has partition id 10 out of range"),
    ("pgd@10:1-x", "piece 'pgd@10:1-x' is malformed: partition ids '1-x'"),
    ("pgd@10:1;", "piece '' is malformed: empty piece"),
    ("pgd@10:1,simba@3:2", "piece 'pgd@10:1,simba@3:2' is malformed"),
]


@pytest.mark.parametrize(("new_attacks", "message"), NEW_ATTACK_ERRORS)
def test_bad_new_attacks_raise_naming_key_and_piece(new_attacks, message):
    with pytest.raises(ConfigError, match="config key 'fda3-new-attacks'") as caught:
        build(PAPER, new_attacks)
    assert re.search(message, str(caught.value)), str(caught.value)


def test_from_config_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_partitions must be an integer >= 1"):
        AttackMonitor.from_config(known=KNOWN, assign="fgsm:0", num_partitions=0)
    with pytest.raises(ValueError, match="known must name at least one attack"):
        AttackMonitor.from_config(known=(), assign="fgsm:0", num_partitions=1)


# ----------------------------------------------------------------------------- direct construction


def test_monitor_is_immutable_hashable_and_copies_its_inputs():
    assignments = {1: ["bim", "bim"], 0: ["fgsm"]}
    monitor = AttackMonitor(known=frozenset(KNOWN), assignments=assignments)  # type: ignore[arg-type]

    assignments[0].append("pgd")
    assignments[2] = ["jsma"]

    assert dict(monitor.assignments) == {0: ("fgsm",), 1: ("bim",)}
    assert monitor.partitions == (0, 1)
    with pytest.raises(TypeError):
        monitor.assignments[0] = ("pgd",)  # type: ignore[index]
    twin = AttackMonitor(known=KNOWN, assignments={0: ("fgsm",), 1: ("bim",)})
    assert monitor == twin and hash(monitor) == hash(twin)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"known": frozenset(), "assignments": {0: ("fgsm",)}}, "known must name at least one attack"),
        ({"known": KNOWN, "assignments": {-1: ("fgsm",)}}, "assignments keys must be partition ids >= 0"),
        ({"known": KNOWN, "assignments": {0: ()}}, r"assignments\[0\] must hold at least one"),
        ({"known": KNOWN, "assignments": {0: "fgsm"}}, r"assignments\[0\] must be a sequence"),
        ({"known": KNOWN, "assignments": {0: ("foo",)}}, r"assignments\[0\] names unknown attack 'foo'"),
        (
            {"known": KNOWN, "assignments": {0: ("fgsm",)}, "new_attacks": (NewAttack(3, "foo", (0,)),)},
            r"new_attacks\[0\] names unknown attack 'foo'",
        ),
        (
            {"known": KNOWN, "assignments": {0: ("fgsm",)}, "new_attacks": (NewAttack(3, "pgd", (0, 4)),)},
            r"new_attacks\[0\] lists partitions not in assignments: \[4\]",
        ),
    ],
)
def test_direct_construction_errors_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttackMonitor(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"round": 0, "attack": "pgd", "partitions": (0,)}, "round must be an integer >= 1"),
        ({"round": 2, "attack": "", "partitions": (0,)}, "attack must be a non-empty string"),
        ({"round": 2, "attack": "pgd", "partitions": ()}, "partitions must list at least one"),
        ({"round": 2, "attack": "pgd", "partitions": (-1,)}, "partitions must be integers >= 0"),
        ({"round": 2, "attack": "pgd", "partitions": (1, 1)}, "partitions must not repeat an id"),
    ],
)
def test_new_attack_validates_its_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NewAttack(**kwargs)


def test_queries_reject_unknown_partition_attack_and_negative_round():
    monitor = build(PAPER)

    with pytest.raises(ValueError, match="partition_id 10 has no assigned schemes; partitions: 0-9"):
        monitor.schemes_for(10, 1)
    with pytest.raises(ValueError, match="server_round must be an integer >= 0"):
        monitor.schemes_for(0, -1)
    with pytest.raises(ValueError, match="server_round must be an integer >= 0"):
        monitor.newly_added(-1)
    with pytest.raises(ValueError, match="attack 'foo' is not known"):
        monitor.devices_for("foo", 1)
