"""FedAvg through the real strategy and real clients, driven in process (no Ray).

The server side is what the ServerApp builds (guarded strategy, server-side
evaluation writing run records, the fit config); the rounds are driven by
calling the strategy's ``configure_fit``, the clients' ``fit`` and the
strategy's ``aggregate_fit`` directly, with one extra client sending NaNs.
"""

import numpy as np
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import SimpleClientManager

from clients import build_client
from fedsec.config import RunConfig
from fedsec.experiment import load_bundle, new_model, server_data
from fedsec.results import RunRecorder, read_metrics, read_summary
from fedsec.training import get_weights
from simulations.server_app import fit_config, make_evaluate_fn
from strategies import build_strategy
from tests.flower_fakes import FakeProxy, fit_result


def test_three_rounds_of_fedavg_raise_server_accuracy_and_drop_a_nan_client(tmp_path):
    config = RunConfig.from_run_config(
        {"dataset": "synthetic", "model": "cnn", "num-clients": 3, "validation-size": 30, "local-epochs": 2}
    )
    bundle = load_bundle(config)
    recorder = RunRecorder(out_dir=tmp_path, scenario="in-process", config=config.to_run_config())
    model = new_model(config, bundle)
    test_split = server_data(config, bundle)["test"]
    strategy = build_strategy(
        config,
        initial_parameters=ndarrays_to_parameters(get_weights(model)),
        evaluate_fn=make_evaluate_fn(config, model, test_split, bundle.num_classes, recorder),
        on_fit_config_fn=fit_config,
        recorder=recorder,
    )
    manager = SimpleClientManager()
    clients = {}
    for pid in range(3):
        proxy = FakeProxy(str(pid))
        manager.register(proxy)
        clients[proxy.cid] = (pid, build_client(config, partition_id=pid, num_partitions=3))

    parameters = strategy.initialize_parameters(manager)
    strategy.evaluate(0, parameters)
    for server_round in (1, 2, 3):
        instructions = strategy.configure_fit(server_round, parameters, manager)
        assert len(instructions) == 3
        results = []
        for proxy, fit_ins in instructions:
            pid, client = clients[proxy.cid]
            assert fit_ins.config["server-round"] == server_round
            weights, n, _ = client.fit(parameters_to_ndarrays(fit_ins.parameters), fit_ins.config)
            results.append(fit_result(pid, weights, n))
        broken = [w.copy() for w in weights]
        broken[0][...] = np.nan
        results.append(fit_result(9, broken, num_examples=10_000))
        parameters, _ = strategy.aggregate_fit(server_round, results, [])
        strategy.evaluate(server_round, parameters)

    summary = recorder.finish()
    rounds = read_metrics(tmp_path)
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert rounds[0]["accuracy"] < 0.3 and rounds[-1]["accuracy"] > 0.8
    assert all(np.isfinite(w).all() for w in parameters_to_ndarrays(parameters))
    assert all(list(r["rejected"]) == ["9"] for r in rounds[1:])
    assert read_summary(tmp_path)["rejected_updates"] == 3 == summary["rejected_updates"]
