"""FDA³ strategy, in process: it averages gradients, steps Adam, and pushes schemes per round."""

import numpy as np
import pytest
import torch
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import SimpleClientManager

from clients.adversarial import SCHEMES_KEY
from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from strategies import build_strategy
from tests.flower_fakes import FakeProxy, fit_result

WEIGHTS = [np.array([[1.0, -2.0], [0.5, 0.0]], np.float32), np.array([0.1, 0.2], np.float32)]


def make(**overrides):
    config = RunConfig.from_run_config(
        {
            "strategy": "fda3",
            "num-clients": 4,
            "fda3-assign": "fgsm:0-1,bim:2-3",
            "fda3-new-attacks": "pgd@3:1",
            "server-learning-rate": 0.01,
            **overrides,
        }
    )
    strategy = build_strategy(config, initial_parameters=ndarrays_to_parameters(WEIGHTS))
    manager = SimpleClientManager()
    for cid in range(4):
        manager.register(FakeProxy(str(cid)))
    return strategy, manager


def test_aggregate_averages_gradients_and_matches_torch_adam_over_rounds():
    strategy, manager = make()
    parameters = strategy.initialize_parameters(manager)
    reference = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in WEIGHTS]
    adam = torch.optim.Adam(reference, lr=0.01, betas=(0.9, 0.999), foreach=False)
    rng = np.random.default_rng(0)
    for server_round in (1, 2, 3):
        strategy.configure_fit(server_round, parameters, manager)
        grads = [[rng.normal(size=w.shape).astype(np.float32) for w in WEIGHTS] for _ in range(4)]
        results = [fit_result(i, g, num_examples=100 * (i + 1)) for i, g in enumerate(grads)]
        parameters, _ = strategy.aggregate_fit(server_round, results, [])
        adam.zero_grad()
        for index, p in enumerate(reference):
            p.grad = torch.from_numpy(np.mean([g[index] for g in grads], axis=0))  # unweighted 1/N
        adam.step()
        for got, want in zip(parameters_to_ndarrays(parameters), reference, strict=True):
            np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-6)


def test_configure_fit_pushes_each_devices_schemes_and_the_new_attack_from_its_round():
    strategy, manager = make()
    parameters = strategy.initialize_parameters(manager)
    for server_round, expected in ((2, "0:fgsm;1:fgsm;2:bim;3:bim"), (3, "0:fgsm;1:fgsm+pgd;2:bim;3:bim")):
        instructions = strategy.configure_fit(server_round, parameters, manager)
        assert len(instructions) == 4
        assert {ins.config[SCHEMES_KEY] for _, ins in instructions} == {expected}
        assert all(ins.config["fda3-initial-digest"] for _, ins in instructions)


def test_a_nan_gradient_is_rejected_before_adam_sees_it():
    strategy, manager = make()
    parameters = strategy.initialize_parameters(manager)
    strategy.configure_fit(1, parameters, manager)
    good = [np.ones_like(w) for w in WEIGHTS]
    bad = [np.full_like(w, np.nan) for w in WEIGHTS]
    updated, _ = strategy.aggregate_fit(1, [fit_result(0, good), fit_result(1, bad)], [])
    after = parameters_to_ndarrays(updated)
    assert all(np.isfinite(a).all() for a in after)
    np.testing.assert_allclose(after[0], WEIGHTS[0] - 0.01, atol=1e-6)  # Adam's first step: lr·sign(g)


def test_bad_assignments_fail_at_build_time_naming_the_key():
    with pytest.raises(ConfigError, match=r"'fda3-assign'.*unknown attack 'fgsmm'"):
        make(**{"fda3-assign": "fgsmm:0-3"})
    with pytest.raises(ConfigError, match="'fda3-assign'"):
        make(**{"fda3-assign": "fgsm:0-1"})  # partitions 2 and 3 get no scheme
