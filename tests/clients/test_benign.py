"""The benign client, called in process: fit learns, evaluate measures, roles resolve."""

import numpy as np
import pytest

from clients import CLIENT_ROLES, build_client
from fedsec.config import RunConfig
from fedsec.errors import UnknownNameError

CONFIG = RunConfig.from_run_config(
    {"dataset": "synthetic", "model": "cnn", "num-clients": 3, "validation-size": 30, "local-epochs": 5}
)


def test_fit_returns_weights_that_score_better_than_the_ones_it_received():
    client = build_client(CONFIG, partition_id=1, num_partitions=3)
    initial = client.get_parameters({})
    loss_before, n_eval, metrics_before = client.evaluate(initial, {})
    weights, num_examples, fit_metrics = client.fit(initial, {"server-round": 1})
    loss_after, _, metrics_after = client.evaluate(weights, {})
    assert fit_metrics["partition-id"] == 1 and num_examples == len(client.train_data) > 0
    assert n_eval == len(client.eval_data) > 0
    assert [w.shape for w in weights] == [w.shape for w in initial]
    assert loss_after < loss_before
    assert metrics_after["accuracy"] > metrics_before["accuracy"] + 0.2


def test_fit_is_deterministic_under_the_seed_and_varies_with_the_round():
    quick = CONFIG.replace(local_epochs=1)
    first = build_client(quick, partition_id=0, num_partitions=3)
    second = build_client(quick, partition_id=0, num_partitions=3)
    start = first.get_parameters({})
    a, _, _ = first.fit(start, {"server-round": 2})
    b, _, _ = second.fit(start, {"server-round": 2})
    c, _, _ = second.fit(start, {"server-round": 3})
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_clients_get_disjoint_data():
    parts = [build_client(CONFIG, partition_id=i, num_partitions=3) for i in range(3)]
    rows = [{tuple(x.flatten().tolist()[:40]) for x in c.train_data.x} for c in parts]
    assert not (rows[0] & rows[1]) and not (rows[1] & rows[2])


def test_bad_partition_and_role_are_refused():
    assert "benign" in CLIENT_ROLES
    with pytest.raises(ValueError, match=r"partition-id must be in \[0, 3\)"):
        build_client(CONFIG, partition_id=3, num_partitions=3)
    with pytest.raises(UnknownNameError, match="unknown client role 'spy'"):
        build_client(CONFIG, partition_id=0, num_partitions=3, role="spy")
