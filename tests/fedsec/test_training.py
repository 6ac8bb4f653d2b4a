"""Tests for the shared train/evaluate loop and the weight conversions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsec.errors import UnknownNameError
from fedsec.models import build_model
from fedsec.training import (
    EvalResult,
    TrainResult,
    cross_entropy_loss,
    evaluate,
    flatten,
    get_weights,
    make_optimizer,
    predict_logits,
    set_weights,
    train,
)

SHAPE = (1, 8, 8)
NUM_CLASSES = 4


def quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 8x8 images whose class is the quadrant holding a bright 4x4 patch."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = 0.3 * torch.rand(n, *SHAPE, generator=g)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 0.7
    return x, y


class FixedLogits(nn.Module):
    """Returns row ``i`` of a fixed logit table for an input whose first value is ``i``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()] + 0 * self.dummy


def _fresh(seed: int = 0) -> nn.Module:
    return build_model("lenet", input_shape=SHAPE, num_classes=NUM_CLASSES, seed=seed)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, **kwargs: object) -> TrainResult:
    opt = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
    params: dict[str, object] = {
        "epochs": 8,
        "batch_size": 32,
        "optimizer": opt,
        "generator": torch.Generator().manual_seed(seed),
    }
    params.update(kwargs)
    return train(model, x, y, **params)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- train


def test_training_learns_a_learnable_problem() -> None:
    x, y = quadrant_data(480, seed=1)
    x_test, y_test = quadrant_data(200, seed=2)
    model = _fresh()
    before = evaluate(model, x_test, y_test, num_classes=NUM_CLASSES)
    result = _fit(model, x, y, seed=3)
    after = evaluate(model, x_test, y_test, num_classes=NUM_CLASSES)
    assert before.accuracy < 0.45  # about chance (0.25)
    assert after.accuracy > 0.9
    assert after.loss < before.loss
    assert result.loss < math.log(NUM_CLASSES) / 2
    assert result.num_examples == 480
    assert result.steps == 8 * math.ceil(480 / 32)


def test_training_is_deterministic_under_a_seed() -> None:
    x, y = quadrant_data(96, seed=1)
    weights = []
    for _ in range(2):
        model = _fresh(seed=5)
        _fit(model, x, y, seed=9, epochs=2)
        weights.append(get_weights(model))
    model = _fresh(seed=5)
    _fit(model, x, y, seed=10, epochs=2)  # other shuffling order
    other = get_weights(model)
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(weights[0], other, strict=True))


def test_max_steps_is_honoured() -> None:
    x, y = quadrant_data(100, seed=1)
    model = _fresh()
    calls = []

    def counting_loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        calls.append(len(xb))
        return cross_entropy_loss(m, xb, yb)

    result = _fit(model, x, y, seed=0, epochs=5, batch_size=10, max_steps=13, loss_fn=counting_loss)
    assert result.steps == 13
    assert len(calls) == 13


def test_last_batch_may_be_smaller_and_every_example_is_seen() -> None:
    x, y = quadrant_data(25, seed=1)
    x[:, 0, 0, 0] = torch.arange(25, dtype=torch.float32)  # tag each example
    seen: list[int] = []

    def recording_loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        seen.extend(int(v) for v in xb[:, 0, 0, 0])
        return cross_entropy_loss(m, xb, yb)

    result = _fit(_fresh(), x, y, seed=0, epochs=2, batch_size=10, loss_fn=recording_loss)
    assert result.steps == 6
    assert sorted(seen[:25]) == list(range(25)) and sorted(seen[25:]) == list(range(25))
    assert seen[:25] != seen[25:]  # reshuffled each epoch


def test_nan_loss_raises_floating_point_error_naming_epoch_and_step() -> None:
    x, y = quadrant_data(40, seed=1)
    calls = [0]

    def exploding(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        loss = cross_entropy_loss(m, xb, yb)
        return loss * float("nan") if calls[0] == 3 else loss

    with pytest.raises(FloatingPointError, match=r"epoch 2/3, step 3"):
        _fit(_fresh(), x, y, seed=0, epochs=3, batch_size=20, loss_fn=exploding)


def test_custom_loss_fn_is_used() -> None:
    x, y = quadrant_data(40, seed=1)
    model = _fresh()
    start = get_weights(model)

    def zero_loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return 0 * sum(p.sum() for p in m.parameters())  # type: ignore[return-value]

    opt = make_optimizer("sgd", model.parameters(), lr=0.5)
    result = train(
        model, x, y, epochs=2, batch_size=8, optimizer=opt, generator=torch.Generator(), loss_fn=zero_loss
    )
    assert result.loss == 0.0
    assert all(np.array_equal(a, b) for a, b in zip(start, get_weights(model), strict=True))


def test_train_restores_eval_mode_and_trains_in_train_mode() -> None:
    x, y = quadrant_data(16, seed=1)
    model = _fresh()
    model.eval()
    modes: list[bool] = []

    def mode_loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        modes.append(m.training)
        return cross_entropy_loss(m, xb, yb)

    _fit(model, x, y, seed=0, epochs=1, batch_size=8, loss_fn=mode_loss)
    assert modes == [True, True]
    assert model.training is False


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_train_rejects_bad_parameters(kwargs: dict[str, int], name: str) -> None:
    x, y = quadrant_data(8, seed=1)
    with pytest.raises(ValueError, match=name):
        _fit(_fresh(), x, y, seed=0, **kwargs)


def test_train_rejects_mismatched_or_empty_data() -> None:
    x, y = quadrant_data(8, seed=1)
    with pytest.raises(ValueError, match="len"):
        _fit(_fresh(), x, y[:7], seed=0)
    with pytest.raises(ValueError, match="x is empty"):
        _fit(_fresh(), x[:0], y[:0], seed=0)


def test_optimizers_by_name() -> None:
    model = _fresh()
    sgd = make_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 1e-4
    adam = make_optimizer("adam", model.parameters(), lr=1e-3, weight_decay=1e-5)
    assert isinstance(adam, torch.optim.Adam)
    with pytest.raises(UnknownNameError, match="adam, sgd"):
        make_optimizer("rmsprop", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        make_optimizer("sgd", model.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer("sgd", model.parameters(), lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer("adam", model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="weight_decay"):
        make_optimizer("sgd", model.parameters(), lr=0.1, weight_decay=-1.0)


# ---------------------------------------------------------------------------- evaluate


def _fixed_model() -> tuple[FixedLogits, torch.Tensor, torch.Tensor]:
    table = torch.tensor(
        [
            [2.0, 0.0, 0.0],  # predicts 0
            [0.0, 3.0, 0.0],  # predicts 1
            [0.0, 0.0, 1.0],  # predicts 2
            [0.0, 5.0, 0.0],  # predicts 1
        ]
    )
    x = torch.tensor([0, 1, 2, 3, 3, 0], dtype=torch.float32).reshape(6, 1)
    y = torch.tensor([0, 1, 1, 1, 2, 2])
    return FixedLogits(table), x, y


def test_evaluate_matches_hand_computation() -> None:
    model, x, y = _fixed_model()
    result = evaluate(model, x, y, num_classes=3, batch_size=4)
    # predictions 0,1,2,1,1,0 vs labels 0,1,1,1,2,2 -> correct at 0,1,3
    assert isinstance(result, EvalResult)
    assert result.predictions.tolist() == [0, 1, 2, 1, 1, 0]
    assert result.predictions.dtype == np.int64
    assert result.accuracy == pytest.approx(3 / 6)
    assert result.num_examples == 6
    assert result.per_class_total.tolist() == [1, 3, 2]
    assert result.per_class_correct.tolist() == [1, 2, 0]
    assert result.per_class_total.dtype == np.int64 and result.per_class_correct.dtype == np.int64
    assert result.per_class_total.sum() == result.num_examples
    assert result.per_class_correct.sum() == round(result.accuracy * result.num_examples)

    def ce(logits: list[float], label: int) -> float:
        return -logits[label] + math.log(sum(math.exp(v) for v in logits))

    rows = [[2, 0, 0], [0, 3, 0], [0, 0, 1], [0, 5, 0], [0, 5, 0], [2, 0, 0]]
    expected = (
        sum(ce([float(v) for v in r], lab) for r, lab in zip(rows, [0, 1, 1, 1, 2, 2], strict=True)) / 6
    )
    assert result.loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode", [True, False])
def test_evaluate_restores_training_mode(mode: bool) -> None:
    model = build_model("resnet18", input_shape=(1, 8, 8), num_classes=3, seed=0)
    model.train(mode)
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda m, _i: seen.append(m.training))
    stats_before = [b.clone() for b in model.buffers()]
    x = torch.rand(4, 1, 8, 8)
    evaluate(model, x, torch.tensor([0, 1, 2, 0]), num_classes=3)
    assert seen == [False]
    assert model.training is mode
    # eval mode: BatchNorm running statistics are not updated
    assert all(torch.equal(a, b) for a, b in zip(stats_before, model.buffers(), strict=True))


def test_evaluate_rejects_bad_input() -> None:
    model, x, y = _fixed_model()
    with pytest.raises(ValueError, match="x is empty"):
        evaluate(model, x[:0], y[:0], num_classes=3)
    with pytest.raises(ValueError, match="len"):
        evaluate(model, x, y[:5], num_classes=3)
    with pytest.raises(ValueError, match="outside"):
        evaluate(model, x, y + 1, num_classes=3)
    with pytest.raises(ValueError, match="expected"):
        evaluate(model, x, y, num_classes=4)


def test_predict_logits_batches_and_does_not_track_gradients() -> None:
    model = _fresh()
    x = torch.rand(10, *SHAPE)
    logits = predict_logits(model, x, batch_size=3)
    assert logits.shape == (10, NUM_CLASSES)
    assert not logits.requires_grad
    model.eval()
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-6)


# ---------------------------------------------------------------------------- weights


def test_get_set_weights_round_trip_including_buffers() -> None:
    source = build_model("resnet18", input_shape=(1, 8, 8), num_classes=3, seed=1)
    source.train()
    source(torch.rand(4, 1, 8, 8))  # move BatchNorm running stats away from their init
    target = build_model("resnet18", input_shape=(1, 8, 8), num_classes=3, seed=2)
    weights = get_weights(source)
    keys = list(source.state_dict())
    assert len(weights) == len(keys)
    for key, w in zip(keys, weights, strict=True):
        assert w.dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float32)
    set_weights(target, weights)
    assert all(np.array_equal(a, b) for a, b in zip(weights, get_weights(target), strict=True))
    assert int(target.state_dict()["bn1.num_batches_tracked"]) == 1


def test_get_weights_returns_copies() -> None:
    model = _fresh()
    weights = get_weights(model)
    weights[0][...] = 42.0
    assert not np.array_equal(get_weights(model)[0], weights[0])


def test_set_weights_does_not_alias_the_input() -> None:
    model = _fresh(seed=0)
    weights = get_weights(_fresh(seed=1))
    set_weights(model, weights)
    snapshot = [w.copy() for w in weights]
    for w in weights:
        w += 1.0
    assert all(np.array_equal(a, b) for a, b in zip(snapshot, get_weights(model), strict=True))


def test_set_weights_keeps_optimizer_references_valid() -> None:
    model = _fresh(seed=0)
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    set_weights(model, get_weights(_fresh(seed=1)))
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters(), strict=True))


def test_set_weights_rejects_wrong_shape_naming_index() -> None:
    model = _fresh()
    weights = get_weights(model)
    weights[2] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"weights\[2\]") as info:
        set_weights(model, weights)
    assert str(tuple(model.state_dict()[list(model.state_dict())[2]].shape)) in str(info.value)
    assert "(3, 3)" in str(info.value)


def test_set_weights_rejects_wrong_count() -> None:
    model = _fresh()
    weights = get_weights(model)
    before = get_weights(model)
    with pytest.raises(ValueError, match=f"{len(weights) - 1} arrays, expected {len(weights)}"):
        set_weights(model, weights[:-1])
    bad = [w + 1 for w in weights[:-1]] + [np.zeros(1, dtype=np.float32)]
    with pytest.raises(ValueError, match=rf"weights\[{len(weights) - 1}\]"):
        set_weights(model, bad)
    # a rejected update leaves the model untouched (shapes are checked before copying)
    assert all(np.array_equal(a, b) for a, b in zip(before, get_weights(model), strict=True))


def test_flatten_concatenates_as_float64() -> None:
    weights: list[np.ndarray] = [
        np.array([[1, 2], [3, 4]], dtype=np.float32),
        np.array(5, dtype=np.int64),
        np.array([6.5]),
    ]
    flat = flatten(weights)
    assert flat.dtype == np.float64
    assert flat.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.5]
    assert flatten([]).shape == (0,)
    model = _fresh()
    assert flatten(get_weights(model)).size == sum(t.numel() for t in model.state_dict().values())
