"""Tests for the model registry and the three registered networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsec.errors import UnknownNameError
from fedsec.models import MODELS, build_model


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_registry_holds_the_three_models() -> None:
    assert {"lenet", "cnn", "resnet18"} <= set(MODELS)


@pytest.mark.parametrize(
    ("name", "shape", "batch"),
    [
        ("lenet", (1, 28, 28), 3),
        ("lenet", (1, 8, 8), 3),
        ("lenet", (1, 12, 12), 3),
        ("lenet", (3, 32, 32), 3),
        ("cnn", (1, 28, 28), 3),
        ("cnn", (1, 8, 8), 3),
        ("cnn", (3, 32, 32), 3),
        ("resnet18", (3, 32, 32), 2),
        ("resnet18", (1, 8, 8), 2),
    ],
)
def test_model_maps_images_to_logits(name: str, shape: tuple[int, int, int], batch: int) -> None:
    model = build_model(name, input_shape=shape, num_classes=7, seed=0)
    out = model(torch.rand(batch, *shape))
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()
    # logits, not probabilities: rows need not sum to one
    assert not torch.allclose(out.sum(dim=1), torch.ones(batch))


def test_cnn_has_the_paper_parameter_count() -> None:
    model = build_model("cnn", input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert _num_params(model) == 1_663_370


def test_lenet_has_the_classic_parameter_count_on_mnist() -> None:
    model = build_model("lenet", input_shape=(1, 28, 28), num_classes=10, seed=0)
    assert _num_params(model) == 61_706


def test_resnet18_stem_is_adapted_to_small_inputs() -> None:
    model = build_model("resnet18", input_shape=(1, 28, 28), num_classes=10, seed=0)
    conv1 = model.get_submodule("conv1")
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.in_channels == 1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert isinstance(model.get_submodule("maxpool"), nn.Identity)
    # 32x32 input keeps full resolution through the stem: layer4 sees 4x4
    feats: list[torch.Tensor] = []
    model.get_submodule("layer4").register_forward_hook(lambda _m, _i, o: feats.append(o))
    model.eval()
    model(torch.rand(1, 1, 32, 32))
    assert feats[0].shape[-2:] == (4, 4)


@pytest.mark.parametrize(
    ("name", "shape"), [("lenet", (1, 28, 28)), ("cnn", (1, 8, 8)), ("resnet18", (3, 8, 8))]
)
def test_same_seed_same_weights_different_seed_different(name: str, shape: tuple[int, int, int]) -> None:
    a = build_model(name, input_shape=shape, num_classes=10, seed=123)
    torch.rand(5)  # moving the global RNG between builds must not matter
    b = build_model(name, input_shape=shape, num_classes=10, seed=123)
    c = build_model(name, input_shape=shape, num_classes=10, seed=124)
    assert _state_equal(a, b)
    assert not _state_equal(a, c)


def test_build_model_leaves_global_rng_untouched() -> None:
    torch.manual_seed(2024)
    before = torch.get_rng_state().clone()
    build_model("cnn", input_shape=(1, 8, 8), num_classes=3, seed=7)
    after = torch.get_rng_state()
    assert torch.equal(before, after)


def test_unknown_model_name_lists_choices() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_model("vgg", input_shape=(1, 28, 28), num_classes=10, seed=0)
    message = str(info.value)
    assert "vgg" in message
    for choice in ("cnn", "lenet", "resnet18"):
        assert choice in message


@pytest.mark.parametrize(
    "shape",
    [(1, 28), (1, 28, 28, 1), (0, 28, 28), (1, -1, 28), (1, 28.0, 28), "1x28x28", (True, 28, 28)],
)
def test_bad_input_shape_is_named(shape: object) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        build_model("cnn", input_shape=shape, num_classes=10, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.0, True])
def test_bad_num_classes_is_named(num_classes: object) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model("lenet", input_shape=(1, 28, 28), num_classes=num_classes, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, None])
def test_bad_seed_is_named(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        build_model("lenet", input_shape=(1, 28, 28), num_classes=10, seed=seed)  # type: ignore[arg-type]


def test_lenet_refuses_inputs_below_8_pixels() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        build_model("lenet", input_shape=(1, 7, 28), num_classes=10, seed=0)


def test_factories_validate_when_called_directly() -> None:
    for name in ("lenet", "cnn", "resnet18"):
        with pytest.raises(ValueError, match="num_classes"):
            MODELS[name](input_shape=(1, 28, 28), num_classes=1)
