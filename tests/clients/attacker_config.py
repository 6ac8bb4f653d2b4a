"""The small synthetic federation the malicious-client tests share."""

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


def config(**overrides) -> RunConfig:
    return RunConfig.from_run_config({**BASE, **overrides})
