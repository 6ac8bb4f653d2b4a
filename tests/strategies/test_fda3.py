"""FDA³ strategy, in process: it averages gradients, steps Adam, and pushes schemes per round."""

import numpy as np
import pytest
import torch

from clients.adversarial import SCHEMES_KEY
from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from strategies import build_strategy
from tests.flower_fakes import aggregate, configure, train_reply

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
    return build_strategy(config, initial_arrays=WEIGHTS)


def test_aggregate_averages_gradients_and_matches_torch_adam_over_rounds():
    strategy = make()
    parameters = WEIGHTS
    reference = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in WEIGHTS]
    adam = torch.optim.Adam(reference, lr=0.01, betas=(0.9, 0.999), foreach=False)
    rng = np.random.default_rng(0)
    for server_round in (1, 2, 3):
        configure(strategy, server_round, parameters, nodes=4)
        grads = [[rng.normal(size=w.shape).astype(np.float32) for w in WEIGHTS] for _ in range(4)]
        replies = [train_reply(i, g, num_examples=100 * (i + 1)) for i, g in enumerate(grads)]
        parameters = aggregate(strategy, server_round, replies)
        adam.zero_grad()
        for index, p in enumerate(reference):
            p.grad = torch.from_numpy(np.mean([g[index] for g in grads], axis=0))  # unweighted 1/N
        adam.step()
        for got, want in zip(parameters, reference, strict=True):
            np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-6)


def test_configure_train_pushes_each_devices_schemes_and_the_new_attack_from_its_round():
    strategy = make()
    for server_round, expected in ((2, "0:fgsm;1:fgsm;2:bim;3:bim"), (3, "0:fgsm;1:fgsm+pgd;2:bim;3:bim")):
        messages = configure(strategy, server_round, WEIGHTS, nodes=4)
        assert len(messages) == 4
        assert {msg.content["config"][SCHEMES_KEY] for msg in messages} == {expected}
        assert all(msg.content["config"]["fda3-initial-digest"] for msg in messages)
        assert all(msg.content["config"]["server-round"] == server_round for msg in messages)


def test_a_nan_gradient_is_rejected_before_adam_sees_it():
    strategy = make()
    configure(strategy, 1, WEIGHTS, nodes=4)
    good = [np.ones_like(w) for w in WEIGHTS]
    bad = [np.full_like(w, np.nan) for w in WEIGHTS]
    after = aggregate(strategy, 1, [train_reply(0, good), train_reply(1, bad)])
    assert all(np.isfinite(a).all() for a in after)
    np.testing.assert_allclose(after[0], WEIGHTS[0] - 0.01, atol=1e-6)  # Adam's first step: lr·sign(g)


def test_bad_assignments_fail_at_build_time_naming_the_key():
    with pytest.raises(ConfigError, match=r"'fda3-assign'.*unknown attack 'fgsmm'"):
        make(**{"fda3-assign": "fgsmm:0-3"})
    with pytest.raises(ConfigError, match="'fda3-assign'"):
        make(**{"fda3-assign": "fgsm:0-1"})  # partitions 2 and 3 get no scheme
