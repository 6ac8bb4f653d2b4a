"""Tests for fedsec.attacks.evasion: the ART evasion-attack registry (FDA³, DiPSeN)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedsec.attacks import ATTACKS, AttackSpec, ExpectationOverTransformation, art_classifier, generate
from fedsec.data import load_dataset
from fedsec.errors import ConfigError, UnknownNameError
from fedsec.models import build_model
from fedsec.training import evaluate, make_optimizer, train

NUM_CLASSES = 10
N_IMAGES = 20

# Test-time overrides: a smaller budget where the default is slow, still a real attack.
FAST_PARAMS: dict[str, dict[str, float | int]] = {
    # The synthetic images carry strong pixel noise (sigma 0.3), so they sit far from the decision
    # boundary: SimBA needs a bigger step and JSMA more pixels than on MNIST to flip (nearly) all of them.
    "simba": {"max_iter": 300, "epsilon": 0.5},
    "jsma": {"gamma": 0.3},
}
N_PER_ATTACK: dict[str, int] = {"simba": 5}


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """LeNet trained on the synthetic dataset, and N_IMAGES test images it classifies correctly."""
    bundle = load_dataset("synthetic", seed=0)
    model = build_model("lenet", input_shape=bundle.input_shape, num_classes=NUM_CLASSES, seed=0)
    # Adam is stable here; SGD with momentum 0.9 oscillates on this data after epoch 3.
    optimizer = make_optimizer("adam", model.parameters(), lr=0.003)
    train(
        model,
        bundle.train.x,
        bundle.train.y,
        epochs=3,
        batch_size=32,
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(0),
    )
    model.eval()
    result = evaluate(model, bundle.test.x, bundle.test.y, num_classes=NUM_CLASSES)
    assert result.accuracy >= 0.9, f"test model trained badly: accuracy {result.accuracy}"
    correct = torch.from_numpy(result.predictions) == bundle.test.y
    x, y = bundle.test.x[correct][:N_IMAGES], bundle.test.y[correct][:N_IMAGES]
    assert len(x) == N_IMAGES
    return model, x, y


@pytest.fixture(scope="module")
def adversarial(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> Callable[[str], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run each attack once per module (with the true labels): name -> (x, x_before, y, x_adv)."""
    model, x_all, y_all = trained
    cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def run(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if name not in cache:
            n = N_PER_ATTACK.get(name, N_IMAGES)
            x, y = x_all[:n].clone(), y_all[:n].clone()
            before = x.clone()
            adv = generate(name, model, x, y, num_classes=NUM_CLASSES, params=FAST_PARAMS.get(name), seed=1)
            cache[name] = (x, before, y, adv)
        return cache[name]

    return run


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return evaluate(model, x, y, num_classes=NUM_CLASSES).accuracy


# ---------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_lowers_accuracy(name, trained, adversarial):
    model, _, _ = trained
    x, _, y, adv = adversarial(name)
    before = accuracy(model, x, y)
    after = accuracy(model, adv, y)
    assert before == 1.0  # the images were chosen correctly classified
    assert after <= 0.5, f"{name}: accuracy {before} -> {after}"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_output_is_valid_and_input_untouched(name, adversarial):
    x, before, _, adv = adversarial(name)
    assert adv.dtype == torch.float32
    assert adv.shape == x.shape
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert torch.equal(x, before)
    assert not torch.equal(adv, x)


@pytest.mark.parametrize("name", [n for n in ATTACKS if ATTACKS[n].norm == "linf"])
def test_linf_attacks_respect_eps(name, adversarial):
    x, _, _, adv = adversarial(name)
    eps = float(ATTACKS[name].defaults["eps"])
    assert float((adv - x).abs().max()) <= eps + 1e-6


def test_eps_override_is_respected(trained):
    model, x, y = trained
    adv = generate("fgsm", model, x, y, num_classes=NUM_CLASSES, params={"eps": 0.05})
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6


def test_deepfool_and_jsma_work_without_labels(trained):
    model, x, _ = trained
    for name in ("deepfool", "jsma"):
        adv = generate(name, model, x[:5], None, num_classes=NUM_CLASSES)
        assert adv.shape == x[:5].shape


def test_model_mode_flags_and_grads_are_restored(trained):
    model, x, y = trained
    seen_modes: list[bool] = []
    hook = model.register_forward_pre_hook(lambda module, args: seen_modes.append(module.training))
    params = list(model.parameters())
    for p in params:
        p.grad = None
    params[0].grad = torch.full_like(params[0], 0.5)
    model.train()
    try:
        generate("bim", model, x[:4], y[:4], num_classes=NUM_CLASSES, params={"max_iter": 2})
        assert seen_modes and not any(seen_modes)  # eval mode during the attack
        assert model.training and all(m.training for m in model.modules())
        assert all(p.requires_grad for p in params)
        assert params[0].grad is not None and torch.all(params[0].grad == 0.5)
        assert all(p.grad is None for p in params[1:])
    finally:
        hook.remove()
        params[0].grad = None
        model.eval()
    assert not model.training


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", ["pgd", "jsma"])
def test_same_seed_same_output_and_no_global_rng_leak(name, trained):
    model, x, _ = trained
    x = x[:6]
    np.random.seed(123)
    torch.manual_seed(123)
    expected_np, expected_torch = np.random.random(5), torch.rand(5)
    np.random.seed(123)
    torch.manual_seed(123)
    first = generate(name, model, x, None, num_classes=NUM_CLASSES, seed=7)
    second = generate(name, model, x, None, num_classes=NUM_CLASSES, seed=7)
    assert torch.equal(first, second)
    # The global generators continue exactly where they were before the calls.
    assert np.array_equal(np.random.random(5), expected_np)
    assert torch.equal(torch.rand(5), expected_torch)


def test_different_seed_changes_random_start(trained):
    model, x, y = trained
    a = generate("pgd", model, x[:6], y[:6], num_classes=NUM_CLASSES, seed=1, params={"max_iter": 2})
    b = generate("pgd", model, x[:6], y[:6], num_classes=NUM_CLASSES, seed=2, params={"max_iter": 2})
    assert not torch.equal(a, b)


# ---------------------------------------------------------------------------- errors


def test_unknown_attack_lists_choices(trained):
    model, x, y = trained
    with pytest.raises(UnknownNameError, match=r"choose one of:.*fgsm.*pgd"):
        generate("nope", model, x, y, num_classes=NUM_CLASSES)


def test_unknown_param_names_attack_param_and_allowed(trained):
    model, x, y = trained
    allowed = "allowed: eps, eps_step, max_iter, num_random_init"
    with pytest.raises(ConfigError, match=rf"'bogus'.*'pgd'.*{allowed}"):
        generate("pgd", model, x, y, num_classes=NUM_CLASSES, params={"bogus": 1})


@pytest.mark.parametrize(
    ("params", "match"),
    [({"max_iter": 2.5}, "max_iter.*int"), ({"eps": float("nan")}, "eps.*finite"), ({"eps": True}, "eps")],
)
def test_bad_param_values_raise_config_error(trained, params, match):
    model, x, y = trained
    with pytest.raises(ConfigError, match=match):
        generate("bim", model, x, y, num_classes=NUM_CLASSES, params=params)


def test_art_rejecting_a_value_becomes_config_error(trained):
    model, x, y = trained
    with pytest.raises(ConfigError, match="'jsma'"):
        generate("jsma", model, x, y, num_classes=NUM_CLASSES, params={"gamma": 2.0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"eot_samples": 0}, "eot_samples"),
        ({"seed": -1}, "seed"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_bad_arguments_raise_value_error(trained, kwargs, match):
    model, x, y = trained
    args: dict[str, Any] = {"num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate("fgsm", model, x, y, **args)


def test_bad_inputs_raise_value_error(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generate("fgsm", model, x * 2.0 + 0.1, y, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="labels outside"):
        generate("fgsm", model, x, y + NUM_CLASSES, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="1-D"):
        generate("fgsm", model, x, y[:-1], num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="N, C, H, W"):
        generate("fgsm", model, x[0], y, num_classes=NUM_CLASSES)


# ---------------------------------------------------------------------------- specs


def test_registry_holds_the_papers_attacks_with_their_norms():
    expected = {
        "fgsm": ("linf", False),
        "bim": ("linf", False),
        "pgd": ("linf", False),
        "jsma": ("l0", False),
        "cw2": ("l2", False),
        "deepfool": ("l2", False),
        "simba": ("l2", True),
    }
    assert set(ATTACKS) == set(expected)
    for name, (norm, black_box) in expected.items():
        spec = ATTACKS[name]
        assert isinstance(spec, AttackSpec)
        assert (spec.name, spec.norm, spec.black_box) == (name, norm, black_box)
        assert spec.description
        for key in spec.defaults:
            assert key in spec.description, f"{name}: default {key} is not documented"
    assert ATTACKS["fgsm"].defaults["eps"] == 0.3
    assert ATTACKS["pgd"].defaults["num_random_init"] == 1
    assert ATTACKS["simba"].probabilities


def test_spec_defaults_are_read_only():
    defaults: Mapping[str, float | int] = ATTACKS["fgsm"].defaults
    with pytest.raises(TypeError):
        defaults["eps"] = 1.0  # type: ignore[index]


def test_art_classifier_logits_and_probabilities(trained):
    model, x, _ = trained
    logits_clf = art_classifier(model, input_shape=(1, 28, 28), num_classes=NUM_CLASSES)
    prob_clf = art_classifier(model, input_shape=(1, 28, 28), num_classes=NUM_CLASSES, probabilities=True)
    assert logits_clf.clip_values is not None and tuple(logits_clf.clip_values) == (0.0, 1.0)
    batch = x[:4].numpy()
    with torch.no_grad():
        expected = model(x[:4]).numpy()
    np.testing.assert_allclose(logits_clf.predict(batch), expected, rtol=1e-5, atol=1e-5)
    probs = prob_clf.predict(batch)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(probs.argmax(axis=1), expected.argmax(axis=1))


# ---------------------------------------------------------------------------- EOT


class NoisyNet(nn.Module):
    """A tiny classifier whose additive Gaussian noise stays on at inference (like DiPSeN)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return self.fc(h + 0.5 * torch.randn_like(h))


def test_eot_reduces_output_variance():
    torch.manual_seed(0)
    net = NoisyNet()
    eot = ExpectationOverTransformation(net, samples=16)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        raw = torch.stack([net(x) for _ in range(30)])
        averaged = torch.stack([eot(x) for _ in range(30)])
    raw_var = float(raw.var(dim=0).mean())
    eot_var = float(averaged.var(dim=0).mean())
    assert eot_var < raw_var / 4, (raw_var, eot_var)


def test_eot_validates_samples():
    with pytest.raises(ValueError, match="samples"):
        ExpectationOverTransformation(nn.Identity(), samples=0)


def test_generate_with_eot_on_stochastic_model():
    torch.manual_seed(0)
    net = NoisyNet()
    x = torch.rand(6, 1, 28, 28)
    y = torch.arange(6)
    adv = generate("fgsm", net, x, y, num_classes=NUM_CLASSES, eot_samples=8, params={"eps": 0.1})
    assert adv.shape == x.shape and adv.dtype == torch.float32
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    again = generate("fgsm", net, x, y, num_classes=NUM_CLASSES, eot_samples=8, params={"eps": 0.1})
    assert torch.equal(adv, again)  # the model's noise is seeded too
