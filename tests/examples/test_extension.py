"""The worked extension example (examples/fedsec_extension.py): registered from outside, used by name."""

import pytest

from clients import CLIENT_ROLES, MALICIOUS_ROLES
from fedsec.config import RunConfig
from fedsec.data import DATASETS
from fedsec.errors import ConfigError
from fedsec.models import MODELS
from fedsec.results import read_metrics, read_summary
from simulations import server_app
from strategies import STRATEGIES
from tests.flower_fakes import FakeGrid, app_nodes, server_context

PLUGIN = {"plugins": "examples.fedsec_extension"}
RUN = {
    **PLUGIN,
    "dataset": "stripes",
    "model": "tiny-mlp",
    "strategy": "median-clipped-fedavg",
    "roles": "sign-flip:3",
    "num-server-rounds": 3,
    "validation-size": 50,
    "learning-rate": 0.1,
    "node-wait": 0.2,
}


def test_the_plugins_key_registers_the_examples_names_before_they_are_checked():
    config = RunConfig.from_run_config(RUN)
    assert (config.dataset, config.model, config.strategy) == ("stripes", "tiny-mlp", "median-clipped-fedavg")
    assert "stripes" in DATASETS and "tiny-mlp" in MODELS and "median-clipped-fedavg" in STRATEGIES
    assert "sign-flip" in CLIENT_ROLES and MALICIOUS_ROLES["sign-flip"] == "untargeted"


def test_an_unimportable_plugin_names_the_key_and_the_module():
    with pytest.raises(ConfigError, match="'plugins': cannot import 'no_such_fedsec_plugin'"):
        RunConfig.from_run_config({"plugins": "no_such_fedsec_plugin"})


def test_a_federation_of_the_examples_parts_learns_despite_a_sign_flipping_client(tmp_path):
    config = {**RUN, "num-clients": 4, "out-dir": str(tmp_path)}
    server_app.app(FakeGrid(app_nodes(config, 4)), server_context(config))
    rounds = read_metrics(tmp_path)
    assert rounds[0]["accuracy"] < 0.7 and rounds[-1]["accuracy"] > 0.9
    # the plugin's role is malicious ground truth: the detectors wrapper measures it every round
    assert all("3" in r["update_stats"] for r in rounds[1:])
    assert read_summary(tmp_path)["config"]["strategy"] == "median-clipped-fedavg"
