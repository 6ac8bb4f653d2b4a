"""Chen et al.'s stealthy attackers in process: their targets, Eq. 4 as written and the paper's LK."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clients import build_client
from clients.benign import client_parts, local_splits
from clients.stealthy import known_benign_partitions, poison_sets, simulated_benign_updates
from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from fedsec.experiment import load_bundle, server_data
from fedsec.training import evaluate, flatten, set_weights
from simulations.server_app import attack_test_sets
from tests.clients.attacker_config import config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(len(x), -1)}


def test_the_class_level_poison_set_is_the_attackers_own_fives_and_never_the_servers_held_out_fives():
    cfg = config(roles="colluding-pk:2-3")
    own = client_parts(cfg, partition_id=3, num_partitions=4)["train_data"]
    other = client_parts(cfg, partition_id=2, num_partitions=4)["train_data"]
    bundle = load_bundle(cfg)
    held_out = attack_test_sets(cfg, bundle, server_data(cfg, bundle)["test"])["targeted_accuracy"]

    poison, benign_labelled = poison_sets(cfg, own)

    fives = own.y == 5
    assert len(poison) == int(fives.sum()) > 0 and bool(torch.all(poison.y == 7))
    assert rows(poison.x) == rows(own.x[fives])  # exactly its own partition's 5s
    assert not rows(poison.x) & rows(other.x)  # none of another client's
    assert len(held_out) > 0 and bool(torch.all(held_out.y == 7))
    assert not rows(poison.x) & rows(held_out.x)  # evaluation never saw in training
    assert not bool(torch.any(benign_labelled.y == 5)) and len(benign_labelled) + len(poison) == len(own)


def test_the_one_image_attack_poisons_and_is_judged_on_the_same_chosen_test_image():
    cfg = config(roles="colluding-pk:2-3", **{"targeted-samples": 1})
    own = client_parts(cfg, partition_id=3, num_partitions=4)["train_data"]
    bundle = load_bundle(cfg)
    sets = attack_test_sets(cfg, bundle, server_data(cfg, bundle)["test"])

    poison, benign_labelled = poison_sets(cfg, own)

    assert len(poison) == 1 and torch.equal(poison.x, sets["targeted_accuracy"].x)
    assert len(sets["class_flip_rate"]) > 1
    assert len(benign_labelled) == len(own)


def test_the_papers_limited_knowledge_draws_three_benign_clients_anew_each_round():
    cfg = config(
        roles="colluding-lk:6-7",
        **{"num-clients": 8, "lk-known-clients": 3, "lk-draw": "random", "perfect-knowledge-hook": True},
    )

    draws = [known_benign_partitions(cfg, 8, r) for r in range(1, 9)]

    assert all(len(set(d)) == 3 and set(d) <= set(range(6)) for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    assert draws == [known_benign_partitions(cfg, 8, r) for r in range(1, 9)]  # every colluder agrees
    assert known_benign_partitions(cfg.replace(lk_draw="first"), 8, 5) == [0, 1, 2]
    with pytest.raises(ConfigError, match="lk-known-clients"):
        known_benign_partitions(cfg.replace(lk_known_clients=7), 8, 1)


def test_a_limited_knowledge_colluder_estimates_from_exactly_the_drawn_clients():
    cfg = config(
        roles="colluding-lk:3", **{"lk-known-clients": 2, "lk-draw": "random", "perfect-knowledge-hook": True}
    )
    colluder = build_client(cfg, partition_id=3, num_partitions=4, role="colluding-lk")
    start = colluder.get_parameters({})
    drawn = known_benign_partitions(cfg, 4, 5)

    estimates = colluder.benign_estimates(start, 5)

    expected = simulated_benign_updates(cfg, start, 5, drawn, 4)
    assert len(estimates) == 2
    for seen, update in zip(estimates, expected, strict=True):
        np.testing.assert_array_equal(seen, update)


def test_eq4_trains_on_its_own_data_stays_within_c_of_the_benign_mean_and_pushes_the_target():
    overrides = {"perfect-knowledge-hook": True, "stealth-lambdas": "1,4", "accuracy-slack": 1.0}
    cfg = config(roles="colluding-pk:3", **{**overrides, "stealth-objective": "eq4"})
    colluder = build_client(cfg, partition_id=3, num_partitions=4, role="colluding-pk")
    start = colluder.get_parameters({})
    benign = simulated_benign_updates(cfg, start, 1, [0, 1, 2], 4)
    center = np.mean(benign, axis=0)
    radius = max(np.linalg.norm(a - b) for a in benign for b in benign)
    honest = build_client(cfg, partition_id=3, num_partitions=4, role="benign")
    honest_weights, _, _ = honest.fit(start, {"server-round": 1})

    sent, _, metrics = colluder.fit(start, {"server-round": 1})
    update = flatten(sent) - flatten(start)

    assert metrics["attack-lambda"] == 4.0  # the largest λ, no accuracy check
    assert np.linalg.norm(update - center) <= radius * (1 + 1e-6)
    poison, _ = poison_sets(cfg, colluder.train_data)

    def flipped(weights) -> float:
        set_weights(colluder.model, weights)
        return evaluate(colluder.model, poison.x, poison.y, num_classes=10).accuracy

    assert flipped(sent) > flipped(honest_weights) + 0.2
    boosted = build_client(
        config(roles="colluding-pk:3", **overrides), partition_id=3, num_partitions=4, role="colluding-pk"
    )
    other, _, _ = boosted.fit(start, {"server-round": 1})
    assert not np.allclose(flatten(other), flatten(sent), atol=1e-4)  # a different attack than boosted-step


def test_a_class_level_attacker_without_source_samples_fails_with_the_keys_to_change():
    from fedsec.data.containers import TensorSplit

    config = RunConfig(attack_source=5, attack_target=7, targeted_samples=0)
    no_fives = TensorSplit(torch.zeros(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 6]))
    with pytest.raises(ConfigError, match="attack-source=5"):
        poison_sets(config, no_fives)
    with_fives = TensorSplit(torch.zeros(3, 1, 28, 28), torch.tensor([5, 1, 5]))
    targeted, rest = poison_sets(config, with_fives)
    assert targeted.y.tolist() == [7, 7] and rest.y.tolist() == [1]


def test_validate_refuses_before_the_run_what_a_colluder_would_refuse_in_its_first_attack_round():
    from simulations.validate import validate

    validate(config(roles="colluding-pk:2-3", **{"perfect-knowledge-hook": True}))  # a sound config passes
    with pytest.raises(ConfigError, match="perfect-knowledge-hook = true"):
        validate(config(roles="colluding-pk:2-3"))
    with pytest.raises(ConfigError, match="lk-known-clients"):
        validate(config(roles="colluding-lk:3", **{"lk-known-clients": 4, "perfect-knowledge-hook": True}))
    # one class per client: most partitions hold no 5, so their class-level target would be empty
    split = config(partitioning="pathological", **{"classes-per-partition": 1, "num-clients": 10})
    bundle = load_bundle(split)
    fives = {
        p: bool((local_splits(split, bundle, partition_id=p, num_partitions=10)[0].y == 5).any())
        for p in range(10)
    }
    lacking, holding = [p for p in fives if not fives[p]], [p for p in fives if fives[p]]
    assert lacking and holding
    with pytest.raises(ConfigError, match="no sample of class attack-source=5"):
        validate(split.replace(roles=f"snal2:{lacking[0]}"))
    validate(split.replace(roles=f"snal2:{holding[0]}"))
