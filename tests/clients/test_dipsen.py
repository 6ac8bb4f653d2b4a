"""The DiPSeN client: reproducible noise per round, learns, leaves the global RNG alone."""

import numpy as np
import pytest
import torch

from clients import build_client
from fedsec.config import RunConfig

CONFIG = RunConfig.from_run_config(
    {"dataset": "synthetic", "model": "dipsen", "num-clients": 2, "validation-size": 0, "local-epochs": 3}
)


def test_same_round_same_noise_same_weights_and_global_rng_untouched():
    quick = CONFIG.replace(local_epochs=1)
    a = build_client(quick, partition_id=0, num_partitions=2, role="dipsen")
    b = build_client(quick, partition_id=0, num_partitions=2, role="dipsen")
    start = a.get_parameters({})
    state = torch.get_rng_state()
    wa, _, _ = a.fit(start, {"server-round": 4})
    assert torch.equal(state, torch.get_rng_state())
    wb, _, _ = b.fit(start, {"server-round": 4})
    wc, _, _ = b.fit(start, {"server-round": 5})
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(wa, wc, strict=True))


def test_dipsen_client_learns_despite_the_noise():
    client = build_client(CONFIG, partition_id=1, num_partitions=2, role="dipsen")
    start = client.get_parameters({})
    _, _, before = client.evaluate(start, {})
    trained, _, _ = client.fit(start, {"server-round": 1})
    _, _, after = client.evaluate(trained, {})
    assert after["accuracy"] > before["accuracy"] + 0.3


def test_a_csv_of_flows_trains_through_the_same_client(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["Dur,TotPkts,Proto,label"]
    for i in range(400):
        botnet = i % 2
        label = "Botnet" if botnet else "Normal"
        rows.append(f"{rng.random() + 3 * botnet:.3f},{rng.integers(1, 50) + 40 * botnet},{i % 3},{label}")
    path = tmp_path / "flows.csv"
    path.write_text("\n".join(rows) + "\n")
    config = CONFIG.replace(
        dataset="csv",
        data_root=str(path),
        csv_feature_columns="Dur,TotPkts",
        validation_size=0,
        local_epochs=10,
    )
    client = build_client(config, partition_id=0, num_partitions=2, role="dipsen")
    assert tuple(client.train_data.x.shape[1:]) == (1, 28, 28)
    assert client.train_data.x.min() >= 0 and client.train_data.x.max() <= 1
    assert client.train_data.x.flatten(1)[:, 2:].abs().sum() == 0  # two features, zero padding after
    start = client.get_parameters({})
    trained, _, _ = client.fit(start, {"server-round": 1})
    _, _, after = client.evaluate(trained, {})
    assert after["accuracy"] >= 0.8


# ----------------------------------------------------------------------------- DP-SGD and its accountant


def test_epsilon_is_finite_and_falls_as_sigma_grows():
    from clients.privacy import dp_sgd_epsilon

    common = {"batch_size": 16, "dataset_size": 300, "steps": 200, "delta": 1e-5}
    epsilons = [dp_sgd_epsilon(noise_multiplier=s, **common) for s in (0.8, 1.0, 2.0, 4.0)]
    assert all(np.isfinite(e) and e > 0 for e in epsilons)
    assert epsilons == sorted(epsilons, reverse=True) and epsilons[0] > 2 * epsilons[-1]
    assert dp_sgd_epsilon(noise_multiplier=1.0, **{**common, "steps": 400}) > epsilons[1]  # composition
    assert dp_sgd_epsilon(noise_multiplier=0.0, **common) == float("inf")
    assert dp_sgd_epsilon(noise_multiplier=1.0, **{**common, "steps": 0}) == 0.0


def test_epsilon_charges_the_replace_one_sensitivity_of_the_clipped_sum():
    # With the whole dataset in every batch, each step is a plain Gaussian mechanism: noise std σC on a
    # sum that replacing one sample moves by up to 2C, i.e. dp-accounting's noise multiplier σ / 2.
    import dp_accounting
    from dp_accounting import rdp

    from clients.privacy import RDP_ORDERS, dp_sgd_epsilon

    sigma, steps, delta = 1.1, 30, 1e-5
    reference = rdp.RdpAccountant(list(RDP_ORDERS))
    reference.compose(dp_accounting.GaussianDpEvent(sigma / 2), count=steps)
    ours = dp_sgd_epsilon(noise_multiplier=sigma, batch_size=50, dataset_size=50, steps=steps, delta=delta)
    assert ours == pytest.approx(reference.get_epsilon(delta), rel=1e-6)
    halved = rdp.RdpAccountant(list(RDP_ORDERS))
    halved.compose(dp_accounting.GaussianDpEvent(sigma), count=steps)
    assert ours > 1.5 * halved.get_epsilon(delta)  # the add/remove-one reading would understate ε


def test_dp_sgd_client_reports_epsilon_learns_and_differs_from_plain_training():
    # little noise (σ = 0.05, C = 10) so that 3 epochs on 270 synthetic images learn; ε is then huge
    config = CONFIG.replace(dp_sgd_clip=10.0, dp_sgd_noise=0.05)
    client = build_client(config, partition_id=1, num_partitions=2, role="dipsen")
    plain = build_client(CONFIG, partition_id=1, num_partitions=2, role="dipsen")
    start = client.get_parameters({})
    _, _, before = client.evaluate(start, {})
    trained, _, metrics = client.fit(start, {"server-round": 1})
    _, _, after = client.evaluate(trained, {})
    assert after["accuracy"] > before["accuracy"] + 0.3
    from clients.privacy import dp_sgd_epsilon

    n = len(client.train_data)  # 270 images, batch 32: 9 steps per epoch, 3 epochs in round 1
    expected = dp_sgd_epsilon(noise_multiplier=0.05, batch_size=32, dataset_size=n, steps=27, delta=1e-5)
    assert metrics["dp-epsilon"] == expected and 0 < expected < float("inf")
    unclipped, _, plain_metrics = plain.fit(start, {"server-round": 1})
    assert "dp-epsilon" not in plain_metrics
    assert not all(np.array_equal(a, b) for a, b in zip(trained, unclipped, strict=True))


def test_privacy_table_charges_the_smallest_client_at_least_as_much_as_the_median_one():
    from clients.privacy import privacy_table
    from fedsec.experiment import load_bundle

    config = CONFIG.replace(dp_sgd_clip=1.0, dp_sgd_noise=1.1, num_server_rounds=3, local_epochs=1)
    table = privacy_table(config, load_bundle(config), column="DiPSeN")
    smallest, median = (table[f"ε ({who} client, every round)"]["DiPSeN"] for who in ("smallest", "median"))
    assert 0 < median <= smallest < float("inf")
    n = int(table["samples (smallest client)"]["DiPSeN"])
    assert table["steps (smallest client)"]["DiPSeN"] == 3 * -(-n // 32)  # rounds × ceil(n / batch)
    assert table["noise multiplier σ"] == {"DiPSeN": 1.1} and table["δ"] == {"DiPSeN": 1e-5}
