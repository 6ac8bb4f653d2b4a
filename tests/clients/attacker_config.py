"""The small synthetic federation the malicious-client tests share, and its one-thread fixture."""

import pytest
import torch

from fedsec.config import RunConfig

BASE = {
    "dataset": "synthetic",
    "model": "lenet",
    "num-clients": 4,
    "validation-size": 20,
    "local-epochs": 2,
    "attack-source": 5,
    "attack-target": 7,
}


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def config(**overrides) -> RunConfig:
    return RunConfig.from_run_config({**BASE, **overrides})
