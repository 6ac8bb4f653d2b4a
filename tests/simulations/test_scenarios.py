"""Scenario files: every shipped one validates; overrides win; bad files are refused by key."""

import pytest

from fedsec.errors import ConfigError, UnknownNameError
from simulations.scenarios import available, load_scenario


def test_every_shipped_scenario_validates_and_has_a_description():
    names = available()
    assert "quickstart" in names
    for name in names:
        scenario = load_scenario(name)
        assert scenario.description, f"{name} lacks a first-line # description"
        assert scenario.config().scenario == scenario.name


def test_quickstart_is_the_documented_baseline():
    config = load_scenario("quickstart").config()
    assert (config.num_clients, config.strategy, config.model, config.dataset, config.partitioning) == (
        10,
        "fedavg",
        "lenet",
        "mnist-5k",
        "iid",
    )
    assert config.num_server_rounds == 5


def test_overrides_win_over_the_file():
    config = load_scenario("quickstart").config({"strategy": "krum", "num-clients": 3})
    assert config.strategy == "krum" and config.num_clients == 3


def test_a_scenario_path_with_a_bad_key_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("# mine\nnum-clients = 2\nlearnin-rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'learnin-rate'"):
        load_scenario(str(path))
    path.write_text("# mine\nnum-clients = 2\n")
    assert load_scenario(str(path)).config().num_clients == 2


def test_unknown_scenario_and_nested_tables_are_refused(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown scenario"):
        load_scenario("missing")
    path = tmp_path / "nested.toml"
    path.write_text("[roles]\nx = 1\n")
    with pytest.raises(ConfigError, match="flat run-config values"):
        load_scenario(str(path))
