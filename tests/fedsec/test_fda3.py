"""FDA³ math: data split, buffer selection, pairs, the α-weighted loss, buffer deltas and the baselines."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

import fedsec.fda3_baselines
from fedsec.attacks.monitor import AttackMonitor
from fedsec.config import RunConfig
from fedsec.data import TensorSplit
from fedsec.experiment import client_data, load_bundle, pretrain_data, server_data
from fedsec.fda3 import (
    AdversarialPairs,
    MixedLoss,
    apply_buffer_deltas,
    buffer_positions,
    confident_buffer,
    loss_gradients,
    make_pairs,
)
from fedsec.fda3_baselines import baseline_models, epoch_steps, local_adversarial_training
from fedsec.metrics import wilson_interval


class FixedLogits(nn.Module):
    """Returns the logits stored for each example (selected by the first pixel as an index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.bias = nn.Parameter(torch.zeros(logits.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0, 0, 0].long()] + self.bias


def test_confident_buffer_keeps_confident_examples_with_predicted_labels_as_in_the_paper():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0]])
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1)
    y = torch.tensor([0, 1, 0, 1, 1])  # example 2 is unsure, example 3 is confidently wrong
    data = TensorSplit(x=x, y=y)
    paper = confident_buffer(FixedLogits(logits), data, threshold=0.9, size=3)
    assert paper.x.flatten().tolist() == [0.0, 1.0, 3.0]
    assert paper.y.tolist() == [0, 1, 0]  # example 3 carries the model's label, not the true one
    assert confident_buffer(
        FixedLogits(logits), data, threshold=0.9, size=3, labels="predicted"
    ).y.tolist() == [
        0,
        1,
        0,
    ]


def test_verified_buffer_keeps_only_correct_confident_examples_with_true_labels():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0]])
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1)
    y = torch.tensor([0, 1, 0, 1, 1])
    data = TensorSplit(x=x, y=y)
    buffer = confident_buffer(FixedLogits(logits), data, threshold=0.9, size=3, labels="verified")
    assert buffer.x.flatten().tolist() == [0.0, 1.0, 4.0] and buffer.y.tolist() == [0, 1, 1]
    full = confident_buffer(FixedLogits(logits), data, threshold=0.9, size=4, labels="verified")
    assert full.x.flatten().tolist()[:3] == [0.0, 1.0, 4.0]  # confident-correct first, then best of the rest
    with pytest.raises(ValueError, match="threshold"):
        confident_buffer(FixedLogits(logits), data, threshold=1.0, size=2)
    with pytest.raises(ValueError, match="labels"):
        confident_buffer(FixedLogits(logits), data, threshold=0.9, size=2, labels="true")


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
    # Buffers carry the change the two train-mode forward passes made (reference ran them too) ...
    before = nn.BatchNorm1d(3).state_dict()  # a fresh BatchNorm's statistics, as in `model` before
    for name in ("running_mean", "running_var"):
        change = reference[2].state_dict()[name] - before[name]
        assert change.abs().max() > 0
        torch.testing.assert_close(torch.from_numpy(by_name[f"2.{name}"]), change)
    assert by_name["2.num_batches_tracked"].dtype.kind == "i" and int(by_name["2.num_batches_tracked"]) == 2
    # ... and the model itself keeps its buffers.
    assert (
        torch.equal(model[2].running_mean, before["running_mean"]) and int(model[2].num_batches_tracked) == 0
    )
    assert buffer_positions(model) == (4, 5, 6)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_buffer_deltas_are_averaged_onto_the_servers_buffers_and_counters_rounded():
    current = [np.array([1.0, 1.0], np.float32), np.array([0.5, -0.5], np.float32), np.array(7)]
    deltas = [
        [np.array([9.0, 9.0], np.float32), np.array([0.1, 0.3], np.float32), np.array(2)],
        [np.array([9.0, 9.0], np.float32), np.array([0.3, -0.1], np.float32), np.array(3)],
    ]
    new = apply_buffer_deltas(current, deltas, (1, 2))
    assert set(new) == {1, 2}  # position 0 is a parameter: not touched here
    np.testing.assert_allclose(new[1], [0.7, -0.4], rtol=1e-6)
    assert new[1].dtype == np.float32
    assert new[2].dtype == current[2].dtype and int(new[2]) == 7 + 2  # mean 2.5 rounds to even
    weighted = apply_buffer_deltas(current, deltas, (1,), float_mean=[None, np.array([1.0, 1.0]), None])
    np.testing.assert_allclose(weighted[1], [1.5, 0.5])
    assert current[1].tolist() == [0.5, -0.5]  # the caller's arrays are not mutated


def test_wilson_interval_matches_hand_computed_bounds():
    low, high = wilson_interval(0.5, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    low, high = wilson_interval(0.0, 10)
    assert low == 0.0 and high == pytest.approx(0.27753, abs=1e-5)  # not the empty [0, 0] of p ± z·se
    assert wilson_interval(0.81, 1000)[1] - wilson_interval(0.81, 1000)[0] < 0.05
    assert wilson_interval(0.81, 100)[1] - wilson_interval(0.81, 100)[0] > 0.14
    with pytest.raises(ValueError, match="n must"):
        wilson_interval(0.5, 0)


def test_pretraining_device_and_test_data_are_disjoint():
    def rows(split):
        return {bytes(row.numpy().tobytes()) for row in split.x}

    config = RunConfig.from_run_config(
        {"dataset": "synthetic", "num-clients": 4, "validation-size": 50, "pretrain-size": 200}
    )
    bundle = load_bundle(config)
    pretraining = rows(pretrain_data(config, bundle))
    devices = [rows(client_data(config, bundle, partition_id=p, num_partitions=4)) for p in range(4)]
    test = rows(server_data(config, bundle)["test"])
    assert len(pretraining) == 200 and sum(len(d) for d in devices) == 600 - 50 - 200
    for device in devices:
        assert not device & pretraining and not device & test
    assert not pretraining & test
    # without pretrain-size the initial model is pre-trained on the devices' own data
    shared = config.replace(pretrain_size=0)
    assert rows(pretrain_data(shared, bundle)) == set().union(
        *(rows(client_data(shared, bundle, partition_id=p, num_partitions=4)) for p in range(4))
    )


def test_epoch_steps_count_batches_per_pass():
    assert epoch_steps(500, epochs=50, batch_size=100) == 250  # ALL+AdvTrain: 5 attacks × 100 pairs
    assert epoch_steps(100, epochs=50, batch_size=100) == 50  # X+AdvTrain: one batch per epoch
    assert epoch_steps(95, epochs=1, batch_size=10) == 10
    assert epoch_steps(5, epochs=3, batch_size=100) == 3


def test_baselines_train_the_paper_epochs_add_the_per_round_row_and_draw_devices_from_the_seed(monkeypatch):
    monitor = AttackMonitor.from_config(known=["fgsm", "bim"], assign="fgsm:0-1,bim:2-3", num_partitions=4)
    steps: dict[str, int] = {}

    def fake_training(initial, pairs, *, steps: int, **kwargs):
        model = nn.Linear(1, 1)
        model.steps = steps
        return model

    monkeypatch.setattr(fedsec.fda3_baselines, "local_adversarial_training", fake_training)
    chosen: dict[int, list[tuple[int, tuple[str, ...]]]] = {}
    for seed in range(12):
        calls = chosen.setdefault(seed, [])

        def pairs_of(device, schemes, calls=calls):
            calls.append((device, schemes))
            n = 10 * len(schemes)
            return AdversarialPairs(
                x=torch.zeros(n, 2, 1, 1, 1), y=torch.zeros(n, dtype=torch.long), attacks=schemes
            )

        models = baseline_models(
            initial=nn.Linear(1, 1),
            final=nn.Linear(1, 1),
            monitor=monitor,
            attacks=["fgsm", "bim"],
            pairs_of=pairs_of,
            alpha=0.5,
            epochs=3,
            rounds=3,
            batch_size=10,
            lr=0.01,
            betas=(0.9, 0.999),
            seed=seed,
        )
        steps = {row: getattr(model, "steps", None) for row, model in models.items()}
        assert steps == {
            "None (white-box)": None,
            "FGSM+AdvTrain": 3,  # 10 pairs, batch 10: one step per epoch, as many as rounds: one row
            "BIM+AdvTrain": 3,
            "ALL+AdvTrain": 6,  # 20 pairs: 2 steps per epoch, 3 epochs ...
            "ALL+AdvTrain (3 steps)": 3,  # ... and the one-step-per-round schedule beside it
            "FL+AdvTrain": None,
        }
        assert calls[0][0] in (0, 1) and calls[1][0] in (2, 3) and calls[2][1] == ("fgsm", "bim")
    assert len({calls[2][0] for calls in chosen.values()}) > 1  # ALL+AdvTrain's device follows the seed
    assert len({calls[0][0] for calls in chosen.values()}) == 2


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
