"""Malicious clients, called in process: each attack does what it claims and no more."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.common import ArrayRecord, RecordDict

from clients import MALICIOUS_ROLES, build_client, malicious_partitions
from clients.malicious import HISTORY_KEY, benign_partitions, global_trigger, simulated_benign_updates
from fedsec.attacks.poisoning import max_l2_distance
from fedsec.data.poisoning import targeted_subset
from fedsec.data.triggers import backdoor_test_set, dba_parts
from fedsec.errors import ConfigError
from fedsec.training import evaluate, flatten, set_weights
from tests.clients.attacker_config import config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fit(client, weights, server_round=1):
    new, _, metrics = client.fit(weights, {"server-round": server_round})
    return new, metrics


def targeted_rate(client, weights) -> float:
    """Fraction of the client's own source-class samples the weights classify as the target."""
    set_weights(client.model, weights)
    data = targeted_subset(client.train_data, source=5, target=7)
    return evaluate(client.model, data.x, data.y, num_classes=10).accuracy


def test_roles_are_registered_and_ground_truth_lists_the_attackers():
    assert {
        "label-flip",
        "boosted",
        "colluding-pk",
        "colluding-lk",
        "snal2",
        "sanodc",
        "dba",
    } <= set(MALICIOUS_ROLES)
    assert malicious_partitions(config(roles="boosted:0,colluding-pk:2-3"), 4) == frozenset({0, 2, 3})
    assert benign_partitions(config(roles="boosted:0,colluding-pk:2-3"), 4) == [1]


def test_before_the_attack_round_a_malicious_client_trains_exactly_like_a_benign_one():
    cfg = config(roles="label-flip:1", **{"attack-start-round": 3})
    honest = build_client(cfg, partition_id=1, num_partitions=4, role="benign")
    flipper = build_client(cfg, partition_id=1, num_partitions=4, role="label-flip")
    start = honest.get_parameters({})

    a, _ = fit(honest, start, server_round=2)
    b, _ = fit(flipper, start, server_round=2)

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_after_attack_end_round_a_malicious_client_is_honest_again():
    cfg = config(roles="label-flip:1", **{"attack-start-round": 2, "attack-end-round": 2})
    honest = build_client(cfg, partition_id=1, num_partitions=4, role="benign")
    flipper = build_client(cfg, partition_id=1, num_partitions=4, role="label-flip")
    start = honest.get_parameters({})

    attacked, _ = fit(flipper, start, server_round=2)
    after, _ = fit(flipper, start, server_round=3)
    clean, _ = fit(honest, start, server_round=3)

    assert [cfg.attacks_in(r) for r in (1, 2, 3)] == [False, True, False]
    assert all(np.array_equal(x, y) for x, y in zip(after, clean, strict=True))
    assert targeted_rate(flipper, attacked) > targeted_rate(flipper, after) + 0.5
    with pytest.raises(ConfigError, match="attack-end-round"):
        config(**{"attack-start-round": 3, "attack-end-round": 2})


def test_label_flip_teaches_source_to_target_and_boosting_scales_that_update():
    cfg = config(**{"boost-factor": 3.0})
    honest = build_client(cfg, partition_id=1, num_partitions=4, role="benign")
    flipper = build_client(cfg, partition_id=1, num_partitions=4, role="label-flip")
    booster = build_client(cfg, partition_id=1, num_partitions=4, role="boosted")
    start = honest.get_parameters({})

    clean, _ = fit(honest, start)
    flipped, _ = fit(flipper, start)
    boosted, metrics = fit(booster, start)

    assert targeted_rate(flipper, flipped) > targeted_rate(honest, clean) + 0.5
    np.testing.assert_allclose(
        flatten(boosted) - flatten(start), 3.0 * (flatten(flipped) - flatten(start)), rtol=1e-4, atol=1e-5
    )
    assert metrics["attack-scale"] == 3.0


def assert_sends_scaled_step(sent, start, anticipated, poisoned, factor):
    """``sent`` is ``start + factor·(poisoned − anticipated)``: the poisoned step from S, scaled."""
    np.testing.assert_allclose(
        flatten(sent) - flatten(start),
        factor * (flatten(poisoned) - flatten(anticipated)),
        rtol=1e-4,
        atol=1e-5,
    )


def test_boost_estimate_poisons_from_the_clients_own_honest_update_and_boosts_only_the_poisoned_part():
    cfg = config(**{"boost-factor": 3.0, "boost-estimate": True})
    honest = build_client(cfg, partition_id=1, num_partitions=4, role="benign")
    flipper = build_client(cfg, partition_id=1, num_partitions=4, role="label-flip")
    booster = build_client(cfg, partition_id=1, num_partitions=4, role="boosted")
    start = honest.get_parameters({})

    anticipated, _ = fit(honest, start)  # S: where honest training on its own data moves the model
    flipped, _ = fit(flipper, anticipated)  # X: the flip trained from S (same seeded shuffles)
    boosted, metrics = fit(booster, start)

    assert_sends_scaled_step(boosted, start, anticipated, flipped, 3.0)
    assert metrics["attack-scale"] == 3.0
    # Without the estimate the same client boosts the flip trained from the global model: a different update.
    plain, _ = fit(
        build_client(config(**{"boost-factor": 3.0}), partition_id=1, num_partitions=4, role="boosted"), start
    )
    assert not np.allclose(flatten(plain), flatten(boosted), atol=1e-3)


def test_the_perfect_knowledge_hook_is_refused_unless_the_scenario_enables_it():
    off = config(roles="colluding-pk:2-3")
    colluder = build_client(off, partition_id=3, num_partitions=4, role="colluding-pk")

    with pytest.raises(ConfigError, match="perfect-knowledge-hook = true"):
        colluder.fit(colluder.get_parameters({}), {"server-round": 1})
    with pytest.raises(ConfigError, match="simulation-only hook"):
        simulated_benign_updates(off, colluder.get_parameters({}), 1, [0, 1], 4)


def test_the_hook_reproduces_the_benign_clients_updates_exactly():
    cfg = config(roles="colluding-pk:2-3", **{"perfect-knowledge-hook": True})
    honest = build_client(cfg, partition_id=0, num_partitions=4, role="benign")
    start = honest.get_parameters({})

    sent, _ = fit(honest, start, server_round=4)
    seen = simulated_benign_updates(cfg, start, 4, [0], 4)

    np.testing.assert_array_equal(seen[0], flatten(sent) - flatten(start))


def test_a_pk_colluder_stays_within_the_l2_bound_and_pushes_the_target():
    cfg = config(roles="colluding-pk:2-3", **{"perfect-knowledge-hook": True, "stealth-lambdas": "1,4,16"})
    colluder = build_client(cfg, partition_id=3, num_partitions=4, role="colluding-pk")
    start = colluder.get_parameters({})
    benign = simulated_benign_updates(cfg, start, 1, [0, 1], 4)
    radius = float(np.linalg.norm(benign[0] - benign[1]))

    sent, metrics = fit(colluder, start)
    update = flatten(sent) - flatten(start)

    assert metrics["attack-lambda"] in (1.0, 4.0, 16.0)
    assert metrics["attack-radius"] == pytest.approx(radius)
    assert max_l2_distance(update, benign) <= radius * (1 + 1e-6)
    assert targeted_rate(colluder, sent) > 0.5


def test_sanodc_has_no_distance_constraint_and_uses_the_largest_lambda():
    cfg = config(roles="sanodc:3", **{"stealth-lambdas": "1,2,4"})
    attacker = build_client(cfg, partition_id=3, num_partitions=4, role="sanodc")

    sent, metrics = fit(attacker, attacker.get_parameters({}))

    assert metrics["attack-lambda"] == 4.0 and metrics["attack-radius"] == -1.0
    assert targeted_rate(attacker, sent) > 0.9


def test_limited_knowledge_uses_the_global_history_kept_in_the_node_state():
    cfg = config(roles="colluding-lk:3")
    state = RecordDict()
    attacker = build_client(cfg, partition_id=3, num_partitions=4, role="colluding-lk", state=state)
    start = attacker.get_parameters({})

    fit(attacker, start, server_round=1)
    remembered = state[HISTORY_KEY]
    moved = [w + 0.01 for w in start]
    estimates = attacker.benign_estimates(moved, 2)

    assert isinstance(remembered, ArrayRecord)
    assert len(estimates) == 2  # its own honest update + the global model's last step
    np.testing.assert_allclose(estimates[1], flatten(moved) - flatten(start), atol=1e-6)


def test_dba_attackers_each_stamp_only_their_own_part_of_the_global_trigger():
    cfg = config(
        roles="dba:2-3", trigger="dba", **{"dba-parts": 2, "trigger-size": 4, "poison-fraction": 0.5}
    )
    shape = (1, 28, 28)
    parts = dba_parts(global_trigger(cfg, shape), 2)
    clients = [build_client(cfg, partition_id=p, num_partitions=4, role="dba") for p in (2, 3)]

    for client, part in zip(clients, parts, strict=True):
        poisoned = client.poisoned
        changed = poisoned.y != client.train_data.y
        stamped = poisoned.x[changed][:, 0]
        assert changed.any() and bool(torch.all(poisoned.y[changed] == 7))
        assert bool(torch.all(stamped[:, part.mask] == part.value))
        others = global_trigger(cfg, shape).mask & ~part.mask
        assert not bool(torch.all(stamped[:, others] == 1.0))


def test_constrain_and_scale_scales_by_the_clients_per_round_and_learns_the_backdoor():
    cfg = config(roles="constrain-scale:3", **{"poison-fraction": 0.5, "local-epochs": 3})
    attacker = build_client(cfg, partition_id=3, num_partitions=4, role="constrain-scale")

    sent, metrics = fit(attacker, attacker.get_parameters({}))
    attacker.model.load_state_dict(attacker.model.state_dict())
    backdoor = backdoor_test_set(attacker.eval_data, global_trigger(cfg, (1, 28, 28)), target=7)
    set_weights(attacker.model, sent)

    assert metrics["attack-scale"] == 4.0  # num-clients 4, fraction-fit 1, η = 1
    assert evaluate(attacker.model, backdoor.x, backdoor.y, num_classes=10).accuracy > 0.5


def test_poison_scale_and_epochs_make_a_data_poisoner_a_model_poisoner_without_the_edge_defense():
    edge = {"edge-defense": "abl", "poison-fraction": 0.5}
    honest_device = build_client(
        config(roles="badnets:3", **edge), partition_id=3, num_partitions=4, role="badnets"
    )
    assert honest_device.defense is not None  # poisoned data, honest training: the device defends
    start = honest_device.get_parameters({})

    plain_cfg = config(roles="badnets:3", **{"poison-fraction": 0.5, "poison-epochs": 3})
    scaled_cfg = plain_cfg.replace(poison_scale=2.5, edge_defense="abl")
    plain = build_client(plain_cfg, partition_id=3, num_partitions=4, role="badnets")
    scaled = build_client(scaled_cfg, partition_id=3, num_partitions=4, role="badnets")
    assert scaled.defense is None and scaled.epochs == 3

    trained, plain_metrics = fit(plain, start)
    sent, metrics = fit(scaled, start)

    np.testing.assert_allclose(
        flatten(sent) - flatten(start), 2.5 * (flatten(trained) - flatten(start)), rtol=1e-4, atol=1e-5
    )
    assert metrics["attack-scale"] == 2.5 and "attack-scale" not in plain_metrics
    once = build_client(plain_cfg.replace(poison_epochs=1), partition_id=3, num_partitions=4, role="badnets")
    one_epoch, _ = fit(once, start)
    assert not np.allclose(flatten(one_epoch), flatten(trained))  # poison-epochs changes the training


def test_boost_estimate_applies_to_scaled_data_poisoners_only():
    base = config(roles="badnets:3", **{"poison-fraction": 0.5, "boost-estimate": True})
    honest = build_client(base, partition_id=3, num_partitions=4, role="benign")
    unscaled = build_client(base, partition_id=3, num_partitions=4, role="badnets")
    scaled = build_client(base.replace(poison_scale=2.0), partition_id=3, num_partitions=4, role="badnets")
    assert not unscaled.estimate and scaled.estimate
    start = honest.get_parameters({})

    anticipated, _ = fit(honest, start)
    poisoned_from_there, _ = fit(unscaled, anticipated)  # same data and shuffles, from S
    sent, _ = fit(scaled, start)

    assert_sends_scaled_step(sent, start, anticipated, poisoned_from_there, 2.0)
