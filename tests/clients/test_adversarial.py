"""The FDA³ device, in process: it returns gradients of the α-weighted loss, and caches its pairs."""

import numpy as np
import pytest
import torch

import fedsec.fda3
from clients import build_client
from clients.adversarial import (
    INITIAL_DIGEST_KEY,
    SCHEMES_KEY,
    decode_schemes,
    encode_schemes,
    weights_digest,
)
from fedsec.config import RunConfig
from fedsec.experiment import torch_generator
from fedsec.fda3 import MixedLoss
from fedsec.training import set_weights


@pytest.fixture
def config(tmp_path):
    return RunConfig.from_run_config(
        {
            "dataset": "synthetic",
            "model": "lenet",
            "num-clients": 2,
            "validation-size": 0,
            "roles": "fda3-device:0-1",
            "cache-dir": str(tmp_path / "cache"),
            "fda3-buffer-size": 12,
            "fda3-batch-size": 8,
            "fda3-alpha": 0.3,
            "attack-params": "bim.max_iter=3",
        }
    )


@pytest.fixture
def generate_calls(monkeypatch):
    calls = []
    real = fedsec.fda3.generate

    def counting(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(fedsec.fda3, "generate", counting)
    return calls


def fit_config(server_round, schemes, digest):
    return {"server-round": server_round, SCHEMES_KEY: encode_schemes(schemes), INITIAL_DIGEST_KEY: digest}


def test_schemes_travel_encoded_and_each_device_reads_its_own():
    text = encode_schemes({0: ("fgsm",), 1: ("bim", "pgd")})
    assert text == "0:fgsm;1:bim+pgd"
    assert decode_schemes(text, 1) == ("bim", "pgd")
    with pytest.raises(ValueError, match="partition 2"):
        decode_schemes(text, 2)


def test_fit_returns_gradients_of_the_alpha_weighted_loss_not_weights(config, generate_calls):
    device = build_client(config, partition_id=1, num_partitions=2, role="fda3-device")
    initial = device.get_parameters({})
    digest = weights_digest(initial)
    gradients, n, metrics = device.fit(initial, fit_config(1, {0: ("fgsm",), 1: ("fgsm", "bim")}, digest))
    assert metrics["attacks"] == "fgsm+bim" and n == 8
    assert generate_calls == ["fgsm", "bim"]

    pairs = device.pairs(("fgsm", "bim"), initial, digest)  # from the cache: no new generation
    assert generate_calls == ["fgsm", "bim"] and len(pairs) == 24  # 12 naturals, once per attack
    model = device.model
    set_weights(model, initial)
    model.zero_grad()
    batch = torch.randperm(len(pairs), generator=torch_generator(config.seed, 1, 1))[:8]
    MixedLoss(alpha=0.3)(model, pairs.x[batch], pairs.y[batch]).backward()
    expected = [p.grad.numpy() for p in model.parameters()]
    assert len(gradients) == len(expected)
    for got, want in zip(gradients, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not any(np.allclose(g, w) for g, w in zip(gradients, initial, strict=True))


def test_a_scheme_added_mid_run_is_generated_against_the_initial_model_only_once(config, generate_calls):
    device = build_client(config, partition_id=0, num_partitions=2, role="fda3-device")
    initial = device.get_parameters({})
    digest = weights_digest(initial)
    device.fit(initial, fit_config(1, {0: ("fgsm",), 1: ("fgsm",)}, digest))
    later = [w + 0.01 for w in initial]  # the global model has moved on by round 5
    fresh = build_client(
        config, partition_id=0, num_partitions=2, role="fda3-device"
    )  # as Flower rebuilds it
    fresh.fit(later, fit_config(5, {0: ("fgsm", "bim"), 1: ("fgsm",)}, digest))
    assert generate_calls == ["fgsm", "bim"]
    # bim's pairs were made against the cached initial model, not the round-5 weights:
    from fedsec.fda3 import make_pairs

    buffer_pairs = fresh.pairs(("bim",), later, digest)
    set_weights(fresh.model, initial)
    direct = make_pairs(
        fresh.model,
        type(fresh.data)(x=buffer_pairs.natural, y=buffer_pairs.y),
        ["bim"],
        num_classes=10,
        seed=config.seed,
        params={"bim": {"max_iter": 3}},
    )
    torch.testing.assert_close(direct.adversarial, buffer_pairs.adversarial)
