"""The DiPSeN client: reproducible noise per round, learns, leaves the global RNG alone."""

import numpy as np
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
