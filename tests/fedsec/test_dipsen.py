"""Tests for the DiPSeN models (Ibitoye et al., 2021): noise layer, self-normalization, registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedsec.errors import ConfigError
from fedsec.models import (
    MODELS,
    BasicCNN,
    DiPSeN,
    GaussianNoise,
    PaperBasicCNN,
    PaperDiPSeN,
    build_model,
    model_options,
)
from fedsec.models.dipsen_paper import lecun_uniform_


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- noise layer


def test_noise_stays_on_in_eval_mode() -> None:
    model = build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=0)
    model.eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert not torch.equal(first, second)


def test_without_noise_eval_is_deterministic_despite_alpha_dropout() -> None:
    model = build_model(
        "dipsen", input_shape=(1, 28, 28), num_classes=10, seed=0, options={"sigma": 0.0, "dropout": 0.5}
    )
    model.eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()  # AlphaDropout (p=0.5) is what randomizes in training mode
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_noise_std_is_sensitivity_times_sigma() -> None:
    layer = GaussianNoise(sigma=0.5, sensitivity=2.0).eval()
    x = torch.full((100_000,), 3.0)
    torch.manual_seed(0)
    out = layer(x)
    noise = out - x
    assert abs(noise.std().item() - 1.0) < 0.05
    assert abs(noise.mean().item()) < 0.02
    assert torch.equal(x, torch.full((100_000,), 3.0))  # the input is not modified


def test_zero_sigma_is_identity() -> None:
    layer = GaussianNoise(sigma=0.0)
    x = torch.randn(3, 5)
    assert torch.equal(layer(x), x)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": math.nan}, "sigma"),
        ({"sigma": True}, "sigma"),
        ({"sigma": 0.1, "sensitivity": 0.0}, "sensitivity"),
        ({"sigma": 0.1, "sensitivity": -1.0}, "sensitivity"),
    ],
)
def test_noise_layer_validates(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GaussianNoise(**kwargs)


# ----------------------------------------------------------------------------- self-normalization


def test_selu_layer_self_normalizes_and_relu_layer_does_not() -> None:
    dipsen = build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=0).eval()
    basic = build_model("dipsen-basic", input_shape=(1, 28, 28), num_classes=10, seed=0).eval()
    assert isinstance(dipsen, DiPSeN) and isinstance(basic, BasicCNN)
    linear = dipsen.dense[0]
    assert isinstance(linear, nn.Linear) and isinstance(dipsen.dense[1], nn.SELU)
    assert isinstance(dipsen.dense[2], nn.AlphaDropout)
    assert torch.count_nonzero(linear.bias) == 0
    assert abs(linear.weight.std().item() - math.sqrt(1.0 / linear.in_features)) < 0.001
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4096, linear.in_features, generator=generator)  # standardized inputs

    with torch.no_grad():
        selu_out = dipsen.dense(x)
        relu_out = basic.dense(x)

    assert abs(selu_out.mean().item()) < 0.1
    assert abs(selu_out.var().item() - 1.0) < 0.15
    assert relu_out.mean().item() > 0.15  # ReLU (default init) shifts the mean away from 0
    assert relu_out.var().item() < 0.5


# ----------------------------------------------------------------------------- shapes, registry, options


@pytest.mark.parametrize("name", ["dipsen", "dipsen-basic"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_models_map_images_to_logits(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(name, input_shape=shape, num_classes=7, seed=0)
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 7)


def test_registry_names_and_parameter_counts() -> None:
    assert {"dipsen", "dipsen-basic"} <= set(MODELS)
    dipsen = build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=0)
    basic = build_model("dipsen-basic", input_shape=(1, 28, 28), num_classes=10, seed=0)
    # conv 320 + conv 18,496 + fc 3136*128+128 + fc 128*10+10; the noise layer has no parameters
    assert _num_params(dipsen) == _num_params(basic) == 421_642
    assert not any(isinstance(m, GaussianNoise) for m in basic.modules())


def test_options_are_forwarded_and_seeded_init_kept() -> None:
    model = build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=3, options={"sigma": 0.2})
    assert isinstance(model, DiPSeN)
    assert model.sigma == 0.2 and model.noise.sensitivity == 1.0
    default = build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=3)
    assert isinstance(default, DiPSeN) and default.sigma == 0.1
    a, b = model.state_dict(), default.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # options do not change the initial weights
    assert model_options("dipsen") == ("sigma", "sensitivity", "dropout", "test_noise")
    assert model_options("dipsen-paper") == model_options("dipsen")
    assert model_options("lenet") == ()


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="'dipsen' takes no option 'noise'") as info:
        build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=0, options={"noise": 1.0})
    assert "sigma, sensitivity, dropout" in str(info.value)


def test_model_without_options_refuses_them() -> None:
    with pytest.raises(ConfigError, match="model 'lenet' takes no option 'sigma'"):
        build_model("lenet", input_shape=(1, 28, 28), num_classes=10, seed=0, options={"sigma": 0.1})
    with pytest.raises(ConfigError, match="model 'dipsen-basic' takes no option 'sigma'"):
        build_model("dipsen-basic", input_shape=(1, 28, 28), num_classes=10, seed=0, options={"sigma": 0.1})


@pytest.mark.parametrize(
    ("options", "name"),
    [({"sigma": -1.0}, "sigma"), ({"sensitivity": 0.0}, "sensitivity"), ({"dropout": 1.0}, "dropout")],
)
def test_bad_option_values_are_named(options: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=0, options=options)


def test_constructors_validate_shape_and_classes() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        DiPSeN(input_shape=(1, 3, 28), num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        BasicCNN(input_shape=(1, 28, 28), num_classes=1)


# ----------------------------------------------------------------------------- test-time noise switch


@pytest.mark.parametrize("name", ["dipsen", "dipsen-paper"])
def test_test_noise_off_makes_eval_deterministic_but_training_stays_noisy(name: str) -> None:
    model = build_model(
        name, input_shape=(1, 28, 28), num_classes=10, seed=0, options={"sigma": 1.0, "test_noise": False}
    )
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))
        noise = model.noise.train()  # the layer still adds noise in training
        assert not torch.equal(noise(x), noise(x))
    with pytest.raises(ValueError, match="at_inference"):
        GaussianNoise(sigma=0.1, at_inference=1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- paper layout (§VI-B, §IV-C)


def test_lecun_uniform_bounds_and_variance() -> None:
    torch.manual_seed(0)
    dense = lecun_uniform_(torch.empty(256, 3136))
    bound = math.sqrt(3.0 / 3136)
    assert dense.abs().max().item() <= bound
    assert dense.abs().max().item() > 0.99 * bound  # 800k draws reach the edge
    assert abs(dense.var().item() - 1.0 / 3136) < 0.02 / 3136  # variance 1/fan_in, as LeCun normal
    conv = lecun_uniform_(torch.empty(64, 32, 3, 3))  # fan_in = 32·3·3 = 288
    assert conv.abs().max().item() <= math.sqrt(3.0 / 288)
    assert conv.abs().max().item() > 0.95 * math.sqrt(3.0 / 288)
    with pytest.raises(ValueError, match="dimensions"):
        lecun_uniform_(torch.empty(5))


def test_paper_dipsen_is_two_blocks_then_one_dense_layer_with_lecun_uniform_weights() -> None:
    model = build_model("dipsen-paper", input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert isinstance(model, PaperDiPSeN)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [model.head] and model.head.in_features == 64 * 7 * 7  # no fc 128
    assert [type(m) for m in model.block2] == [nn.Conv2d, nn.SELU, nn.MaxPool2d, nn.AlphaDropout]
    assert isinstance(model.noise, GaussianNoise) and model.noise.at_inference
    for layer, fan_in in ((model.block1[0], 9), (model.block2[0], 288), (model.head, 3136)):
        bound = math.sqrt(3.0 / fan_in)
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.9 * bound
        assert torch.count_nonzero(layer.bias) == 0
    # conv 320 + conv 18,496 + fc 3136·10 + 10
    assert _num_params(model) == 50_186
    ours = build_model("dipsen", input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert isinstance(ours, DiPSeN) and ours.dense[0].out_features == 128  # fedsec's layout keeps fc 128


def test_paper_basic_cnn_matches_the_paper_dipsen_without_noise_or_selu() -> None:
    basic = build_model("dipsen-paper-basic", input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert isinstance(basic, PaperBasicCNN)
    assert _num_params(basic) == 50_186
    assert not any(isinstance(m, GaussianNoise | nn.SELU | nn.AlphaDropout) for m in basic.modules())
    assert {"dipsen-paper", "dipsen-paper-basic"} <= set(MODELS)
    assert basic(torch.rand(2, 1, 28, 28)).shape == (2, 10)
