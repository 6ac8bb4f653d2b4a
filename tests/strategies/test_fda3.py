"""FDA³ strategy, in process: it averages gradients, steps Adam, averages buffer changes, pushes schemes."""

import numpy as np
import pytest
import torch

from clients.adversarial import SCHEMES_KEY
from fedsec.attacks.monitor import AttackMonitor
from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from strategies import build_strategy
from tests.flower_fakes import aggregate, configure, train_reply

WEIGHTS = [np.array([[1.0, -2.0], [0.5, 0.0]], np.float32), np.array([0.1, 0.2], np.float32)]


def make(**overrides):
    config = RunConfig.from_run_config(
        {
            "strategy": "fda3",
            "num-clients": 4,
            "fda3-assign": "fgsm:0-1,bim:2-3",
            "fda3-new-attacks": "pgd@3:1",
            "server-learning-rate": 0.01,
            **overrides,
        }
    )
    return build_strategy(config, initial_arrays=WEIGHTS)


def test_aggregate_averages_gradients_and_matches_torch_adam_over_rounds():
    strategy = make()
    parameters = WEIGHTS
    reference = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in WEIGHTS]
    adam = torch.optim.Adam(reference, lr=0.01, betas=(0.9, 0.999), foreach=False)
    rng = np.random.default_rng(0)
    for server_round in (1, 2, 3):
        configure(strategy, server_round, parameters, nodes=4)
        grads = [[rng.normal(size=w.shape).astype(np.float32) for w in WEIGHTS] for _ in range(4)]
        replies = [train_reply(i, g, num_examples=100 * (i + 1)) for i, g in enumerate(grads)]
        parameters = aggregate(strategy, server_round, replies)
        adam.zero_grad()
        for index, p in enumerate(reference):
            p.grad = torch.from_numpy(np.mean([g[index] for g in grads], axis=0))  # unweighted 1/N
        adam.step()
        for got, want in zip(parameters, reference, strict=True):
            np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-6)


def test_configure_train_pushes_each_devices_schemes_and_the_new_attack_from_its_round():
    strategy = make()
    for server_round, expected in ((2, "0:fgsm;1:fgsm;2:bim;3:bim"), (3, "0:fgsm;1:fgsm+pgd;2:bim;3:bim")):
        messages = configure(strategy, server_round, WEIGHTS, nodes=4)
        assert len(messages) == 4
        assert {msg.content["config"][SCHEMES_KEY] for msg in messages} == {expected}
        assert all(msg.content["config"]["fda3-initial-digest"] for msg in messages)
        assert all(msg.content["config"]["server-round"] == server_round for msg in messages)


def test_a_nan_gradient_is_rejected_before_adam_sees_it():
    strategy = make()
    configure(strategy, 1, WEIGHTS, nodes=4)
    good = [np.ones_like(w) for w in WEIGHTS]
    bad = [np.full_like(w, np.nan) for w in WEIGHTS]
    after = aggregate(strategy, 1, [train_reply(0, good), train_reply(1, bad)])
    assert all(np.isfinite(a).all() for a in after)
    np.testing.assert_allclose(after[0], WEIGHTS[0] - 0.01, atol=1e-6)  # Adam's first step: lr·sign(g)


def test_bad_assignments_fail_at_build_time_naming_the_key():
    with pytest.raises(ConfigError, match=r"'fda3-assign'.*unknown attack 'fgsmm'"):
        make(**{"fda3-assign": "fgsmm:0-3"})
    with pytest.raises(ConfigError, match="'fda3-assign'"):
        make(**{"fda3-assign": "fgsm:0-1"})  # partitions 2 and 3 get no scheme


def test_buffers_move_by_the_devices_mean_change_while_parameters_take_the_adam_step():
    from strategies.fda3 import FDA3

    weights = [*WEIGHTS, np.array([0.0, 1.0], np.float32), np.array(4, np.int64)]
    monitor = AttackMonitor.from_config(known=["fgsm"], assign="fgsm:0-1", num_partitions=2)
    strategy = FDA3(monitor=monitor, initial_arrays=weights, server_learning_rate=0.01, buffers=(2, 3))
    configure(strategy, 1, weights, nodes=2)
    replies = [
        [np.ones_like(WEIGHTS[0]), np.ones_like(WEIGHTS[1]), np.array([0.2, -0.4], np.float32), np.array(2)],
        [np.ones_like(WEIGHTS[0]), -np.ones_like(WEIGHTS[1]), np.array([0.4, 0.0], np.float32), np.array(2)],
    ]
    after = aggregate(strategy, 1, [train_reply(i, r) for i, r in enumerate(replies)])
    np.testing.assert_allclose(after[0], WEIGHTS[0] - 0.01, atol=1e-6)  # Adam's first step: lr·sign(g)
    np.testing.assert_allclose(after[1], WEIGHTS[1], atol=1e-6)  # gradients cancel
    np.testing.assert_allclose(after[2], [0.3, 0.8], atol=1e-6)  # buffer + mean change, no Adam
    assert int(after[3]) == 6
    with pytest.raises(ValueError, match="buffers"):
        FDA3(monitor=monitor, initial_arrays=weights, server_learning_rate=0.01, buffers=(4,))


def write_cifar_batches(root, *, per_batch: int, seed: int = 0) -> None:
    """Tiny CIFAR-10 python batches in the real on-disk layout (``cifar-10-batches-py/``)."""
    import pickle

    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = (np.arange(per_batch) % 10).tolist()
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        with (base / name).open("wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, fh)
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer")]
    names += [n.encode() for n in ("dog", "frog", "horse", "ship", "truck")]
    with (base / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, fh)


def test_fda3_cifar10_runs_on_real_batches_and_moves_the_servers_batchnorm_statistics(tmp_path):
    from clients import build_client
    from clients.adversarial import INITIAL_DIGEST_KEY, weights_digest
    from fedsec.experiment import load_bundle, new_model
    from fedsec.training import get_weights
    from simulations.scenarios import load_scenario

    write_cifar_batches(tmp_path / "data", per_batch=12)
    config = load_scenario("fda3-cifar10").config(
        {
            "data-root": str(tmp_path / "data"),
            "cache-dir": str(tmp_path / "cache"),
            "num-clients": 2,
            "roles": "fda3-device:0-1",
            "fda3-assign": "even:fgsm",
            "pretrain-size": 20,
            "validation-size": 0,
            "fda3-buffer-size": 6,
            "fda3-batch-size": 6,
        }
    )
    assert (config.dataset, config.model) == ("cifar10", "resnet18")
    bundle = load_bundle(config)
    assert (len(bundle.train), len(bundle.test), bundle.input_shape) == (60, 12, (3, 32, 32))
    initial = get_weights(new_model(config, bundle))
    names = list(new_model(config, bundle).state_dict())
    strategy = build_strategy(config, initial_arrays=initial)
    buffers = strategy.inner.buffers
    assert [names[i] for i in buffers][:3] == [
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    messages = configure(strategy, 1, initial, nodes=2)
    fit_config = dict(messages[0].content["config"])
    fit_config[INITIAL_DIGEST_KEY] = weights_digest(initial)
    replies = []
    for pid in range(2):
        device = build_client(config, partition_id=pid, num_partitions=2, role="fda3-device")
        arrays, _, _ = device.fit(initial, fit_config)
        replies.append(arrays)
    after = aggregate(strategy, 1, [train_reply(i, r) for i, r in enumerate(replies)])
    mean = names.index("bn1.running_mean")
    assert np.abs(after[mean] - initial[mean]).max() > 1e-4  # statistics moved on the server ...
    np.testing.assert_allclose(
        after[mean], initial[mean] + (replies[0][mean] + replies[1][mean]) / 2, atol=1e-6
    )
    counter = names.index("bn1.num_batches_tracked")
    assert int(after[counter]) == int(initial[counter]) + 2  # two forward passes (natural, adversarial)
    weight = names.index("conv1.weight")
    np.testing.assert_allclose(np.abs(after[weight] - initial[weight]).max(), 0.001, rtol=1e-3)  # Adam: lr
