"""FDA³ math: buffer selection, pairs, the α-weighted loss and local adversarial training."""

import pytest
import torch
from torch import nn
from torch.nn import functional

from fedsec.data import TensorSplit
from fedsec.fda3 import AdversarialPairs, MixedLoss, confident_buffer, loss_gradients, make_pairs
from fedsec.fda3_baselines import local_adversarial_training


class FixedLogits(nn.Module):
    """Returns the logits stored for each example (selected by the first pixel as an index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.bias = nn.Parameter(torch.zeros(logits.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0, 0, 0].long()] + self.bias


def test_confident_buffer_keeps_correct_confident_examples_in_order():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0]])
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1)
    y = torch.tensor([0, 1, 0, 1, 1])  # example 2 is unsure, example 3 is wrong
    buffer = confident_buffer(FixedLogits(logits), TensorSplit(x=x, y=y), threshold=0.9, size=2)
    assert buffer.x.flatten().tolist() == [0.0, 1.0]
    full = confident_buffer(FixedLogits(logits), TensorSplit(x=x, y=y), threshold=0.9, size=4)
    assert full.x.flatten().tolist()[:3] == [0.0, 1.0, 4.0]  # confident-correct first, then best of the rest
    with pytest.raises(ValueError, match="threshold"):
        confident_buffer(FixedLogits(logits), TensorSplit(x=x, y=y), threshold=1.0, size=2)


def test_mixed_loss_weights_natural_and_adversarial_cross_entropy():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(6, 2, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    natural = functional.cross_entropy(model(x[:, 0]), y)
    adversarial = functional.cross_entropy(model(x[:, 1]), y)
    assert torch.isclose(MixedLoss(alpha=0.3)(model, x, y), 0.3 * natural + 0.7 * adversarial)
    assert torch.isclose(MixedLoss(alpha=1.0)(model, x, y), natural)
    with pytest.raises(ValueError, match="alpha"):
        MixedLoss(alpha=1.5)
    with pytest.raises(ValueError, match=r"\(B, 2, C, H, W\)"):
        MixedLoss(alpha=0.5)(model, x[:, 0], y)


def test_make_pairs_repeats_naturals_once_per_attack():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    buffer = TensorSplit(x=torch.rand(5, 1, 2, 2), y=torch.tensor([0, 1, 2, 0, 1]))
    pairs = make_pairs(model, buffer, ["fgsm", "bim"], num_classes=3, seed=0, params={"bim": {"max_iter": 2}})
    assert pairs.x.shape == (10, 2, 1, 2, 2) and pairs.attacks == ("fgsm", "bim")
    assert torch.equal(pairs.natural[:5], buffer.x) and torch.equal(pairs.natural[5:], buffer.x)
    assert torch.equal(pairs.y, torch.cat([buffer.y, buffer.y]))
    assert (pairs.adversarial - pairs.natural).abs().max() <= 0.3 + 1e-6
    assert not torch.equal(pairs.adversarial, pairs.natural)


def test_loss_gradients_are_the_autograd_gradients_of_the_batch_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    pairs = AdversarialPairs(x=torch.rand(8, 2, 1, 2, 2), y=torch.randint(0, 3, (8,)), attacks=("fgsm",))
    gradients, loss = loss_gradients(model, pairs, alpha=0.5, batch_size=8, generator=torch.Generator())
    reference = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    reference.load_state_dict(model.state_dict())
    expected = MixedLoss(alpha=0.5)(reference, pairs.x, pairs.y)
    expected.backward()
    names = list(model.state_dict())
    assert len(gradients) == len(names)
    by_name = dict(zip(names, gradients, strict=True))
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(torch.from_numpy(by_name[name]), parameter.grad)
    assert by_name["2.num_batches_tracked"].dtype.kind == "i"
    assert not by_name["2.running_mean"].any()  # buffers get zero "gradients"
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_local_adversarial_training_takes_the_requested_steps_and_fits_the_pairs():
    torch.manual_seed(1)
    initial = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(40, 2, 1, 2, 2)
    y = (x[:, 1].flatten(1).sum(1) > 2).long()
    pairs = AdversarialPairs(x=x, y=y, attacks=("fgsm",))
    loss_before = MixedLoss(alpha=0.5)(initial, x, y).item()
    trained = local_adversarial_training(
        initial,
        pairs,
        alpha=0.5,
        steps=60,
        batch_size=10,
        lr=0.05,
        betas=(0.9, 0.999),
        generator=torch.Generator(),
    )
    assert MixedLoss(alpha=0.5)(trained, x, y).item() < loss_before
    assert torch.equal(initial[1].weight, initial[1].weight.clone())  # initial untouched (deep copy)
    one_step = local_adversarial_training(
        initial,
        pairs,
        alpha=0.5,
        steps=1,
        batch_size=10,
        lr=0.05,
        betas=(0.9, 0.999),
        generator=torch.Generator(),
    )
    # Adam's first step moves every weight with a non-zero gradient by exactly lr.
    moved = (one_step[1].weight - initial[1].weight).abs()
    assert torch.allclose(moved[moved > 0], torch.tensor(0.05), atol=1e-4)
