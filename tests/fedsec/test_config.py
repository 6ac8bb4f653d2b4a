"""The run configuration: unknown keys and bad values raise naming the key."""

import tomllib
from pathlib import Path

import pytest

from fedsec.config import RunConfig
from fedsec.config_values import parse_assignment
from fedsec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_parse_and_match_pyproject_app_config():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    app_config = pyproject["tool"]["flwr"]["app"]["config"]
    assert app_config == RunConfig.defaults(), "run `.venv/bin/python scripts/sync_app_config.py`"
    assert RunConfig.from_run_config(app_config) == RunConfig()


def test_values_are_parsed_into_typed_fields():
    config = RunConfig.from_run_config({"learning-rate": 1, "num-clients": 4.0, "strategy": "krum"})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.num_clients == 4 and isinstance(config.num_clients, int)
    assert config.to_run_config()["strategy"] == "krum"


def test_unknown_key_raises_naming_it_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown config key 'bogus-key'"):
        RunConfig.from_run_config({"bogus-key": 1})
    with pytest.raises(ConfigError, match="did you mean 'learning-rate'"):
        RunConfig.from_run_config({"learning-rat": 0.1})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning-rate", -0.1, "'learning-rate' must be > 0"),
        ("num-server-rounds", 0, "'num-server-rounds' must be >= 1"),
        ("fraction-fit", 1.5, r"'fraction-fit' must be in \(0, 1\]"),
        ("partitioning", "random", "'partitioning' must be one of: iid, dirichlet, pathological"),
        ("dataset", "imagenet", "'dataset' must be one of: .*mnist-5k"),
        ("model", "vgg", "'model' must be one of: .*lenet"),
        ("out-dir", "relative/dir", "'out-dir' must be an absolute path"),
        ("trim-beta", 0.5, r"'trim-beta' must be in \[0, 0.5\)"),
    ],
)
def test_bad_values_raise_naming_the_key_and_what_is_allowed(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        RunConfig.from_run_config({key: value})


@pytest.mark.parametrize(
    ("key", "value"), [("seed", "42"), ("num-clients", 2.5), ("dataset", 3), ("seed", True)]
)
def test_wrong_types_raise(key, value):
    with pytest.raises(ConfigError, match=f"'{key}' must be a"):
        RunConfig.from_run_config({key: value})


def test_config_is_frozen_and_replace_validates():
    config = RunConfig()
    with pytest.raises(AttributeError):
        config.seed = 1  # type: ignore[misc]
    assert config.replace(seed=7).seed == 7
    with pytest.raises(ConfigError, match="'seed'"):
        config.replace(seed=-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning-rate=0.1", ("learning-rate", 0.1)),
        ("num-clients=3", ("num-clients", 3)),
        ("strategy=krum", ("strategy", "krum")),
        ('strategy="fedmedian"', ("strategy", "fedmedian")),
        ("verbose=true", ("verbose", True)),
    ],
)
def test_parse_assignment_reads_toml_literals(text, expected):
    assert parse_assignment(text) == expected


def test_parse_assignment_rejects_missing_equals():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment("strategy")


def test_momentum_with_adam_is_refused_up_front():
    with pytest.raises(ConfigError, match="'momentum' applies to optimizer 'sgd' only"):
        RunConfig.from_run_config({"optimizer": "adam"})
    assert RunConfig.from_run_config({"optimizer": "adam", "momentum": 0.0}).optimizer == "adam"


def test_cross_key_checks_read_lists_with_spaces_and_refuse_a_stateless_perfect_knowledge_estimate():
    def parse(**values):
        return RunConfig.from_run_config(values)

    with pytest.raises(ConfigError, match="robust-harness"):
        parse(**{"robust-harness": "logits, paper", "robust-attacks": "fgsm, jsma"})
    assert parse(**{"robust-harness": "logits, paper", "robust-attacks": "fgsm, pgd"}).robust_harness
    with pytest.raises(ConfigError, match="perfect-knowledge-hook"):
        parse(**{"perfect-knowledge-hook": True, "edge-defense": "abl", "abl-schedule": "phased"})
    assert parse(**{"perfect-knowledge-hook": True, "edge-defense": "abl"}).perfect_knowledge_hook


@pytest.mark.parametrize(
    ("refused", "allowed", "message"),
    [
        ({"attack-source": 3, "attack-target": 3}, {"attack-source": 3, "attack-target": 4}, "must differ"),
        (
            {"attack-start-round": 5, "attack-end-round": 4},
            {"attack-start-round": 5, "attack-end-round": 5},
            "'attack-end-round' must be 0 or >= attack-start-round",
        ),
        ({"optimizer": "adam", "momentum": 0.5}, {"optimizer": "sgd", "momentum": 0.5}, "'momentum'"),
    ],
)
def test_each_rule_between_keys_refuses_its_combination_and_nothing_next_to_it(refused, allowed, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_run_config(refused)
    config = RunConfig.from_run_config(allowed)
    assert RunConfig().replace(**{k.replace("-", "_"): v for k, v in allowed.items()}) == config
    with pytest.raises(ConfigError, match=message):  # replace() checks the same rules
        config.replace(**{k.replace("-", "_"): v for k, v in refused.items()})
