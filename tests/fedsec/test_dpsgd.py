"""DP-SGD (Abadi et al.; DiPSeN's Alg. 1): per-sample clipping, noise σ·C, and a step that learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedsec.dpsgd import clip_and_noise, dp_sgd_train, per_sample_gradients, steps_per_epoch


def test_per_sample_gradients_equal_one_backward_per_sample() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    gradients, losses = per_sample_gradients(model, x, y)
    for i in range(5):
        model.zero_grad()
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        loss.backward()
        assert losses[i].item() == pytest.approx(loss.item(), rel=1e-5)
        for name, p in model.named_parameters():
            assert p.grad is not None
            assert torch.allclose(gradients[name][i], p.grad, atol=1e-6)


def test_clipping_bounds_every_per_sample_norm_and_keeps_small_ones() -> None:
    # sample 0: norm 5 (3, 4 across two parameters), clipped to 1; sample 1: norm 0.5, kept
    gradients = {"a": torch.tensor([[3.0], [0.3]]), "b": torch.tensor([[4.0], [0.4]])}
    mean = clip_and_noise(gradients, clip=1.0, noise_multiplier=0.0, generator=torch.Generator())
    assert mean["a"].item() == pytest.approx((0.6 + 0.3) / 2)
    assert mean["b"].item() == pytest.approx((0.8 + 0.4) / 2)
    # each clipped per-sample gradient alone (batch of one) has norm <= C
    for i in range(2):
        one = {k: v[i : i + 1] for k, v in gradients.items()}
        clipped = clip_and_noise(one, clip=1.0, noise_multiplier=0.0, generator=torch.Generator())
        norm = torch.sqrt(sum(v.pow(2).sum() for v in clipped.values()))
        assert norm.item() <= 1.0 + 1e-6
    assert torch.equal(gradients["a"], torch.tensor([[3.0], [0.3]]))  # inputs untouched


def test_noise_std_on_the_sum_is_sigma_times_clip() -> None:
    batch, sigma, clip = 4, 1.5, 0.2
    gradients = {"w": torch.zeros(batch, 200_000)}
    mean = clip_and_noise(
        gradients, clip=clip, noise_multiplier=sigma, generator=torch.Generator().manual_seed(0)
    )
    summed = mean["w"] * batch  # the mean divides the noisy sum by B
    assert summed.std().item() == pytest.approx(sigma * clip, rel=0.01)
    assert abs(summed.mean().item()) < 0.005
    again = clip_and_noise(
        gradients, clip=clip, noise_multiplier=sigma, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again["w"], mean["w"])  # the noise comes from the generator


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"clip": 0.0}, "clip"), ({"clip": 1.0, "noise_multiplier": -1.0}, "noise_multiplier")],
)
def test_clip_and_noise_validates(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        clip_and_noise(
            {"w": torch.zeros(2, 3)}, generator=torch.Generator(), **{"noise_multiplier": 1.0, **kwargs}
        )


def test_dp_sgd_training_learns_a_separable_problem() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=generator)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    dp_sgd_train(
        model,
        x,
        y,
        epochs=5,
        batch_size=32,
        optimizer=optimizer,
        generator=generator,
        clip=1.0,
        noise_multiplier=0.5,
    )
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9
    assert steps_per_epoch(256, 32) == 8 and steps_per_epoch(257, 32) == 9
