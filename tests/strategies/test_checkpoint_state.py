"""Every stateful strategy gives back the state it had, through a checkpoint on disk."""

import numpy as np
import pytest

from fedsec.checkpoint import load_checkpoint, save_checkpoint
from fedsec.config import RunConfig
from strategies import build_strategy
from strategies.wrapper import restore_strategy_state, strategy_state
from tests.flower_fakes import aggregate, configure, train_reply

GLOBAL = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]


def rounds_of(strategy, seed: int, rounds: int = 2):
    rng = np.random.default_rng(seed)
    for server_round in range(1, rounds + 1):
        configure(strategy, server_round, GLOBAL, nodes=5)
        replies = [
            train_reply(i, [rng.normal(size=g.shape).astype(np.float32) for g in GLOBAL]) for i in range(5)
        ]
        aggregate(strategy, server_round, replies)


def states_equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize(
    "settings",
    [
        {"strategy": "foolsgold"},
        {"strategy": "fda3", "fda3-assign": "fgsm:0-4"},
        {"strategy": "layered"},
        {"strategy": "fedavg", "detectors": "l2,cosine", "calibration-rounds": 1, "fraction-fit": 0.6},
    ],
)
def test_state_survives_a_checkpoint_and_a_fresh_strategy_continues_identically(settings, tmp_path):
    config = RunConfig.from_run_config({"num-clients": 5, "update-norm-bound": 0, **settings})
    first = build_strategy(config, initial_arrays=GLOBAL)
    rounds_of(first, seed=0)
    state = strategy_state(first)
    assert state["inner"]["own"] or settings["strategy"] == "fedavg"  # the strategy has state to keep
    save_checkpoint(tmp_path / "checkpoint", round=2, arrays=GLOBAL, state=state)

    second = build_strategy(config, initial_arrays=GLOBAL)
    restore_strategy_state(second, load_checkpoint(tmp_path / "checkpoint").state)
    assert states_equal(strategy_state(second), state)
    assert second.sampler.draws == first.sampler.draws
