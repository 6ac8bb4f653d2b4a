"""Tests for data poisoning: label flips, pixel triggers, DBA local triggers, clean-label backdoor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsec.data.clean_label import clean_label_poison
from fedsec.data.containers import TensorSplit
from fedsec.data.poisoning import flip_labels, targeted_subset
from fedsec.data.triggers import Trigger, backdoor_test_set, dba_parts, pixel_pattern, poison_with_trigger

SHAPE = (1, 8, 8)


def make_split(n: int = 40, *, num_classes: int = 4, seed: int = 0, shape=SHAPE) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.rand(n, *shape, generator=g)
    y = torch.arange(n, dtype=torch.int64) % num_classes
    return TensorSplit(x=x, y=y)


def snapshot(split: TensorSplit) -> tuple[torch.Tensor, torch.Tensor]:
    return split.x.clone(), split.y.clone()


def assert_unchanged(split: TensorSplit, snap: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert torch.equal(split.x, snap[0])
    assert torch.equal(split.y, snap[1])


# ---------------------------------------------------------------------------- label flipping


def test_targeted_subset_relabels_source_samples():
    split = make_split(12)

    subset = targeted_subset(split, source=1, target=3)

    assert len(subset) == 3
    assert torch.equal(subset.y, torch.full((3,), 3))
    assert torch.equal(subset.x, split.x[split.y == 1])
    with pytest.raises(ValueError, match="target"):
        targeted_subset(split, source=2, target=2)


def test_flip_labels_flips_exactly_the_fraction_of_source_samples():
    split = make_split(40)  # 10 samples per class
    snap = snapshot(split)

    flipped = flip_labels(split, source=2, target=0, fraction=0.35, seed=7)

    assert_unchanged(split, snap)
    changed = (flipped.y != split.y).numpy()
    assert changed.sum() == round(0.35 * 10)
    assert np.all(split.y.numpy()[changed] == 2)
    assert np.all(flipped.y.numpy()[changed] == 0)
    assert torch.equal(flipped.x, split.x)
    again = flip_labels(split, source=2, target=0, fraction=0.35, seed=7)
    assert torch.equal(again.y, flipped.y)
    other = flip_labels(split, source=2, target=0, fraction=0.35, seed=8)
    assert not torch.equal(other.y, flipped.y)
    everything = flip_labels(split, source=2, target=0, fraction=1.0, seed=0)
    assert int((everything.y == 2).sum()) == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": -0.1}, "fraction"),
        ({"source": -1}, "source"),
        ({"target": 1}, "target"),
        ({"seed": -3}, "seed"),
    ],
)
def test_flip_labels_rejects_bad_parameters(kwargs, name):
    args = {"source": 1, "target": 0, "fraction": 0.5, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        flip_labels(make_split(8), **args)


# ---------------------------------------------------------------------------- triggers


def test_trigger_apply_stamps_exactly_the_mask_pixels_on_all_channels():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[3, 3] = True
    trigger = Trigger(mask=mask, value=0.75)
    x = torch.full((2, 3, 4, 4), 0.1)

    out = trigger.apply(x)

    assert torch.equal(x, torch.full((2, 3, 4, 4), 0.1))
    expected = x.clone()
    expected[:, :, 0, 1] = 0.75
    expected[:, :, 3, 3] = 0.75
    assert torch.equal(out, expected)
    assert trigger.pixels == 2
    with pytest.raises(ValueError, match="size"):
        trigger.apply(torch.zeros(1, 1, 5, 5))
    with pytest.raises(ValueError, match="mask"):
        Trigger(mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="value"):
        Trigger(mask=mask, value=2.0)


def test_square_pattern_is_the_bottom_right_block():
    trigger = pixel_pattern((1, 8, 8), kind="square", size=3, margin=1)

    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[4:7, 4:7] = True
    assert torch.equal(trigger.mask, expected)
    with pytest.raises(ValueError, match="size"):
        pixel_pattern((1, 8, 8), kind="square", size=8, margin=1)
    with pytest.raises(ValueError, match="kind"):
        pixel_pattern((1, 8, 8), kind="star")


def test_dba_pattern_reproduces_the_reference_mnist_trigger():
    trigger = pixel_pattern((1, 28, 28), kind="dba", size=4, margin=0)

    rows, cols = torch.nonzero(trigger.mask, as_tuple=True)
    pixels = set(zip(rows.tolist(), cols.tolist(), strict=True))
    expected = {(r, c) for r in (0, 3) for c in (*range(0, 4), *range(6, 10))}
    assert pixels == expected


def test_dba_parts_are_disjoint_bars_composing_the_global_trigger():
    global_trigger = pixel_pattern((1, 28, 28), kind="dba", size=4, margin=1)

    parts = dba_parts(global_trigger, 4)

    assert len(parts) == 4
    union = parts[0]
    for part in parts[1:]:
        union = union + part
    assert union == global_trigger
    total = torch.stack([p.mask for p in parts]).sum(dim=0)
    assert int(total.max()) == 1  # disjoint
    for part in parts:
        rows, cols = torch.nonzero(part.mask, as_tuple=True)
        assert part.pixels == 4
        assert len(set(rows.tolist())) == 1  # one row ...
        assert cols.max() - cols.min() == 3  # ... four contiguous columns: one bar
    assert [tuple(torch.nonzero(p.mask)[0].tolist()) for p in parts] == [(1, 1), (1, 7), (4, 1), (4, 7)]


def test_dba_parts_chunk_when_components_do_not_match_k():
    square = pixel_pattern(SHAPE, kind="square", size=3)

    parts = dba_parts(square, 2)

    assert [p.pixels for p in parts] == [5, 4]
    assert parts[0] + parts[1] == square
    assert not bool((parts[0].mask & parts[1].mask).any())
    assert dba_parts(square, 1) == [square]
    with pytest.raises(ValueError, match="k"):
        dba_parts(square, 0)
    with pytest.raises(ValueError, match="k"):
        dba_parts(square, 10)


# ---------------------------------------------------------------------------- backdoors


def test_poison_with_trigger_stamps_and_relabels_the_fraction():
    split = make_split(40)  # 30 non-target samples for target 0
    snap = snapshot(split)
    trigger = pixel_pattern(SHAPE, kind="square", size=2)

    poisoned = poison_with_trigger(split, trigger, target=0, fraction=0.5, seed=3)

    assert_unchanged(split, snap)
    assert len(poisoned) == len(split)
    changed = np.flatnonzero((poisoned.y != split.y).numpy())
    assert changed.size == 15
    assert np.all(split.y.numpy()[changed] != 0)
    assert np.all(poisoned.y.numpy()[changed] == 0)
    idx = torch.from_numpy(changed)
    assert torch.equal(poisoned.x[idx], trigger.apply(split.x[idx]))
    untouched = torch.from_numpy(np.setdiff1d(np.arange(40), changed))
    assert torch.equal(poisoned.x[untouched], split.x[untouched])
    again = poison_with_trigger(split, trigger, target=0, fraction=0.5, seed=3)
    assert torch.equal(again.x, poisoned.x) and torch.equal(again.y, poisoned.y)


def test_backdoor_test_set_excludes_the_target_class():
    test = make_split(20)
    trigger = pixel_pattern(SHAPE, kind="dba", size=2, margin=0)

    backdoor = backdoor_test_set(test, trigger, target=3)

    assert len(backdoor) == 15
    assert torch.equal(backdoor.y, torch.full((15,), 3))
    assert torch.equal(backdoor.x, trigger.apply(test.x[test.y != 3]))


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def poison_tiny(split, trigger, **overrides):
    """clean_label_poison with the tiny proxy net and a short PGD (target class 2, half its samples)."""
    args = {
        "target": 2,
        "fraction": 0.5,
        "model": _TinyNet(),
        "input_shape": SHAPE,
        "num_classes": 4,
        "eps": 0.1,
        "eps_step": 0.05,
        "max_iter": 2,
        "seed": 0,
    } | overrides
    return clean_label_poison(split, trigger, **args)


def test_clean_label_poison_keeps_labels_and_triggers_only_target_images():
    split = make_split(40)  # 10 samples of the target class 2
    snap = snapshot(split)
    trigger = pixel_pattern(SHAPE, kind="square", size=2)
    model = _TinyNet()
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    np.random.seed(123)  # the global RNG must continue as if untouched

    poisoned = poison_tiny(split, trigger, model=model)

    assert_unchanged(split, snap)
    assert torch.equal(poisoned.y, split.y)
    changed = np.flatnonzero((poisoned.x != split.x).flatten(1).any(dim=1).numpy())
    assert changed.size == 5  # int(0.5 * 10) distinct target images, none drawn twice
    assert np.all(split.y.numpy()[changed] == 2)
    mask = trigger.mask
    assert torch.all(poisoned.x[torch.from_numpy(changed)][:, :, mask] == 1.0)
    # PGD changed pixels outside the trigger too, within the L-inf budget.
    diff = (poisoned.x - split.x)[torch.from_numpy(changed)][:, :, ~mask]
    assert float(diff.abs().max()) > 0.0
    assert float(diff.abs().max()) <= 0.1 + 1e-6
    # The proxy model and the global RNG state are left as they were.
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.requires_grad for p in model.parameters())
    assert np.random.rand() == np.random.RandomState(123).rand()
    again = poison_tiny(split, trigger, model=model)
    assert torch.equal(again.x, poisoned.x)


def test_clean_label_poison_with_copies_poisons_every_target_image_from_distinct_starts():
    split = make_split(40)  # 10 samples of the target class 2
    trigger = pixel_pattern(SHAPE, kind="square", size=2)
    targets = np.flatnonzero(split.y.numpy() == 2)

    poisoned = poison_tiny(split, trigger, fraction=1.0, copies=3)

    # Every target image is replaced in place; 2 more poisons of each are appended, all labelled 2.
    assert len(poisoned) == 40 + 2 * 10
    assert torch.equal(poisoned.y[:40], split.y)
    assert torch.equal(poisoned.y[40:], torch.full((20,), 2))
    changed = np.flatnonzero((poisoned.x[:40] != split.x).flatten(1).any(dim=1).numpy())
    assert np.array_equal(changed, targets)
    copies = [poisoned.x[targets], poisoned.x[40:50], poisoned.x[50:60]]
    mask = trigger.mask
    for c in copies:
        assert torch.all(c[:, :, mask] == 1.0)
        diff = (c - split.x[targets])[:, :, ~mask]
        assert float(diff.abs().max()) <= 0.1 + 1e-6
    # Random starts: no two copies of an image are the same poison.
    assert not torch.equal(copies[0], copies[1])
    assert not torch.equal(copies[1], copies[2])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"fraction": 1.5}, "fraction"),
        ({"fraction": 0.0}, "fraction"),
        ({"copies": 0}, "copies"),
        ({"eps": 0.0}, "eps"),
        ({"eps_step": -1.0}, "eps_step"),
        ({"max_iter": 0}, "max_iter"),
        ({"target": 4}, "target"),
        ({"input_shape": (1, 4, 4)}, "input_shape"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_clean_label_poison_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        poison_tiny(make_split(8), pixel_pattern(SHAPE), **kwargs)


def test_chosen_targets_are_seeded_source_samples_relabelled():
    from fedsec.data.poisoning import chosen_targets

    x = torch.rand(20, 1, 4, 4)
    y = torch.tensor([5, 1] * 10)
    split = TensorSplit(x=x, y=y)

    a = chosen_targets(split, source=5, target=7, count=3, seed=1)
    b = chosen_targets(split, source=5, target=7, count=3, seed=1)
    whole = chosen_targets(split, source=5, target=7, count=50, seed=1)

    assert len(a) == 3 and torch.equal(a.x, b.x) and bool(torch.all(a.y == 7))
    assert len(whole) == 10
    rows = {tuple(r.flatten().tolist()) for r in x[y == 5]}
    assert all(tuple(r.flatten().tolist()) in rows for r in a.x)
