"""The ``device`` key: how it resolves, and that every part that runs a model is handed the resolved device.

The machine that runs the suite may have no GPU, so CUDA's presence is patched where the resolver
asks for it, and the plumbing is checked with spies: what the resolver was asked, where models were
moved, what ART was told.
"""

import pytest
import torch
from torch import nn

import fedsec.device as device_module
from clients import build_client
from fedsec.attacks import evasion
from fedsec.config import RunConfig
from fedsec.device import art_device_type, model_device, resolve_device, rng_devices
from fedsec.errors import ConfigError
from simulations.launcher import simulation_federation
from simulations.validate import check_gpus, validate

SMALL = {"dataset": "synthetic", "model": "cnn", "num-clients": 3, "validation-size": 30, "local-epochs": 1}


def cuda_visible(monkeypatch: pytest.MonkeyPatch, visible: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)


@pytest.mark.parametrize(
    ("name", "visible", "expected"),
    [
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("cpu", True, "cpu"),
        ("cpu", False, "cpu"),
        ("cuda", True, "cuda"),
    ],
)
def test_the_key_resolves_to_cuda_only_where_a_gpu_is_visible_and_allowed(
    monkeypatch, name, visible, expected
):
    cuda_visible(monkeypatch, visible)
    assert resolve_device(name) == torch.device(expected)


def test_cuda_without_a_gpu_and_unknown_names_are_config_errors_naming_the_key(monkeypatch):
    cuda_visible(monkeypatch, False)
    with pytest.raises(ConfigError, match="'device' is 'cuda' but no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="'device' must be one of: auto, cpu, cuda, got 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(ConfigError, match="device"):
        RunConfig.from_run_config({"device": "tpu"})


def test_art_gets_gpu_for_cuda_and_cpu_for_the_cpu_and_rng_forks_only_cuda():
    assert art_device_type(torch.device("cuda", 1)) == "gpu"
    assert art_device_type(torch.device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="CPU or on CUDA only"):
        art_device_type(torch.device("meta"))
    assert rng_devices(torch.device("cpu")) == []
    assert rng_devices(torch.device("cuda", 2)) == [2]
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")


def test_preflight_refuses_gpus_the_machine_does_not_have(monkeypatch):
    cuda_visible(monkeypatch, False)
    with pytest.raises(ConfigError, match=r"'client-resources-num-gpus' is 0\.5 but no CUDA device"):
        check_gpus(RunConfig.from_run_config({"client-resources-num-gpus": 0.5, "device": "cpu"}))
    with pytest.raises(ConfigError, match="'device' is 'cuda'"):
        validate(RunConfig.from_run_config({**SMALL, "device": "cuda"}))
    check_gpus(RunConfig.from_run_config({"device": "auto"}))  # the default runs anywhere
    cuda_visible(monkeypatch, True)
    check_gpus(RunConfig.from_run_config({"client-resources-num-gpus": 0.25, "device": "cuda"}))


def test_the_federation_asks_ray_for_each_clients_gpu_share():
    assert simulation_federation(4).endswith("client-resources-num-gpus=0")
    assert (
        simulation_federation(4, 0.25)
    ) == "num-supernodes=4 client-resources-num-cpus=1 client-resources-num-gpus=0.25"
    with pytest.raises(ValueError, match="num_gpus must be >= 0"):
        simulation_federation(4, -1)


class Recorder:
    """``resolve_device`` that records what it was asked and answers the CPU."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, name: str) -> torch.device:
        self.asked.append(name)
        return torch.device("cpu")


@pytest.mark.parametrize("role", ["benign", "dipsen", "label-flip"])
def test_clients_resolve_the_key_and_train_and_evaluate_on_that_device(monkeypatch, role):
    import clients.benign
    import fedsec.training

    recorder = Recorder()
    monkeypatch.setattr(clients.benign, "resolve_device", recorder)
    monkeypatch.setattr(device_module, "resolve_device", recorder)
    seen: list[torch.device | None] = []
    for name in ("train", "evaluate"):
        real = getattr(clients.benign, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(kwargs.get("device"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(clients.benign, name, spy)
    assert fedsec.training.train is not clients.benign.train
    config = RunConfig.from_run_config(
        {**SMALL, "device": "cpu", "model": "dipsen" if role == "dipsen" else "cnn"}
    )
    client = build_client(config, partition_id=0, num_partitions=3, role=role)
    weights = client.get_parameters({})
    client.fit(weights, {"server-round": 1})
    client.evaluate(weights, {})
    assert recorder.asked == ["cpu"]
    assert client.device == torch.device("cpu") and model_device(client.model) == torch.device("cpu")
    assert seen and all(device == torch.device("cpu") for device in seen)


def test_attacks_tell_art_the_models_device(monkeypatch):
    told: list[str] = []
    real = evasion.PyTorchClassifier

    def spy(*args, **kwargs):
        told.append(kwargs["device_type"])
        return real(*args, **kwargs)

    monkeypatch.setattr(evasion, "PyTorchClassifier", spy)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(4, 1, 4, 4)
    adv = evasion.generate("fgsm", model, x, None, num_classes=3, device=torch.device("cpu"))
    evasion.generate("fgsm", model, x, None, num_classes=3)  # default: where the model is
    assert told == ["cpu", "cpu"]
    assert adv.shape == x.shape and not torch.equal(adv, x)


def test_server_distillation_and_the_gan_audit_resolve_the_key_and_hold_their_networks_there(monkeypatch):
    import strategies.registry as registry
    from strategies import build_strategy
    from strategies.gan_audit import AuditStrategy
    from strategies.layered import ServerDistillation

    recorder = Recorder()
    monkeypatch.setattr(registry, "resolve_device", recorder)
    config = RunConfig.from_run_config(
        {
            **SMALL,
            "model": "lenet",
            "device": "cpu",
            "server-distill": True,
            "clean-size": 50,
            "audit": "gan",
            "auxiliary-size": 50,
        }
    )
    guarded = build_strategy(config)
    assert recorder.asked == ["cpu", "cpu"]
    found: dict[str, object] = {}
    strategy: object = guarded
    while strategy is not None:
        found[type(strategy).__name__] = strategy
        strategy = getattr(strategy, "inner", None)
    audit, distill = found["AuditStrategy"], found["ServerDistillation"]
    assert isinstance(audit, AuditStrategy) and isinstance(distill, ServerDistillation)
    assert audit.device == distill.device == torch.device("cpu")
    assert audit.generator is not None and model_device(audit.generator) == torch.device("cpu")
