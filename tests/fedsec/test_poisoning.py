"""Tests for update-level model poisoning (boosting, distance bound, λ selection, stealth loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsec.attacks.poisoning import (
    LambdaChoice,
    apply_update,
    boost,
    cosine_similarity,
    flat_update,
    max_l2_distance,
    project_l2,
    select_lambda,
    shrink_to_bound,
    unflatten,
)
from fedsec.attacks.stealth import StealthObjective, known_clients
from fedsec.data.containers import TensorSplit
from fedsec.training import make_optimizer, train

# ---------------------------------------------------------------------------- update vectors


def test_flat_update_unflatten_apply_round_trip():
    reference: list[np.ndarray] = [
        np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32),
        np.array([5], dtype=np.int64),
    ]
    weights: list[np.ndarray] = [
        np.array([[1.5, 2.0], [2.0, 4.0]], dtype=np.float32),
        np.array([7], dtype=np.int64),
    ]
    ref_copy = [r.copy() for r in reference]

    update = flat_update(weights, reference)

    np.testing.assert_array_equal(update, [0.5, 0.0, -1.0, 0.0, 2.0])
    assert update.dtype == np.float64
    parts = unflatten(update, reference)
    assert [p.shape for p in parts] == [(2, 2), (1,)]
    assert [p.dtype for p in parts] == [np.float32, np.int64]
    rebuilt = apply_update(reference, update)
    for got, want in zip(rebuilt, weights, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    for r, c in zip(reference, ref_copy, strict=True):
        np.testing.assert_array_equal(r, c)


def test_flat_update_and_unflatten_reject_mismatches():
    with pytest.raises(ValueError, match="reference"):
        flat_update([np.zeros(2)], [np.zeros(2), np.zeros(1)])
    with pytest.raises(ValueError, match="shape"):
        flat_update([np.zeros(2)], [np.zeros(3)])
    with pytest.raises(ValueError, match="like"):
        unflatten(np.zeros(4), [np.zeros(3)])
    with pytest.raises(ValueError, match="vector"):
        apply_update([np.zeros(3)], np.zeros(2))


def test_boost_scales_into_a_new_array():
    update = np.array([1.0, -2.0])

    boosted = boost(update, 3.0)

    np.testing.assert_array_equal(boosted, [3.0, -6.0])
    np.testing.assert_array_equal(update, [1.0, -2.0])
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="factor"):
            boost(update, bad)


def test_cosine_similarity_hand_cases():
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == 0.0
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0)
    assert cosine_similarity(np.zeros(2), np.array([1.0, 1.0])) == 0.0


def test_max_l2_distance_hand_case():
    update = np.array([3.0, 4.0])
    others = [np.zeros(2), np.array([3.0, 0.0]), np.array([3.0, 5.0])]

    assert max_l2_distance(update, others) == pytest.approx(5.0)
    assert max_l2_distance(update, []) == 0.0


def test_project_l2_inside_unchanged_outside_on_sphere():
    inside = np.array([1.0, 1.0])
    np.testing.assert_array_equal(project_l2(inside, center=np.zeros(2), radius=5.0), inside)

    projected = project_l2(np.array([6.0, 8.0]), center=np.zeros(2), radius=5.0)
    np.testing.assert_allclose(projected, [3.0, 4.0])

    shifted = project_l2(np.array([7.0, 9.0]), center=np.array([1.0, 1.0]), radius=5.0)
    np.testing.assert_allclose(shifted, [4.0, 5.0])
    with pytest.raises(ValueError, match="radius"):
        project_l2(inside, center=np.zeros(2), radius=-1.0)


# ---------------------------------------------------------------------------- shrink / select


def test_shrink_to_bound_finds_the_largest_t():
    # 1-D: benign at -1 and +1 (mean 0); update at 10; radius 3 -> point 2 (distance 3 to -1), t = 0.2.
    benign = [np.array([-1.0]), np.array([1.0])]

    point, t = shrink_to_bound(np.array([10.0]), benign, radius=3.0)

    assert t == pytest.approx(0.2, abs=1e-6)
    assert t <= 0.2  # the returned t is feasible
    assert max_l2_distance(point, benign) <= 3.0
    assert point[0] == pytest.approx(2.0, abs=1e-5)


def test_shrink_to_bound_keeps_a_fitting_update_and_falls_back_to_the_mean(caplog):
    benign = [np.array([-1.0]), np.array([1.0])]
    point, t = shrink_to_bound(np.array([0.5]), benign, radius=3.0)
    assert t == 1.0
    np.testing.assert_array_equal(point, [0.5])

    with caplog.at_level("WARNING", logger="fedsec.attacks.poisoning"):
        point, t = shrink_to_bound(np.array([10.0]), benign, radius=0.5)
    assert t == 0.0
    np.testing.assert_array_equal(point, [0.0])
    assert "benign mean" in caplog.text
    with pytest.raises(ValueError, match="benign"):
        shrink_to_bound(np.array([1.0]), [], radius=1.0)


def test_select_lambda_returns_largest_within_bound_and_stops_early():
    v = np.array([3.0, 4.0])  # ||lam * v|| = 5 lam
    benign = [np.zeros(2), np.array([0.01, 0.0])]
    calls: list[float] = []

    def craft(lam: float) -> np.ndarray:
        calls.append(lam)
        return lam * v

    choice = select_lambda([0.5, 4.0, 1.0, 2.0], craft, benign=benign, radius=6.0)

    assert isinstance(choice, LambdaChoice)
    assert choice.lam == 1.0  # 4 -> 20, 2 -> 10 too far; 1 -> 5 fits
    assert choice.within_bound
    assert calls == [4.0, 2.0, 1.0]
    assert choice.tried == (4.0, 2.0, 1.0)
    np.testing.assert_allclose(choice.update, [3.0, 4.0])


def test_select_lambda_without_bound_crafts_only_the_largest():
    calls: list[float] = []

    def craft(lam: float) -> np.ndarray:
        calls.append(lam)
        return np.array([lam * 100.0])

    choice = select_lambda([1.0, 3.0], craft, benign=[np.zeros(1)], radius=math.inf)

    assert calls == [3.0]
    assert choice.lam == 3.0 and choice.within_bound


def test_select_lambda_shrinks_when_no_candidate_fits():
    v = np.array([3.0, 4.0])
    benign = [np.zeros(2), np.array([0.1, 0.0])]

    choice = select_lambda([2.0, 1.0], lambda lam: lam * v, benign=benign, radius=1.0)

    assert not choice.within_bound
    assert choice.lam == 1.0
    assert choice.tried == (2.0, 1.0)
    assert max_l2_distance(choice.update, benign) <= 1.0
    assert cosine_similarity(choice.update - np.mean(benign, axis=0), v) > 0.99


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"candidates": []}, "candidates"),
        ({"candidates": [1.0, -1.0]}, "candidates"),
        ({"candidates": [math.nan]}, "candidates"),
        ({"radius": 0.0}, "radius"),
        ({"radius": -2.0}, "radius"),
    ],
)
def test_select_lambda_rejects_bad_parameters(kwargs, name):
    args = {"candidates": [1.0], "radius": 1.0} | kwargs
    with pytest.raises(ValueError, match=name):
        select_lambda(args["candidates"], lambda lam: np.zeros(1), benign=[], radius=args["radius"])


# ---------------------------------------------------------------------------- stealth objective


def _tiny_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(2, 2)


def _targeted() -> TensorSplit:
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])  # (2, 1, 1, 2)
    return TensorSplit(x=x, y=torch.tensor([1, 1]))


class _Flat(nn.Module):
    """nn.Linear on flattened (N, 1, 1, 2) images."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = _tiny_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _flat_params(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def test_stealth_objective_cosine_term_by_hand():
    model = _Flat()
    global_params = [torch.zeros_like(p) for p in model.parameters()]
    delta = _flat_params(model)  # global is zero, so the update is the parameters themselves
    targeted = _targeted()
    xb, yb = torch.tensor([[[[0.5, 0.5]]]]), torch.tensor([0])
    with torch.no_grad():
        ce = nn.functional.cross_entropy(model(xb), yb).item()
        ce_t = nn.functional.cross_entropy(model(targeted.x), targeted.y).item()

    parallel = StealthObjective(
        targeted=targeted, lam=0.5, penalty=10.0, global_params=global_params, benign_update=2.0 * delta
    )
    assert parallel(model, xb, yb).item() == pytest.approx(ce + 0.5 * ce_t, abs=1e-5)

    rng = np.random.default_rng(0)
    benign = rng.normal(size=delta.shape)
    cos = float(np.dot(delta, benign) / (np.linalg.norm(delta) * np.linalg.norm(benign)))
    other = StealthObjective(
        targeted=targeted, lam=0.5, penalty=10.0, global_params=global_params, benign_update=benign
    )
    assert other(model, xb, yb).item() == pytest.approx(ce + 0.5 * ce_t + 10.0 * (1.0 - cos), abs=1e-4)

    no_benign = StealthObjective(targeted=targeted, lam=0.5, penalty=10.0, global_params=global_params)
    assert no_benign(model, xb, yb).item() == pytest.approx(ce + 0.5 * ce_t, abs=1e-5)


def test_stealth_objective_training_step_turns_update_towards_benign():
    model = _Flat()
    start = _flat_params(model)
    rng = np.random.default_rng(1)
    # The model already moved away from the global weights, in a direction unlike the benign one.
    global_params = [
        (p.detach() - torch.from_numpy(rng.normal(scale=0.1, size=tuple(p.shape))).float())
        for p in model.parameters()
    ]
    global_flat = torch.cat([g.reshape(-1) for g in global_params]).double().numpy()
    benign = rng.normal(size=start.shape)
    before = cosine_similarity(start - global_flat, benign)
    objective = StealthObjective(
        targeted=_targeted(), lam=1.0, penalty=100.0, global_params=global_params, benign_update=benign
    )
    x = torch.rand(8, 1, 1, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))

    train(
        model,
        x,
        y,
        epochs=1,
        batch_size=8,
        optimizer=make_optimizer("sgd", model.parameters(), lr=0.001),
        generator=torch.Generator().manual_seed(2),
        loss_fn=objective,
    )

    after = cosine_similarity(_flat_params(model) - global_flat, benign)
    assert after > before + 0.05
    assert objective.cosine(model).item() == pytest.approx(after, abs=1e-5)


def test_stealth_objective_draws_targeted_minibatches_from_the_generator():
    model = _Flat()
    targeted = TensorSplit(x=torch.rand(10, 1, 1, 2), y=torch.ones(10, dtype=torch.int64))
    params = [p.detach().clone() for p in model.parameters()]
    xb, yb = torch.rand(2, 1, 1, 2), torch.tensor([0, 1])

    def run(seed: int) -> float:
        objective = StealthObjective(
            targeted=targeted,
            lam=1.0,
            penalty=0.0,
            global_params=params,
            targeted_batch=3,
            generator=torch.Generator().manual_seed(seed),
        )
        return objective(model, xb, yb).item()

    assert run(5) == run(5)
    with pytest.raises(ValueError, match="generator"):
        StealthObjective(targeted=targeted, lam=1.0, penalty=0.0, global_params=params, targeted_batch=3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lam": -1.0}, "lam"),
        ({"lam": math.inf}, "lam"),
        ({"penalty": -0.5}, "penalty"),
        ({"targeted_batch": 0}, "targeted_batch"),
        ({"benign_update": np.zeros(5)}, "benign_update"),
        ({"global_params": []}, "global_params"),
        ({"targeted": "data"}, "targeted"),
    ],
)
def test_stealth_objective_rejects_bad_parameters(kwargs, name):
    model = _Flat()
    args = {
        "targeted": _targeted(),
        "lam": 1.0,
        "penalty": 1.0,
        "global_params": [p.detach().clone() for p in model.parameters()],
    } | kwargs
    with pytest.raises(ValueError, match=name):
        StealthObjective(**args)


# ------------------------------------------------------------ accept, conflict removal, direction


def test_select_lambda_accept_rejects_updates_that_fail_an_extra_check():
    from fedsec.attacks.poisoning import select_lambda

    v = np.array([1.0, 0.0])
    crafted: list[float] = []

    def craft(lam: float) -> np.ndarray:
        crafted.append(lam)
        return lam * v

    choice = select_lambda(
        [1, 2, 4, 8], craft, benign=[np.zeros(2)], radius=100.0, accept=lambda u: u[0] <= 2.0
    )

    assert choice.lam == 2.0 and choice.within_bound and crafted == [8.0, 4.0, 2.0]


def test_remove_conflict_by_hand():
    from fedsec.attacks.stealth import remove_conflict

    reference = np.array([1.0, 0.0])
    # conflicting: (-1, 1)·(1, 0) = -1 → remove the (-1, 0) component
    np.testing.assert_allclose(remove_conflict(np.array([-1.0, 1.0]), reference), [0.0, 1.0])
    # not conflicting: unchanged
    np.testing.assert_allclose(remove_conflict(np.array([1.0, 1.0]), reference), [1.0, 1.0])


def test_stealth_direction_lowers_the_objective_keeps_the_model_and_has_the_requested_length():
    from fedsec.attacks.stealth import stealth_direction

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(8, 3)
    y_target = torch.ones(8, dtype=torch.long)
    y_benign = torch.zeros(8, dtype=torch.long)

    def objective(m: torch.nn.Module) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(m(x[:2]), y_target[:2])

    def benign(m: torch.nn.Module) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(m(x[2:]), y_benign[2:])

    step = stealth_direction(model, objective=objective, benign_loss=benign, steps=3, step_norm=0.1)
    restored = all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    loss_before = float(objective(model))
    with torch.no_grad():
        offset = 0
        for p in model.parameters():
            p.add_(torch.from_numpy(step[offset : offset + p.numel()]).reshape(p.shape).float())
            offset += p.numel()

    assert restored
    assert np.linalg.norm(step) <= 0.3 + 1e-9
    assert float(objective(model)) < loss_before


def test_select_lambda_skips_a_lambda_without_update_and_sends_the_benign_mean_when_none_has_one():
    v = np.array([1.0, 0.0])
    benign = [np.zeros(2), np.array([0.0, 2.0])]

    diverged_at_4 = select_lambda(
        [1.0, 2.0, 4.0], lambda lam: None if lam == 4.0 else lam * v, benign=benign, radius=10.0
    )
    nothing = select_lambda([1.0, 2.0], lambda lam: None, benign=benign, radius=10.0)

    assert diverged_at_4.lam == 2.0 and diverged_at_4.tried == (4.0, 2.0)
    np.testing.assert_array_equal(diverged_at_4.update, [2.0, 0.0])
    assert nothing.lam == 0.0 and nothing.tried == (2.0, 1.0)
    np.testing.assert_array_equal(nothing.update, [0.0, 1.0])
    with pytest.raises(ValueError, match="no benign update"):
        select_lambda([1.0], lambda lam: None, benign=[], radius=math.inf)


def test_eq4_loss_by_hand_on_a_zero_model_plain_and_normalised():
    # All weights 0: every logit is 0, so each cross-entropy over 2 classes is ln 2.
    model = _Flat()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    d = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # Δ = params − global = d
    global_params = [-torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.zeros(2)]
    benign = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # cos(Δ, Δ_benign) = 1/√2
    xb, yb = torch.tensor([[[[0.3, 0.9]]], [[[0.5, 0.1]]]]), torch.tensor([0, 1])
    lam, p = 3.0, 2.0
    plain = StealthObjective(
        targeted=_targeted(), lam=lam, penalty=p, global_params=global_params, benign_update=benign
    )
    normalised = StealthObjective(
        targeted=_targeted(),
        lam=lam,
        penalty=p,
        global_params=global_params,
        benign_update=benign,
        scale=StealthObjective.normalised_scale(lam),
    )

    expected = (
        lam * math.log(2) + math.log(2) + p * (1 - 1 / math.sqrt(2))
    )  # λ·F(D_tar) + F(D_m) + p(1 − cos)
    assert plain._delta(model).detach().numpy() == pytest.approx(d)
    assert plain(model, xb, yb).item() == pytest.approx(expected, abs=1e-6)
    assert normalised(model, xb, yb).item() == pytest.approx(expected / (1 + lam), abs=1e-6)
    with pytest.raises(ValueError, match="scale"):
        StealthObjective(targeted=_targeted(), lam=lam, penalty=p, global_params=global_params, scale=0.0)


def test_normalising_eq4_keeps_the_sgd_step_of_a_large_lambda_as_small_as_that_of_lambda_1():
    x = torch.rand(8, 1, 1, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(1))

    def step_norm(lam: float, *, normalise: bool) -> float:
        model = _Flat()
        start = _flat_params(model)
        objective = StealthObjective(
            targeted=_targeted(),
            lam=lam,
            penalty=0.0,
            global_params=[p.detach().clone() for p in model.parameters()],
            scale=StealthObjective.normalised_scale(lam) if normalise else 1.0,
        )
        optimizer = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
        train(
            model,
            x,
            y,
            epochs=1,
            batch_size=8,
            optimizer=optimizer,
            generator=torch.Generator(),
            loss_fn=objective,
        )
        return float(np.linalg.norm(_flat_params(model) - start))

    assert step_norm(16.0, normalise=False) > 5 * step_norm(1.0, normalise=False)  # the step grows with λ
    assert step_norm(16.0, normalise=True) < 1.5 * step_norm(1.0, normalise=True)


# ---------------------------------------------------------------------------- limited knowledge


def test_known_clients_random_draw_is_seeded_per_round_benign_only_and_distinct():
    benign = [0, 1, 2, 3, 5, 6, 8]  # 4 and 7 are attackers

    draws = [known_clients(benign, 3, draw="random", seed=42, server_round=r) for r in range(1, 9)]

    assert draws == [known_clients(benign, 3, draw="random", seed=42, server_round=r) for r in range(1, 9)]
    assert len({tuple(d) for d in draws}) > 1  # a new draw each round
    assert all(len(set(d)) == 3 and set(d) <= set(benign) for d in draws)
    assert draws != [known_clients(benign, 3, draw="random", seed=1, server_round=r) for r in range(1, 9)]
    assert known_clients(benign, 3, draw="first", seed=42, server_round=5) == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 0}, "k"),
        ({"k": 4}, "k"),
        ({"draw": "best"}, "draw"),
        ({"seed": -1}, "seed"),
        ({"benign": [1, 1, 2]}, "distinct"),
    ],
)
def test_known_clients_rejects_bad_parameters(kwargs, name):
    args = {"benign": [1, 2, 3], "k": 2, "draw": "random", "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        known_clients(args.pop("benign"), args.pop("k"), server_round=1, **args)
