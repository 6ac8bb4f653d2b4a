"""Tests for PDGAN auditing (majority vote, θ filter, GAN training) and model-inversion audit data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsec.data.containers import TensorSplit
from fedsec.defenses.audit import (
    audit,
    audit_accuracies,
    audit_set,
    cap_per_class,
    class_balance_loss,
    consensus_mask,
    first_audit_round,
    majority_vote,
    predict_all,
    train_gan,
    worst_class_agreement,
)
from fedsec.defenses.inversion import invert_classes
from fedsec.models import build_model
from fedsec.models.gan import Generator, discriminator_from
from fedsec.training import make_optimizer, train

K = 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TableModel(nn.Module):
    """A fixed "client model": reads the class id encoded in pixel (0, 0) and returns one-hot logits."""

    def __init__(self, table: dict[int, int]) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = torch.round(x[:, 0, 0, 0] * K).long().tolist()
        logits = torch.zeros(len(ids), K)
        for row, cls in enumerate(ids):
            logits[row, self.table[cls]] = 5.0
        return logits


def _encoded_inputs(per_class: int = 3) -> tuple[torch.Tensor, np.ndarray]:
    labels = np.repeat(np.arange(K), per_class)
    x = torch.zeros(len(labels), 1, 2, 2)
    x[:, 0, 0, 0] = torch.from_numpy(labels).float() / K
    return x, labels


def test_majority_vote_labels_and_theta_filter_drop_the_poisoned_client() -> None:
    honest = {c: c for c in range(K)}
    poisoned = {**honest, 1: 7}  # label flipping 1 -> 7
    models = [TableModel(honest) for _ in range(4)] + [TableModel(poisoned)]
    x, truth = _encoded_inputs(per_class=3)

    predictions = predict_all(models, x, batch_size=7)
    assert predictions.shape == (5, 30)
    assert predictions.dtype == np.int64
    assert (predictions[4][truth == 1] == 7).all()

    result = audit(predictions, theta=0.95)

    np.testing.assert_array_equal(result.labels, truth)  # the honest majority labels the audit set
    np.testing.assert_allclose(result.accuracies, [1.0, 1.0, 1.0, 1.0, 27 / 30])
    assert result.kept == (0, 1, 2, 3)
    assert list(result.dropped) == [4]
    assert result.dropped[4] == "audit accuracy 0.90 < θ=0.95"
    # θ below the poisoned client's accuracy keeps everyone; θ = 0 always does
    assert audit(predictions, theta=0.85).kept == (0, 1, 2, 3, 4)
    zero = audit(predictions, theta=0.0)
    assert zero.kept == (0, 1, 2, 3, 4)
    assert zero.dropped == {}


def test_majority_vote_breaks_ties_towards_the_smallest_label() -> None:
    predictions = np.array([[3, 1, 9], [1, 1, 2], [3, 0, 2], [1, 0, 5]])
    before = predictions.copy()
    np.testing.assert_array_equal(majority_vote(predictions), [1, 0, 2])
    np.testing.assert_array_equal(predictions, before)


def test_audit_accuracies_hand_computed() -> None:
    predictions = np.array([[0, 1, 2, 3], [0, 1, 0, 0], [5, 5, 5, 5]])
    np.testing.assert_allclose(audit_accuracies(predictions, np.array([0, 1, 2, 0])), [0.75, 0.75, 0.0])


def test_audit_validates_its_inputs() -> None:
    predictions = np.zeros((2, 3), dtype=np.int64)
    for theta in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="theta"):
            audit(predictions, theta=theta)
    with pytest.raises(ValueError, match="predictions"):
        majority_vote(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="predictions"):
        majority_vote(np.zeros((2, 3)))  # float labels
    with pytest.raises(ValueError, match="labels"):
        audit_accuracies(predictions, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="models"):
        predict_all([], torch.zeros(2, 1, 2, 2))


def _two_class_images(n_per_class: int, seed: int) -> TensorSplit:
    """Class 0: bright top half; class 1: bright bottom half; 1x8x8 with noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2 * n_per_class, 1, 8, 8, generator=g) * 0.3
    x[:n_per_class, :, :4] += 0.6
    x[n_per_class:, :, 4:] += 0.6
    y = torch.arange(2).repeat_interleave(n_per_class)
    return TensorSplit(x=x.clamp(0, 1), y=y)


def test_train_gan_learns_the_real_classes_and_updates_the_generator() -> None:
    aux = _two_class_images(16, seed=0)
    before_aux = aux.x.clone()
    global_model = build_model("lenet", input_shape=(1, 8, 8), num_classes=2, seed=1)
    disc = discriminator_from(global_model, model_name="lenet", input_shape=(1, 8, 8), num_classes=2, seed=2)
    gen = Generator(latent_dim=8, output_shape=(1, 8, 8), base_channels=8)
    gen_before = [p.detach().clone() for p in gen.parameters()]
    disc.eval()

    def real_loss() -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(disc(aux.x), aux.y))

    start = real_loss()
    stats = train_gan(
        gen, disc, aux, num_classes=2, steps=40, batch_size=16, lr=2e-3, rng=torch.Generator().manual_seed(0)
    )

    assert stats.steps == 40
    assert np.isfinite(stats.d_loss) and np.isfinite(stats.g_loss)
    assert real_loss() < 0.5 * start
    assert any(not torch.equal(p, q) for p, q in zip(gen.parameters(), gen_before, strict=True))
    assert not disc.training  # mode restored
    assert all(p.grad is None for p in [*disc.parameters(), *gen.parameters()])
    assert torch.equal(aux.x, before_aux)
    images = audit_set(gen, 5, rng=torch.Generator().manual_seed(1))
    assert images.shape == (5, 1, 8, 8)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_train_gan_validates_shapes_and_parameters() -> None:
    aux = _two_class_images(4, seed=0)
    gen = Generator(latent_dim=8, output_shape=(1, 8, 8), base_channels=8)
    disc = build_model("lenet", input_shape=(1, 8, 8), num_classes=3, seed=0)
    rng = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="steps"):
        train_gan(gen, disc, aux, num_classes=2, steps=0, batch_size=4, rng=rng)
    with pytest.raises(ValueError, match="output_shape"):
        train_gan(
            Generator(latent_dim=8, output_shape=(1, 12, 12), base_channels=8),
            disc,
            aux,
            num_classes=2,
            steps=1,
            batch_size=4,
            rng=rng,
        )
    with pytest.raises(ValueError, match="num_classes"):
        train_gan(gen, disc, aux, num_classes=3, steps=1, batch_size=4, rng=rng)  # D has 3, not 4 outputs


def test_class_balance_loss_is_zero_for_confident_even_batches_and_log_k_for_one_class() -> None:
    big = 50.0
    # K = 2 real classes plus the fake logit, which the term ignores
    even = torch.tensor([[big, 0.0, 9.0], [0.0, big, 9.0]])
    one_class = torch.tensor([[big, 0.0, 0.0], [big, 0.0, -3.0]])
    undecided = torch.zeros(4, 3)
    assert float(class_balance_loss(even, 2)) == pytest.approx(0.0, abs=1e-6)
    assert float(class_balance_loss(one_class, 2)) == pytest.approx(np.log(2), abs=1e-6)
    # every sample uniform: per-sample entropy log 2, marginal entropy log 2
    assert float(class_balance_loss(undecided, 2)) == pytest.approx(np.log(2), abs=1e-6)
    p = torch.softmax(torch.tensor([1.0, -1.0]), 0)
    h = float(-(p * p.log()).sum())
    mixed = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]])  # each p or its mirror: marginal uniform
    assert float(class_balance_loss(mixed, 2)) == pytest.approx(h, abs=1e-6)


def test_class_balance_makes_the_generator_cover_a_class_missing_from_the_auxiliary_set() -> None:
    data = _two_class_images(32, seed=0)
    global_model = build_model("lenet", input_shape=(1, 8, 8), num_classes=2, seed=1)
    optimizer = make_optimizer("adam", global_model.parameters(), lr=0.01)
    train(
        global_model,
        data.x,
        data.y,
        epochs=10,
        batch_size=16,
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(0),
    )
    global_model.eval()
    zeros_only = data.subset(np.arange(32))  # the server's auxiliary set holds class 0 only

    def share_of_class_one(class_balance: float) -> tuple[float, float]:
        disc = discriminator_from(
            global_model, model_name="lenet", input_shape=(1, 8, 8), num_classes=2, seed=2
        )
        gen = Generator(latent_dim=8, output_shape=(1, 8, 8), base_channels=8)
        torch.manual_seed(0)
        stats = train_gan(
            gen,
            disc,
            zeros_only,
            num_classes=2,
            steps=150,
            batch_size=16,
            lr=1e-3,
            class_balance=class_balance,
            rng=torch.Generator().manual_seed(0),
        )
        images = audit_set(gen, 100, rng=torch.Generator().manual_seed(9))
        with torch.no_grad():
            share = float((global_model(images).argmax(1) == 1).float().mean())
        return share, stats.class_entropy

    plain, plain_entropy = share_of_class_one(0.0)
    balanced, balanced_entropy = share_of_class_one(5.0)
    assert plain <= 0.05 and balanced >= 0.3
    assert balanced_entropy > plain_entropy + 0.3


def test_train_gan_rejects_a_negative_class_balance() -> None:
    aux = _two_class_images(4, seed=0)
    gen = Generator(latent_dim=8, output_shape=(1, 8, 8), base_channels=8)
    disc = build_model("lenet", input_shape=(1, 8, 8), num_classes=3, seed=0)
    with pytest.raises(ValueError, match="class_balance"):
        train_gan(
            gen,
            disc,
            aux,
            num_classes=2,
            steps=1,
            batch_size=4,
            class_balance=-1.0,
            rng=torch.Generator().manual_seed(0),
        )


def test_invert_classes_recovers_inputs_the_model_assigns_to_each_class() -> None:
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).float()
    y = torch.arange(3).repeat_interleave(30)
    x = (prototypes[y] + 0.2 * torch.randn(len(y), 1, 8, 8, generator=g)).clamp(0, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = make_optimizer("adam", model.parameters(), lr=0.01)
    train(model, x, y, epochs=20, batch_size=30, optimizer=optimizer, generator=g)
    optimizer.zero_grad(set_to_none=True)
    weights = [p.detach().clone() for p in model.parameters()]
    model.train()

    split = invert_classes(
        model,
        input_shape=(1, 8, 8),
        num_classes=3,
        per_class=4,
        steps=30,
        lr=0.1,
        rng=torch.Generator().manual_seed(1),
    )

    assert split.x.shape == (12, 1, 8, 8)
    assert split.x.dtype == torch.float32
    np.testing.assert_array_equal(split.y.numpy(), np.repeat(np.arange(3), 4))
    assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
    assert not split.x.requires_grad
    with torch.no_grad():
        predicted = model(split.x).argmax(dim=1)
    assert float((predicted == split.y).float().mean()) >= 0.9
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    again = invert_classes(
        model,
        input_shape=(1, 8, 8),
        num_classes=3,
        per_class=4,
        steps=30,
        lr=0.1,
        rng=torch.Generator().manual_seed(1),
    )
    assert torch.equal(again.x, split.x)
    with pytest.raises(ValueError, match="num_classes"):
        invert_classes(
            model, input_shape=(1, 8, 8), num_classes=4, per_class=1, steps=1, lr=0.1, rng=torch.Generator()
        )


def test_a_relative_theta_follows_the_rounds_median_agreement():
    from fedsec.defenses.audit import audit

    truth = np.arange(20) % 5
    honest = []
    for i in range(6):  # each honest model errs on 6 of 20 images, at most 2 models per image
        row = truth.copy()
        wrong = [(6 * i + j) % 20 for j in range(6)]
        row[wrong] = (row[wrong] + 1) % 5
        honest.append(row)
    attacker = np.full(20, 7)
    predictions = np.stack([*honest, attacker])

    fixed = audit(predictions, theta=0.75)
    relative = audit(predictions, theta=0.75, relative=True)

    assert fixed.kept == ()  # poor audit images: honest agreement 0.7 < θ, everyone dropped
    assert relative.kept == (0, 1, 2, 3, 4, 5) and 6 in relative.dropped


def _clear_and_split_votes() -> np.ndarray:
    """4 honest clients and 1 attacker (row 4) on 10 clear and 10 ambiguous audit samples.

    On the clear samples every honest model predicts the true label and the attacker
    is wrong on half of them.  On the ambiguous ones the vote splits 3 / 1 / 1: two
    honest models and the attacker say ``a``, the other two honest models say
    something else (which two rotates), so every client agrees with the majority on
    15 of 20 samples overall.
    """
    truth = np.arange(10) % 5
    rows = np.tile(np.concatenate([truth, np.zeros(10, dtype=np.int64)]), (5, 1))
    rows[4, :5] = (truth[:5] + 1) % 5
    for j in range(10):
        dissenters = (0, 1) if j % 2 == 0 else (2, 3)
        for offset, honest in enumerate(dissenters, start=1):
            rows[honest, 10 + j] = offset  # 1 or 2: two different wrong labels
    return rows.astype(np.int64)


def test_consensus_mask_keeps_the_samples_with_a_clear_majority() -> None:
    predictions = _clear_and_split_votes()
    labels = majority_vote(predictions)
    np.testing.assert_array_equal(labels[10:], 0)  # a = 0 wins 3 / 1 / 1
    mask = consensus_mask(predictions, labels, 0.8)
    np.testing.assert_array_equal(mask, [True] * 10 + [False] * 10)  # 0.8 or 1.0 agree vs 0.6
    assert consensus_mask(predictions, labels, 0.6).all()
    assert consensus_mask(predictions, labels, 0.0).all()
    with pytest.raises(ValueError, match="min_agreement"):
        consensus_mask(predictions, labels, 1.5)
    with pytest.raises(ValueError, match="labels"):
        consensus_mask(predictions, labels[:3], 0.5)


def test_scoring_only_consensus_samples_separates_an_attacker_hidden_by_split_votes() -> None:
    predictions = _clear_and_split_votes()

    everything = audit(predictions, theta=0.75)
    np.testing.assert_allclose(everything.accuracies, 0.75)  # no θ tells the attacker apart
    assert everything.scored == 20 and 4 in everything.kept

    clear = audit(predictions, theta=0.75, consensus=0.8)
    assert clear.scored == 10
    np.testing.assert_allclose(clear.accuracies, [1.0, 1.0, 1.0, 1.0, 0.5])
    assert clear.kept == (0, 1, 2, 3)
    assert list(clear.dropped) == [4]
    assert clear.labels.shape == (20,)  # every sample is still labelled
    with pytest.raises(ValueError, match="consensus"):
        audit(predictions, theta=0.75, consensus=-0.1)


def test_consensus_falls_back_to_every_sample_when_none_has_a_clear_majority(caplog) -> None:
    predictions = np.array([[0, 1], [1, 2], [2, 0]], dtype=np.int64)  # every vote is split three ways
    with caplog.at_level("WARNING", logger="fedsec.defenses.audit"):
        result = audit(predictions, theta=0.5, consensus=0.9)
    assert result.scored == 2
    assert "scoring all 2" in caplog.text
    np.testing.assert_allclose(result.accuracies, audit(predictions, theta=0.5).accuracies)


def test_cap_per_class_keeps_the_first_samples_of_each_selected_label() -> None:
    labels = np.array([3, 3, 1, 3, 1, 3, 0])
    mask = np.array([True, False, True, True, True, True, True])
    capped = cap_per_class(labels, mask, 2)
    np.testing.assert_array_equal(capped, [True, False, True, True, True, False, True])
    np.testing.assert_array_equal(cap_per_class(labels, mask, 0), mask)  # 0: no cap
    assert mask[5]  # not modified
    with pytest.raises(ValueError, match="per_class"):
        cap_per_class(labels, mask, -1)
    with pytest.raises(ValueError, match="shape"):
        cap_per_class(labels, mask[:3], 1)


def _flipper_among_honest(n_ones: int) -> np.ndarray:
    """4 honest models that agree with the truth and a 1 -> 7 flipper, on 100 samples of which
    ``n_ones`` are 1s and the rest cycle through the classes other than 1."""
    others = np.array([c for c in range(K) if c != 1])
    truth = np.concatenate([np.ones(n_ones, dtype=np.int64), np.resize(others, 100 - n_ones)])
    flipper = np.where(truth == 1, 7, truth)
    return np.stack([truth] * 4 + [flipper])


def test_worst_class_agreement_exposes_a_flip_of_a_rare_class() -> None:
    predictions = _flipper_among_honest(n_ones=5)
    labels = majority_vote(predictions)
    overall = audit_accuracies(predictions, labels)
    np.testing.assert_allclose(overall, [1, 1, 1, 1, 0.95])  # the 5 flipped 1s hide in 100 samples
    worst = worst_class_agreement(predictions, labels, min_count=5)
    np.testing.assert_allclose(worst, [1, 1, 1, 1, 0])
    # 1s below min_count are not judged: the flipper's worst scored class is then perfect
    np.testing.assert_allclose(worst_class_agreement(predictions, labels, min_count=6), 1.0)
    # no class has enough samples: the overall agreement
    np.testing.assert_allclose(worst_class_agreement(predictions, labels, min_count=1000), overall)
    with pytest.raises(ValueError, match="min_count"):
        worst_class_agreement(predictions, labels, min_count=0)

    assert audit(predictions, theta=0.9).kept == (0, 1, 2, 3, 4)
    result = audit(predictions, theta=0.9, score="worst-class")
    assert result.kept == (0, 1, 2, 3)
    assert result.dropped[4].startswith("audit worst-class agreement 0.00")
    with pytest.raises(ValueError, match="score"):
        audit(predictions, theta=0.9, score="loss")


def test_a_per_class_cap_gives_a_rare_class_its_weight_in_the_overall_accuracy() -> None:
    predictions = _flipper_among_honest(n_ones=5)
    capped = audit(predictions, theta=0.7, per_class=5)
    assert capped.scored == 50  # 5 of each of the 10 classes
    np.testing.assert_allclose(capped.accuracies, [1, 1, 1, 1, 0.9])
    assert audit(predictions, theta=0.92, per_class=5).kept == (0, 1, 2, 3)
    assert audit(predictions, theta=0.92).kept == (0, 1, 2, 3, 4)  # uncapped: 0.95


@pytest.mark.parametrize(
    ("d_iter", "steps", "expected"),
    [(600, 100, 6), (400, 100, 4), (601, 100, 7), (50, 100, 1), (0, 100, 1), (1000, 1, 1000)],
)
def test_first_audit_round_is_the_first_round_with_d_iter_gan_iterations(d_iter, steps, expected):
    first = first_audit_round(d_iter, steps)
    assert first == expected
    assert first * steps >= d_iter and (first == 1 or (first - 1) * steps < d_iter)


@pytest.mark.parametrize(("args", "name"), [((-1, 100), "d_iter"), ((600, 0), "steps_per_round")])
def test_first_audit_round_rejects_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        first_audit_round(*args)
