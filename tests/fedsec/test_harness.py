"""Attack harnesses (DiPSeN §VI-E): the paper's clipped softmax masks gradients, the logit loss does not."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedsec.attacks.evasion import art_classifier, generate
from fedsec.attacks.harness import (
    PAPER_PARAMS,
    ClippedProbabilityNLL,
    ClippedSoftmax,
    harness_label,
    harness_params,
    input_gradients,
    zero_gradient_fraction,
)
from fedsec.errors import ConfigError


def saturated(scale: float) -> nn.Module:
    """Logits ``(scale·Σx, Σx, 0)`` on 1×2×2 inputs: class 0 wins by ``(scale − 1)·Σx``."""
    linear = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0].fill_(scale)
        linear.weight[1].fill_(1.0)
    return nn.Sequential(nn.Flatten(), linear)


X = torch.full((5, 1, 2, 2), 0.75)  # Σx = 3
Y = torch.zeros(5, dtype=torch.long)


def test_paper_harness_gradient_is_exactly_zero_on_a_confident_input_and_the_logit_loss_is_not() -> None:
    # logits (30, 3, 0): p(class 0) = 1 − e^−27 − e^−30 rounds to 1.0 in float32, above 1 − 1e−7
    model = saturated(10.0)
    paper = input_gradients(model, X, Y, harness="paper")
    logits = input_gradients(model, X, Y, harness="logits")
    assert torch.count_nonzero(paper) == 0
    # cross-entropy on logits: d/dx = Σ_k (p_k − onehot_k)·W_k = (p_0 − 1)·10 + p_1·1, and p_0 − 1
    # is 0 in float32, so every pixel's gradient is p_1 = e^−27 / (1 + e^−27 + e^−30) ≈ 1.88e−12
    expected = math.exp(-27) / (1 + math.exp(-27) + math.exp(-30))
    assert torch.allclose(logits, torch.full_like(X, expected), rtol=1e-3, atol=0.0)
    assert zero_gradient_fraction(model, X, Y, harness="paper") == 1.0
    assert zero_gradient_fraction(model, X, Y, harness="logits") == 0.0


def test_paper_harness_gradient_is_not_zero_on_an_unconfident_input() -> None:
    model = saturated(2.0)  # logits (6, 3, 0): p(class 0) ≈ 0.95, inside the clip
    assert torch.count_nonzero(input_gradients(model, X, Y, harness="paper")) == X.numel()
    assert zero_gradient_fraction(model, X, Y, harness="paper") == 0.0


def test_fgsm_leaves_the_input_unchanged_under_the_paper_harness_and_moves_it_under_the_logit_loss() -> None:
    model = saturated(10.0)
    paper = generate("fgsm", model, X, Y, num_classes=3, params={"eps": 0.3}, harness="paper")
    logits = generate("fgsm", model, X, Y, num_classes=3, params={"eps": 0.3})
    assert torch.equal(paper, X)
    # the logit loss's gradient is +1.88e−12 per pixel (see above): sign step +ε, clipped to 1
    assert torch.equal(logits, torch.ones_like(X))


def test_art_sees_the_same_zero_gradient_as_input_gradients() -> None:
    model = saturated(10.0)
    classifier = art_classifier(model, input_shape=(1, 2, 2), num_classes=3, harness="paper")
    one_hot = torch.nn.functional.one_hot(Y, 3).float().numpy()
    gradient = classifier.loss_gradient(X.numpy(), one_hot)
    assert not gradient.any()
    assert isinstance(classifier.model, ClippedSoftmax)  # ART's model is the clipped softmax, its loss NLL


def test_clipped_softmax_and_loss_match_keras_categorical_cross_entropy() -> None:
    logits = torch.tensor([[40.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    probabilities = ClippedSoftmax(nn.Identity())(logits)
    assert probabilities[0, 0].item() == pytest.approx(1 - 1e-7, abs=1e-7)
    assert probabilities[0, 1].item() == pytest.approx(1e-7)
    target = torch.tensor([1, 2])
    loss = ClippedProbabilityNLL()(probabilities, target)
    expected = (-math.log(1e-7) - math.log(math.exp(2) / (1 + math.e + math.exp(2)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_paper_params_are_arts_defaults_with_the_experiments_eps() -> None:
    assert harness_params("paper", "pgd", {"eps": 0.2, "eps_step": 0.01, "num_random_init": 1}) == {
        "eps": 0.2,
        "eps_step": 0.1,
        "max_iter": 100,
        "num_random_init": 0,
    }
    assert harness_params("paper", "bim", None) == dict(PAPER_PARAMS["bim"])
    assert harness_params("logits", "pgd", {"eps_step": 0.01}) == {"eps_step": 0.01}
    assert harness_label("paper") == " (paper harness: clipped softmax)" and harness_label("logits") == ""
    with pytest.raises(ConfigError, match="fgsm, bim, pgd"):
        harness_params("paper", "jsma", None)
    with pytest.raises(ConfigError, match="harness"):
        harness_params("keras", "fgsm", None)


def test_zero_gradient_fraction_restores_training_mode_and_validates() -> None:
    model = saturated(10.0).train()
    zero_gradient_fraction(model, X, Y, harness="paper", batch_size=2)
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="batch_size"):
        zero_gradient_fraction(model, X, Y, harness="paper", batch_size=0)
