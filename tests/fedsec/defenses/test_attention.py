"""Self-attention distillation: hand-computed maps and loss, hooks, and the training loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional

from fedsec.defenses.attention import (
    ActivationRecorder,
    AttentionDistillationLoss,
    attention_layers,
    attention_map,
    distill,
    distillation_loss,
)
from fedsec.models import build_model
from fedsec.training import make_optimizer


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_attention_map_sums_squared_channels_then_spatial_softmax():
    # prepare: channel 0 [[1, 0], [2, 1]], channel 1 [[1, 1], [0, -2]]
    a = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]], [[1.0, 1.0], [0.0, -2.0]]]])
    original = a.clone()
    # execute
    out = attention_map(a)
    # assert: squares summed over channels = [[2, 1], [4, 5]], then softmax over 4 positions
    assert out.shape == (1, 4)
    assert out[0].tolist() == pytest.approx(_softmax([2.0, 1.0, 4.0, 5.0]), abs=1e-6)
    assert torch.equal(a, original)
    # same size is a no-op resize
    assert torch.allclose(attention_map(a, size=(2, 2)), out)


def test_attention_map_bilinear_upsampling_by_hand():
    # (1, 1, 1, 2) with values [1, 3]: squares [1, 9]; bilinear (align_corners=False) to 1x4
    # samples source x = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1):
    # [1, 0.75*1 + 0.25*9, 0.25*1 + 0.75*9, 9] = [1, 3, 7, 9]
    a = torch.tensor([[[[1.0, 3.0]]]])
    out = attention_map(a, size=(1, 4))
    assert out[0].tolist() == pytest.approx(_softmax([1.0, 3.0, 7.0, 9.0]), abs=1e-6)
    with pytest.raises(ValueError, match="size"):
        attention_map(a, size=(0, 4))
    with pytest.raises(ValueError, match="activation"):
        attention_map(torch.ones(2, 3))


def test_distillation_loss_by_hand_with_upsampled_constant_target():
    # shallow block 2x2 with one active pixel: energies [1, 0, 0, 0]
    shallow = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], requires_grad=True)
    # deep block 1x1 (3 channels): upsampled to 2x2 it is constant, so its softmax is uniform
    deep = torch.tensor([[[[1.0]], [[2.0]], [[0.5]]]], requires_grad=True)
    loss = distillation_loss([shallow, deep])
    e = math.e
    source = [e / (e + 3), 1 / (e + 3), 1 / (e + 3), 1 / (e + 3)]
    expected = sum((s - 0.25) ** 2 for s in source)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    # gradients reach the shallow activation, not the detached deep target
    loss.backward()
    assert shallow.grad is not None and float(shallow.grad.abs().sum()) > 0
    assert deep.grad is None


def test_distillation_loss_sums_pairs_and_averages_over_batch():
    g = torch.Generator().manual_seed(0)
    acts = [torch.rand(3, 2, 4, 4, generator=g), torch.rand(3, 5, 2, 2, generator=g), torch.rand(3, 1, 1, 1)]
    total = distillation_loss(acts)
    pair = []
    for shallow, deep in ((acts[0], acts[1]), (acts[1], acts[2])):
        src = attention_map(shallow)
        tgt = attention_map(deep, size=tuple(shallow.shape[-2:]))
        pair.append(sum(float(((src[b] - tgt[b]) ** 2).sum()) for b in range(3)) / 3)
    assert float(total) == pytest.approx(sum(pair), rel=1e-5)
    # identical maps give zero loss
    same = torch.rand(2, 3, 2, 2, generator=g)
    assert float(distillation_loss([same, same.clone()])) == pytest.approx(0.0, abs=1e-12)


def test_distillation_loss_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        distillation_loss([torch.ones(1, 1, 2, 2)])
    with pytest.raises(ValueError, match=r"activations\[1\]"):
        distillation_loss([torch.ones(1, 1, 2, 2), torch.ones(1, 4)])
    with pytest.raises(ValueError, match="batch size"):
        distillation_loss([torch.ones(1, 1, 2, 2), torch.ones(2, 1, 2, 2)])


def test_attention_layers_picks_convs_or_resnet_blocks():
    lenet = build_model("lenet", input_shape=(1, 8, 8), num_classes=3, seed=0)
    assert attention_layers(lenet) == [lenet.features[0], lenet.features[3]]
    cnn = build_model("cnn", input_shape=(1, 8, 8), num_classes=3, seed=0)
    assert attention_layers(cnn) == [cnn.features[0], cnn.features[3]]
    resnet = build_model("resnet18", input_shape=(3, 8, 8), num_classes=3, seed=0)
    assert attention_layers(resnet) == [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    with pytest.raises(ValueError, match="Conv2d"):
        attention_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))


def test_activation_recorder_records_one_pass_in_order_and_removes_hooks():
    model = build_model("lenet", input_shape=(1, 8, 8), num_classes=3, seed=0)
    layers = attention_layers(model)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with ActivationRecorder(layers) as recorder:
        assert _hook_count(model) == 2
        model(x)
        first = recorder.activations
        assert [tuple(a.shape) for a in first] == [(2, 6, 8, 8), (2, 16, 4, 4)]
        assert torch.allclose(first[0], layers[0](x))
        model(x[:1])  # a new forward replaces, not appends
        assert [a.shape[0] for a in recorder.activations] == [1, 1]
        recorder.clear()
        assert recorder.activations == []
    assert _hook_count(model) == 0
    model(x)
    assert recorder.activations == []


def test_distillation_loss_with_zero_delta_is_cross_entropy_and_hooks_are_removed():
    model = build_model("lenet", input_shape=(1, 8, 8), num_classes=3, seed=0)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 1])
    ce = functional.cross_entropy(model(x), y)
    with AttentionDistillationLoss(layers=model, delta=0.0) as plain:
        assert float(plain(model, x, y).detach()) == pytest.approx(float(ce.detach()), abs=1e-7)
    with AttentionDistillationLoss(layers=attention_layers(model), delta=2.0) as loss_fn:
        acts = [model.features[0](x)]
        acts.append(model.features[3](model.features[2](model.features[1](acts[0]))))
        expected = ce + 2.0 * distillation_loss(acts)
        assert float(loss_fn(model, x, y).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
        assert float(loss_fn(model, x, y).detach()) > float(ce.detach())
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError, match="closed"):
        loss_fn(model, x, y)
    with pytest.raises(ValueError, match="delta"):
        AttentionDistillationLoss(layers=model, delta=-1.0)


def test_distill_lowers_the_distillation_term_and_leaves_no_hooks():
    model = build_model("lenet", input_shape=(1, 8, 8), num_classes=2, seed=0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > x[:, 0, 4:].mean(dim=(1, 2))).long()
    x_before = x.clone()

    def term() -> float:
        with ActivationRecorder(attention_layers(model)) as rec, torch.no_grad():
            model(x)
            return float(distillation_loss(rec.activations))

    before = term()
    opt = make_optimizer("sgd", model.parameters(), lr=0.05)
    loss = distill(
        model,
        x,
        y,
        delta=50.0,
        epochs=6,
        batch_size=8,
        optimizer=opt,
        generator=torch.Generator().manual_seed(0),
    )
    assert math.isfinite(loss)
    after = term()
    assert after < 0.8 * before, (before, after)
    assert _hook_count(model) == 0
    assert torch.equal(x, x_before)
