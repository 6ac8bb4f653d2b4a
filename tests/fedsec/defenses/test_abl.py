"""Anti-backdoor learning: LGA sign flip, isolation of planted samples, Eq. 9 unlearning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

from fedsec.defenses.abl import (
    PHASE_EVERY_ROUND,
    PHASE_ISOLATION,
    PHASE_UNLEARNING,
    AblResult,
    abl_phase,
    anti_backdoor_learning,
    data_fingerprint,
    lga_isolation,
    unlearn,
)
from fedsec.defenses.abl_losses import (
    isolate_lowest_loss,
    lga_loss,
    per_sample_losses,
    unlearning_loss,
    unlearning_targets,
)
from fedsec.training import make_optimizer, train

NUM_CLASSES = 3


class FixedLogits(nn.Module):
    """Row ``i`` of a fixed logit table (plus a trainable bias) for an input whose first value is ``i``."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.bias = nn.Parameter(torch.zeros(table.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()] + self.bias


def planted_data(seed: int = 0, n: int = 60, k: int = 10) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noise features with random labels plus ``k`` planted samples whose trigger (x[7] = 4) maps to 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    x[:, 7] = 0.0
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    planted = torch.randperm(n, generator=g)[:k].sort().values
    x[planted, 7] = 4.0
    y[planted] = 0
    return x, y, planted.numpy()


def linear_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(8, NUM_CLASSES)


def test_lga_loss_descends_above_gamma_and_ascends_below():
    # prepare: zero logits over 2 classes, label 0 -> CE = log 2, dCE/dbias = [p0 - 1, p1] = [-0.5, 0.5]
    model = FixedLogits(torch.zeros(1, 2))
    x, y = torch.zeros(1, 1), torch.tensor([0])
    for gamma, sign in ((0.5, 1.0), (1.0, -1.0)):
        model.zero_grad()
        # execute
        loss = lga_loss(gamma)(model, x, y)
        loss.backward()
        # assert
        assert float(loss.detach()) == pytest.approx(sign * math.log(2.0))
        assert model.bias.grad is not None
        assert model.bias.grad.tolist() == pytest.approx([sign * -0.5, sign * 0.5])
    # exactly at gamma the step is zero
    model.zero_grad()
    lga_loss(math.log(2.0))(model, x, y).backward()
    assert model.bias.grad is not None
    assert model.bias.grad.abs().max().item() < 1e-6
    with pytest.raises(ValueError, match="gamma"):
        lga_loss(-0.1)


def test_isolation_picks_the_planted_lowest_loss_samples_with_index_ties():
    # rows 1, 3, 4 are confidently right (planted), row 5 ties with row 3; others are unsure
    table = torch.tensor(
        [[0.0, 0.0], [6.0, 0.0], [0.5, 0.0], [4.0, 0.0], [8.0, 0.0], [4.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    )
    model = FixedLogits(table)
    x = torch.arange(8, dtype=torch.float32).view(8, 1)
    y = torch.zeros(8, dtype=torch.int64)
    losses = per_sample_losses(model, x, y, batch_size=3)
    by_hand = [math.log1p(math.exp(-float(r[0] - r[1]))) for r in table]
    assert losses.tolist() == pytest.approx(by_hand, rel=1e-4)
    assert model.training  # mode restored
    isolated = isolate_lowest_loss(model, x, y, fraction=3 / 8, batch_size=3)
    assert isolated.tolist() == [1, 3, 4]  # row 5 has the same loss as row 3 but a larger index
    assert isolated.dtype == np.int64
    assert isolate_lowest_loss(model, x, y, fraction=0.0, batch_size=8).tolist() == []
    with pytest.raises(ValueError, match="fraction"):
        isolate_lowest_loss(model, x, y, fraction=1.0, batch_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        per_sample_losses(model, x, y, batch_size=0)


def test_unlearning_loss_is_kept_mean_minus_isolated_mean_by_hand():
    table = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    model = FixedLogits(table)
    x = torch.arange(4, dtype=torch.float32).view(4, 1)
    y = torch.tensor([0, 0, 0, 1])
    targets = unlearning_targets(y, np.array([1, 3]))
    assert targets.tolist() == [[0, 0], [0, 1], [0, 0], [1, 1]]
    ce = [math.log1p(math.exp(-2.0)), math.log(2.0), math.log1p(math.exp(1.0)), math.log1p(math.exp(3.0))]
    expected = (ce[0] + ce[2]) / 2 - (ce[1] + ce[3]) / 2
    assert float(unlearning_loss(model, x, targets).detach()) == pytest.approx(expected, rel=1e-5)
    # no isolated row: plain cross-entropy; only isolated rows: pure ascent
    none = unlearning_targets(y, np.array([], dtype=np.int64))
    assert float(unlearning_loss(model, x, none).detach()) == pytest.approx(sum(ce) / 4, rel=1e-5)
    every = unlearning_targets(y, np.arange(4))
    assert float(unlearning_loss(model, x, every).detach()) == pytest.approx(-sum(ce) / 4, rel=1e-5)
    assert y.tolist() == [0, 0, 0, 1]  # not modified
    with pytest.raises(ValueError, match="isolated"):
        unlearning_targets(y, np.array([4]))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        unlearning_loss(model, x, y)


def test_lga_isolation_on_a_trained_model_returns_exactly_the_planted_indices():
    x, y, planted = planted_data()
    model = linear_model()
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    train(
        model,
        x,
        y,
        epochs=3,
        batch_size=10,
        optimizer=opt,
        generator=torch.Generator().manual_seed(0),
        loss_fn=lga_loss(0.5),
    )
    isolated = isolate_lowest_loss(model, x, y, fraction=len(planted) / len(x), batch_size=64)
    assert isolated.tolist() == planted.tolist()


def test_unlearning_raises_isolated_loss_and_keeps_clean_loss_bounded():
    x, y, planted = planted_data()
    model = linear_model()
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    train(model, x, y, epochs=3, batch_size=10, optimizer=opt, generator=torch.Generator().manual_seed(0))
    clean = np.setdiff1d(np.arange(len(x)), planted)
    before = per_sample_losses(model, x, y, batch_size=64)
    train(
        model,
        x,
        unlearning_targets(y, planted),
        epochs=3,
        batch_size=10,
        optimizer=opt,
        generator=torch.Generator().manual_seed(1),
        loss_fn=unlearning_loss,
    )
    after = per_sample_losses(model, x, y, batch_size=64)
    assert after[planted].mean() > before[planted].mean() + 1.0
    assert after[clean].mean() < before[clean].mean() + 0.5
    assert after[clean].mean() < 2 * math.log(NUM_CLASSES)


def test_anti_backdoor_learning_end_to_end_isolates_and_unlearns_the_trigger():
    x, y, planted = planted_data(seed=1)
    x_before, y_before = x.clone(), y.clone()
    model = linear_model(seed=1)
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    result = anti_backdoor_learning(
        model,
        x,
        y,
        isolation_epochs=3,
        gamma=0.5,
        fraction=0.2,
        unlearning_epochs=3,
        clean_epochs=2,
        optimizer=opt,
        batch_size=10,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(result, AblResult)
    assert len(result.isolated) == 12
    assert set(planted.tolist()) <= set(result.isolated.tolist())
    assert math.isfinite(result.isolation_loss) and math.isfinite(result.final_loss)
    # the trigger no longer maps to the target label
    with torch.no_grad():
        triggered = model(x[planted]).argmax(dim=1)
    assert float((triggered == 0).float().mean()) < 0.5
    loss_planted = float(functional.cross_entropy(model(x[planted]), y[planted]).detach())
    assert loss_planted > result.isolation_loss
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    with pytest.raises(ValueError, match="clean_epochs"):
        anti_backdoor_learning(
            model,
            x,
            y,
            isolation_epochs=1,
            gamma=0.5,
            fraction=0.2,
            unlearning_epochs=1,
            clean_epochs=-1,
            optimizer=opt,
            batch_size=10,
            generator=torch.Generator(),
        )


# ---------------------------------------------------------------------------- schedules


def test_phased_schedule_is_lga_through_t_te_then_unlearning():
    phases = [abl_phase(r, schedule="phased", isolation_rounds=3) for r in range(1, 7)]
    assert phases == [PHASE_ISOLATION] * 3 + [PHASE_UNLEARNING] * 3
    assert abl_phase(1, schedule="phased", isolation_rounds=0) == PHASE_UNLEARNING
    assert {abl_phase(r, schedule="every-round", isolation_rounds=3) for r in range(1, 7)} == {
        PHASE_EVERY_ROUND
    }


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"server_round": 1, "schedule": "sometimes", "isolation_rounds": 2}, "schedule"),
        ({"server_round": -1, "schedule": "phased", "isolation_rounds": 2}, "server_round"),
        ({"server_round": 1, "schedule": "phased", "isolation_rounds": 1.5}, "isolation_rounds"),
    ],
)
def test_abl_phase_errors_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        abl_phase(**kwargs)


def test_the_two_halves_reproduce_anti_backdoor_learning_exactly():
    x, y, _ = planted_data(seed=2)
    settings = {"gamma": 0.5, "fraction": 0.2, "batch_size": 10}
    whole = linear_model(seed=2)
    result = anti_backdoor_learning(
        whole,
        x,
        y,
        isolation_epochs=2,
        unlearning_epochs=1,
        clean_epochs=1,
        optimizer=make_optimizer("sgd", whole.parameters(), lr=0.1),
        generator=torch.Generator().manual_seed(4),
        **settings,
    )
    halves = linear_model(seed=2)
    opt = make_optimizer("sgd", halves.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(4)
    isolated, isolation_loss = lga_isolation(
        halves, x, y, epochs=2, optimizer=opt, generator=generator, **settings
    )
    final = unlearn(
        halves,
        x,
        y,
        isolated,
        clean_epochs=1,
        unlearning_epochs=1,
        optimizer=opt,
        batch_size=10,
        generator=generator,
    )
    np.testing.assert_array_equal(isolated, result.isolated)
    assert (isolation_loss, final) == (result.isolation_loss, result.final_loss)
    for a, b in zip(whole.parameters(), halves.parameters(), strict=True):
        assert torch.equal(a, b)


def test_unlearn_checks_the_isolated_indices():
    x, y, _ = planted_data()
    model = linear_model()
    with pytest.raises(ValueError, match="outside"):
        unlearn(
            model,
            x,
            y,
            np.array([len(x)]),
            clean_epochs=0,
            unlearning_epochs=1,
            optimizer=make_optimizer("sgd", model.parameters(), lr=0.1),
            batch_size=10,
            generator=torch.Generator(),
        )


def test_data_fingerprint_changes_with_any_sample_or_label():
    x, y, _ = planted_data()
    same = data_fingerprint(x.clone(), y.clone())
    assert data_fingerprint(x, y) == same
    x2 = x.clone()
    x2[5, 3] += 1e-3
    y2 = y.clone()
    y2[0] = (y2[0] + 1) % NUM_CLASSES
    assert data_fingerprint(x2, y) != same
    assert data_fingerprint(x, y2) != same
    assert data_fingerprint(x[:-1], y[:-1]) != same
