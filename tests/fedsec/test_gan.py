"""Tests for PDGAN's generator and the discriminator built from the global model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsec.models import build_model
from fedsec.models.gan import (
    Generator,
    PaperGenerator,
    build_generator,
    discriminator_from,
    refresh_discriminator,
)

K = 10
CASES = [("lenet", (1, 28, 28)), ("cnn", (1, 8, 8))]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _final_keys(model: nn.Module) -> tuple[str, str]:
    keys = list(model.state_dict())
    return keys[-2], keys[-1]  # classifier's last Linear: weight, bias


def _assert_initialised_from(disc: nn.Module, global_model: nn.Module, fake_row: dict[str, torch.Tensor]):
    src, dst = global_model.state_dict(), disc.state_dict()
    assert src.keys() == dst.keys()
    final = _final_keys(global_model)
    for key, value in src.items():
        if key in final:
            assert dst[key].shape[0] == K + 1
            assert torch.equal(dst[key][:K], value)
            assert torch.equal(dst[key][K], fake_row[key])
        else:
            assert torch.equal(dst[key], value), key


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_discriminator_is_initialised_from_the_global_model(name, shape) -> None:
    global_model = build_model(name, input_shape=shape, num_classes=K, seed=1)
    before = {k: v.clone() for k, v in global_model.state_dict().items()}
    fresh = build_model(name, input_shape=shape, num_classes=K + 1, seed=2)
    fake_row = {k: fresh.state_dict()[k][K].clone() for k in _final_keys(fresh)}

    disc = discriminator_from(global_model, model_name=name, input_shape=shape, num_classes=K, seed=2)

    _assert_initialised_from(disc, global_model, fake_row)
    x = torch.rand((4, *shape), generator=torch.Generator().manual_seed(0))
    global_model.eval()
    disc.eval()
    with torch.no_grad():
        out, ref = disc(x), global_model(x)
    assert out.shape == (4, K + 1)
    torch.testing.assert_close(out[:, :K], ref)
    # the global model is not touched
    assert all(torch.equal(v, before[k]) for k, v in global_model.state_dict().items())


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_refresh_copies_the_new_global_weights_and_keeps_the_fake_row(name, shape) -> None:
    global_model = build_model(name, input_shape=shape, num_classes=K, seed=1)
    disc = discriminator_from(global_model, model_name=name, input_shape=shape, num_classes=K, seed=2)
    with torch.no_grad():  # the discriminator drifts during GAN training ...
        for p in disc.parameters():
            p.add_(0.5)
    fake_row = {k: disc.state_dict()[k][K].clone() for k in _final_keys(disc)}
    with torch.no_grad():  # ... and the next round brings a new global model
        for p in global_model.parameters():
            p.mul_(-2.0).add_(0.25)
    assert not torch.equal(
        disc.state_dict()[_final_keys(disc)[0]][:K], global_model.state_dict()[_final_keys(global_model)[0]]
    )

    refresh_discriminator(disc, global_model)

    _assert_initialised_from(disc, global_model, fake_row)


def test_discriminator_rejects_architecture_and_class_mismatch() -> None:
    lenet = build_model("lenet", input_shape=(1, 28, 28), num_classes=K, seed=1)
    with pytest.raises(ValueError, match="architecture"):
        discriminator_from(lenet, model_name="cnn", input_shape=(1, 28, 28), num_classes=K, seed=2)
    other_size = build_model("lenet", input_shape=(1, 32, 32), num_classes=K, seed=1)
    with pytest.raises(ValueError, match="architecture"):
        discriminator_from(other_size, model_name="lenet", input_shape=(1, 28, 28), num_classes=K, seed=2)
    with pytest.raises(ValueError, match="num_classes"):
        discriminator_from(lenet, model_name="lenet", input_shape=(1, 28, 28), num_classes=5, seed=2)
    disc = discriminator_from(lenet, model_name="lenet", input_shape=(1, 28, 28), num_classes=K, seed=2)
    with pytest.raises(ValueError, match="architecture"):
        refresh_discriminator(disc, disc)  # no final layer with one output fewer


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_generator_output_shape_and_range(shape) -> None:
    gen = Generator(latent_dim=16, output_shape=shape, base_channels=8)
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) * 10.0
    out = gen(z)
    assert out.shape == (5, *shape)
    assert out.requires_grad
    assert float(out.detach().min()) >= 0.0
    assert float(out.detach().max()) <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"output_shape": (1, 30, 30)}, "output_shape"),
        ({"output_shape": (1, 28, 30)}, "output_shape"),
        ({"output_shape": (1, 28)}, "output_shape"),
        ({"output_shape": (1, 28, 28), "latent_dim": 0}, "latent_dim"),
        ({"output_shape": (1, 28, 28), "base_channels": 3}, "base_channels"),
    ],
)
def test_generator_rejects_bad_parameters(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        Generator(**kwargs)


def test_sample_is_deterministic_under_the_same_seed_and_restores_the_mode() -> None:
    gen = Generator(latent_dim=8, output_shape=(1, 8, 8), base_channels=8)
    gen.train()
    a = gen.sample(6, generator=torch.Generator().manual_seed(3))
    b = gen.sample(6, generator=torch.Generator().manual_seed(3))
    c = gen.sample(6, generator=torch.Generator().manual_seed(4))
    assert a.shape == (6, 1, 8, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not a.requires_grad
    assert gen.training
    # same seed, same weights; torch's global RNG is untouched by construction
    state = torch.get_rng_state()
    again = Generator(latent_dim=8, output_shape=(1, 8, 8), base_channels=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(
        torch.equal(p, q) for p, q in zip(gen.state_dict().values(), again.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_paper_generator_makes_32x32_and_returns_the_dataset_size(shape) -> None:
    """Four 4×4 transposed convolutions give 1 -> 4 -> 8 -> 16 -> 32; the output is resized to (H, W)."""
    gen = PaperGenerator(latent_dim=100, output_shape=shape, base_channels=4)
    convs = [m for m in gen.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == 4 and all(m.kernel_size == (4, 4) for m in convs)
    sides: list[int] = []
    for m in convs:
        m.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
    z = torch.randn(3, 100, generator=torch.Generator().manual_seed(0)) * 5.0
    out = gen(z)
    assert sides == [4, 8, 16, 32]
    assert out.shape == (3, *shape)
    assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    out.sum().backward()  # the generator trains through the resize
    assert convs[0].weight.grad is not None and float(convs[0].weight.grad.abs().sum()) > 0


def test_paper_generator_resize_is_bilinear_interpolation_of_the_32x32_images() -> None:
    gen = PaperGenerator(latent_dim=10, output_shape=(1, 28, 28), base_channels=4).eval()
    z = torch.randn(2, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        native = gen.body(z[:, :, None, None])
        expected = nn.functional.interpolate(native, size=(28, 28), mode="bilinear", align_corners=False)
        out = gen(z)
    assert native.shape == (2, 1, 32, 32)
    torch.testing.assert_close(out, expected)
    assert gen.sample(4, generator=torch.Generator().manual_seed(2)).shape == (4, 1, 28, 28)


def test_build_generator_picks_the_architecture_and_rejects_unknown_names() -> None:
    fedsec_gen = build_generator("fedsec", output_shape=(1, 28, 28), base_channels=8, seed=3)
    paper_gen = build_generator("paper", output_shape=(1, 28, 28), base_channels=8, seed=3)
    assert type(fedsec_gen) is Generator and type(paper_gen) is PaperGenerator
    again = build_generator("paper", output_shape=(1, 28, 28), base_channels=8, seed=3)
    assert all(
        torch.equal(p, q)
        for p, q in zip(paper_gen.state_dict().values(), again.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="generator architecture"):
        build_generator("vae", output_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="base_channels"):
        PaperGenerator(output_shape=(1, 28, 28), base_channels=0)
