"""Aggregation math: weighted mean, FDA³ gradient mean and the Adam step (checked against torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsec.aggregation import (
    AdamState,
    adam_init,
    adam_step,
    gradient_mean,
    mean_update_model,
    weighted_mean,
)

# ----------------------------------------------------------------------------- weighted_mean


def test_weighted_mean_of_two_updates_by_hand():
    updates = [
        [np.array([1.0, 2.0], np.float32), np.array([[0.0, 4.0]], np.float32)],
        [np.array([5.0, 6.0], np.float32), np.array([[8.0, 0.0]], np.float32)],
    ]

    result = weighted_mean(updates, [1, 3])

    # (1·1 + 3·5)/4 = 4, (1·2 + 3·6)/4 = 5; (1·0 + 3·8)/4 = 6, (1·4 + 3·0)/4 = 1
    np.testing.assert_array_equal(result[0], np.array([4.0, 5.0], np.float32))
    np.testing.assert_array_equal(result[1], np.array([[6.0, 1.0]], np.float32))
    assert [r.dtype for r in result] == [np.float32, np.float32]


def test_weighted_mean_ignores_zero_weight_and_keeps_integer_dtype():
    updates = [
        [np.array([2.0, -1.0]), np.array([2], np.int64)],
        [np.array([8.0, 5.0]), np.array([5], np.int64)],
        [np.array([1e6, 1e6]), np.array([100], np.int64)],
    ]

    result = weighted_mean(updates, [1.0, 2.0, 0.0])

    # (2 + 16)/3 = 6, (-1 + 10)/3 = 3; integer (2 + 10)/3 = 4
    np.testing.assert_array_equal(result[0], np.array([6.0, 3.0]))
    np.testing.assert_array_equal(result[1], np.array([4], np.int64))
    assert result[0].dtype == np.float64 and result[1].dtype == np.int64


def test_weighted_mean_dtype_follows_first_update():
    updates: list[list[np.ndarray]] = [[np.array([1.0], np.float32)], [np.array([3.0], np.float64)]]

    result = weighted_mean(updates, [1, 1])

    assert result[0].dtype == np.float32
    np.testing.assert_array_equal(result[0], np.array([2.0], np.float32))


def test_weighted_mean_does_not_mutate_inputs():
    updates = [[np.array([1.0, 2.0])], [np.array([3.0, 4.0])]]
    before = [[a.copy() for a in u] for u in updates]

    result = weighted_mean(updates, [1, 1])
    result[0][:] = -1

    for update, saved in zip(updates, before, strict=True):
        np.testing.assert_array_equal(update[0], saved[0])


@pytest.mark.parametrize(
    ("updates", "weights", "message"),
    [
        ([], [], "updates must hold at least one update"),
        ([[np.zeros(2)], [np.zeros(2)]], [1.0], "weights must hold one weight per update"),
        ([[np.zeros(2)], [np.zeros(2)]], [1.0, -1.0], "weights must be finite and >= 0"),
        ([[np.zeros(2)], [np.zeros(2)]], [1.0, np.nan], "weights must be finite and >= 0"),
        ([[np.zeros(2)], [np.zeros(2)]], [0.0, 0.0], "weights must sum to a positive number"),
        ([[np.zeros(2)], [np.zeros(3)]], [1, 1], r"updates\[1\] array 0 has shape \(3,\), expected \(2,\)"),
        ([[np.zeros(2)], [np.zeros(2), np.zeros(1)]], [1, 1], r"updates\[1\] has 2 arrays, expected 1"),
    ],
)
def test_weighted_mean_errors_name_the_parameter(updates, weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_mean(updates, weights)


# ----------------------------------------------------------------------------- gradient_mean


def test_gradient_mean_is_the_unweighted_average_by_hand():
    gradients = [
        [np.array([1.0, -2.0], np.float32), np.array(3.0, np.float32)],
        [np.array([3.0, 4.0], np.float32), np.array(0.0, np.float32)],
        [np.array([-1.0, 1.0], np.float32), np.array(-6.0, np.float32)],
    ]

    result = gradient_mean(gradients)

    # (1 + 3 − 1)/3 = 1, (−2 + 4 + 1)/3 = 1; (3 + 0 − 6)/3 = −1
    np.testing.assert_array_equal(result[0], np.array([1.0, 1.0], np.float32))
    np.testing.assert_array_equal(result[1], np.array(-1.0, np.float32))
    assert result[0].dtype == np.float32


@pytest.mark.parametrize(
    ("gradients", "message"),
    [
        ([], "gradients must hold at least one update"),
        ([[np.zeros(2)], [np.zeros((2, 1))]], r"gradients\[1\] array 0 has shape"),
    ],
)
def test_gradient_mean_errors_name_the_parameter(gradients, message):
    with pytest.raises(ValueError, match=message):
        gradient_mean(gradients)


# ----------------------------------------------------------------------------- Adam

SHAPES = [(3,), (4, 5), (2, 3, 3, 3), (), (1,)]


def _torch_adam_trajectory(params0, grad_seq, **kwargs):
    """Run torch.optim.Adam (single-tensor path) and return params and moments after each step."""
    tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    opt = torch.optim.Adam(tensors, foreach=False, **kwargs)
    out = []
    for grads in grad_seq:
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        moments = [
            (opt.state[t]["exp_avg"].numpy().copy(), opt.state[t]["exp_avg_sq"].numpy().copy())
            for t in tensors
        ]
        out.append(([t.detach().numpy().copy() for t in tensors], moments))
    return out


@pytest.mark.parametrize(
    "hyper",
    [
        {"lr": 1e-3},
        {"lr": 0.05, "weight_decay": 0.01},
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
        {"lr": 0.3, "betas": (0.5, 0.9), "eps": 1e-4, "weight_decay": 0.1},
    ],
)
def test_adam_step_matches_torch_adam_over_25_steps(hyper):
    rng = np.random.default_rng(1234)
    params0 = [np.asarray(rng.normal(size=s), np.float32) for s in SHAPES]
    # gradients of varying scale, including exact zeros, to exercise eps and bias correction
    grad_seq = []
    for step in range(25):
        grads = [np.asarray(rng.normal(size=s) * 10.0 ** rng.integers(-3, 2), np.float32) for s in SHAPES]
        if step % 7 == 3:
            grads[1][0] = 0.0
        grad_seq.append(grads)
    expected = _torch_adam_trajectory(params0, grad_seq, **hyper)

    params, state = list(params0), adam_init(params0)
    for grads, (torch_params, torch_moments) in zip(grad_seq, expected, strict=True):
        params, state = adam_step(params, grads, state, **hyper)
        for ours, theirs in zip(params, torch_params, strict=True):
            assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
            assert np.max(np.abs(ours - theirs), initial=0.0) <= 1e-6
        # moments can be large (v ~ g²); torch fuses some float32 ops (FMA, MKL sqrt), so compare
        # them to a few ulps relative rather than absolutely
        for m, v, (tm, tv) in zip(state.exp_avg, state.exp_avg_sq, torch_moments, strict=True):
            np.testing.assert_allclose(m, tm, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(v, tv, rtol=1e-5, atol=1e-7)
    assert state.step == 25


def test_first_adam_step_by_hand():
    # t = 1: m = (1−β1)·g, v = (1−β2)·g², so
    # p1 = p0 − lr/(1−β1) · (1−β1)·g / (sqrt((1−β2)·g²)/sqrt(1−β2) + eps) = p0 − lr·g/(|g| + eps)
    p0 = np.array([1.0, -2.0, 0.5], np.float32)
    g = np.array([0.5, -4.0, 0.0], np.float32)
    lr, eps = 0.1, 1e-8

    (p1,), state = adam_step([p0], [g], adam_init([p0]), lr=lr, eps=eps)

    expected = np.array([1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 4.0 / (4.0 + 1e-8), 0.5])
    np.testing.assert_allclose(p1, expected, rtol=0, atol=1e-7)  # ≈ [0.9, -1.9, 0.5]
    np.testing.assert_allclose(state.exp_avg[0], [0.05, -0.4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(state.exp_avg_sq[0], [0.00025, 0.016, 0.0], rtol=1e-5)
    assert state.step == 1


def test_adam_weight_decay_is_added_to_the_gradient():
    # t = 1 with g' = g + wd·p: p1 = p0 − lr·g'/(|g'| + eps); g = 0, p0 = 2, wd = 0.5 → g' = 1 → p1 = 2 − lr
    p0 = np.array([2.0], np.float32)

    (p1,), _ = adam_step([p0], [np.zeros(1, np.float32)], adam_init([p0]), lr=0.25, weight_decay=0.5)

    np.testing.assert_allclose(p1, [1.75], atol=1e-6)


def test_adam_leaves_integer_arrays_unchanged_and_requires_zero_grads():
    params: list[np.ndarray] = [np.array([1.0, 1.0], np.float32), np.array(7, np.int64)]
    state = adam_init(params)

    new, new_state = adam_step(params, [np.ones(2, np.float32), np.array(0, np.int64)], state, lr=0.1)

    assert new[1].dtype == np.int64 and int(new[1]) == 7
    assert new[1] is not params[1]
    np.testing.assert_allclose(new[0], [0.9, 0.9], atol=1e-6)
    assert int(new_state.exp_avg[1]) == 0 and int(new_state.exp_avg_sq[1]) == 0
    with pytest.raises(ValueError, match=r"grads\[1\] must be all zeros"):
        adam_step(params, [np.ones(2, np.float32), np.array(3, np.int64)], state, lr=0.1)


def test_adam_step_does_not_mutate_params_grads_or_state():
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    grads = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    _, state = adam_step(params, grads, adam_init(params), lr=0.1, weight_decay=0.1)
    saved = (
        [p.copy() for p in params],
        [g.copy() for g in grads],
        [m.copy() for m in state.exp_avg],
        [v.copy() for v in state.exp_avg_sq],
    )

    new_params, new_state = adam_step(params, grads, state, lr=0.1, weight_decay=0.1)

    for now, before in zip((params, grads, state.exp_avg, state.exp_avg_sq), saved, strict=True):
        for a, b in zip(now, before, strict=True):
            np.testing.assert_array_equal(a, b)
    assert state.step == 1 and new_state.step == 2
    assert all(n is not p for n, p in zip(new_params, params, strict=True))
    assert all(n is not o for n, o in zip(new_state.exp_avg, state.exp_avg, strict=True))


def test_adam_init_is_zero_moments_at_step_zero():
    params: list[np.ndarray] = [np.ones((2, 2), np.float32), np.ones(3, np.float64)]

    state = adam_init(params)

    assert state.step == 0
    for p, m, v in zip(params, state.exp_avg, state.exp_avg_sq, strict=True):
        assert m.shape == v.shape == p.shape and m.dtype == v.dtype == p.dtype
        assert not m.any() and not v.any()


P = [np.zeros(2, np.float32), np.zeros((2, 2), np.float32)]
G = [np.ones(2, np.float32), np.ones((2, 2), np.float32)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: adam_step(P, G, adam_init(P), lr=0.0), "lr must be"),
        (lambda: adam_step(P, G, adam_init(P), lr=-1.0), "lr must be"),
        (lambda: adam_step(P, G, adam_init(P), lr=0.1, betas=(1.0, 0.9)), r"betas\[0\] must be in \[0, 1\)"),
        (lambda: adam_step(P, G, adam_init(P), lr=0.1, betas=(0.9, -0.1)), r"betas\[1\] must be in \[0, 1\)"),
        (lambda: adam_step(P, G, adam_init(P), lr=0.1, eps=0.0), "eps must be"),
        (lambda: adam_step(P, G, adam_init(P), lr=0.1, weight_decay=-0.1), "weight_decay must be"),
        (lambda: adam_step(P, G[:1], adam_init(P), lr=0.1), "grads must hold one array per parameter"),
        (lambda: adam_step(P, [G[0], np.ones(4, np.float32)], adam_init(P), lr=0.1), r"grads\[1\] has shape"),
        (lambda: adam_step(P, G, adam_init(P[:1]), lr=0.1), "state holds moments for 1 arrays"),
        (lambda: adam_step(P, G, adam_init([P[0], np.zeros(4)]), lr=0.1), "state moments for array 1"),
        (
            lambda: adam_step(P, [G[0], np.full((2, 2), np.nan, np.float32)], adam_init(P), lr=0.1),
            r"grads\[1\] has non-finite values",
        ),
        (
            lambda: adam_step(P, [np.array([1.0, np.inf]), *G[1:]], adam_init(P), lr=0.1),
            r"grads\[0\] has non-finite",
        ),
        (lambda: AdamState(step=-1, exp_avg=(), exp_avg_sq=()), "step must be an integer >= 0"),
        (lambda: AdamState(step=0, exp_avg=(np.zeros(1),), exp_avg_sq=()), "same length"),
    ],
)
def test_adam_errors_name_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mean_update_model_is_the_previous_model_plus_the_mean_update_by_hand():
    """PDGAN Alg. 1 line 6: M + mean(u_i), u_i = w_i - M; integer arrays are rounded and keep their dtype."""
    previous = [np.array([1.0, 2.0], dtype=np.float32), np.array([10], dtype=np.int64)]
    models = [
        [np.array([1.5, 2.0], dtype=np.float32), np.array([11], dtype=np.int64)],  # u = (0.5, 0), 1
        [np.array([0.0, 5.0], dtype=np.float32), np.array([14], dtype=np.int64)],  # u = (-1, 3), 4
        [np.array([2.5, 2.0], dtype=np.float32), np.array([10], dtype=np.int64)],  # u = (1.5, 0), 0
    ]
    before = [[a.copy() for a in m] for m in models]
    result = mean_update_model(previous, models)
    np.testing.assert_allclose(result[0], [1.0 + 1.0 / 3.0, 3.0], rtol=1e-6)
    assert result[0].dtype == np.float32
    assert result[1].dtype == np.int64 and result[1].tolist() == [12]  # 10 + 5/3 rounded
    for got, want in zip(models, before, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    with pytest.raises(ValueError, match="models"):
        mean_update_model(previous, [])
    with pytest.raises(ValueError, match="previous"):
        mean_update_model([np.zeros(3), np.zeros(1)], models)
