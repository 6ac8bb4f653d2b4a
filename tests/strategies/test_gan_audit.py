"""PDGAN audit wrapper, in process: warm-up, dropping a poisoned model around FedAvg/FedMedian, records."""

import numpy as np
import pytest
import torch

from fedsec.config import RunConfig
from fedsec.errors import ConfigError
from fedsec.experiment import load_bundle, new_model
from fedsec.results import RunRecorder
from fedsec.training import get_weights, make_optimizer, train
from strategies import build_strategy
from strategies.gan_audit import AuditStrategy
from tests.flower_fakes import aggregate as aggregate_train
from tests.flower_fakes import configure, train_reply

BASE = {
    "dataset": "synthetic",
    "model": "lenet",
    "audit": "gan",
    "audit-start-round": 1,
    "audit-threshold": 0.5,
    "audit-size": 64,
    "auxiliary-size": 100,
    "gan-steps": 20,
    "gan-batch-size": 16,
    "gan-learning-rate": 0.002,
    "inversion-steps": 5,
    "num-clients": 5,
    "update-norm-bound": 0,  # the audit, not the guard, must catch the poisoned model here
}
POISON_CLASS = 7
HONEST_EXAMPLES = [10, 20, 30, 40]


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


@pytest.fixture(scope="module")
def global_weights(one_torch_thread_per_module) -> list[np.ndarray]:
    """A LeNet briefly trained on the synthetic data (the round's global model)."""
    config = RunConfig.from_run_config(BASE)
    bundle = load_bundle(config)
    model = new_model(config, bundle)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
    train(
        model,
        bundle.train.x,
        bundle.train.y,
        epochs=5,
        batch_size=32,
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(0),
    )
    return get_weights(model)


def honest_clients(weights: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Four honest models: the global model with tiny, differently seeded perturbations."""
    clients = []
    for seed in range(len(HONEST_EXAMPLES)):
        rng = np.random.default_rng(seed)
        clients.append([(w + rng.normal(0, 1e-3, w.shape)).astype(w.dtype) for w in weights])
    return clients


def poisoned_client(weights: list[np.ndarray]) -> list[np.ndarray]:
    """The global model whose final-layer bias pushes every input into POISON_CLASS."""
    poisoned = [w.copy() for w in weights]
    poisoned[-1][POISON_CLASS] += 100.0
    return poisoned


def round_results(weights):
    honest = honest_clients(weights)
    results = [
        train_reply(i, w, num_examples=n)
        for i, (w, n) in enumerate(zip(honest, HONEST_EXAMPLES, strict=True))
    ]
    results.append(train_reply(len(honest), poisoned_client(weights), num_examples=50))
    return honest, results


def make(weights, recorder=None, **overrides):
    config = RunConfig.from_run_config({**BASE, **overrides})
    guarded = build_strategy(config, initial_arrays=weights, recorder=recorder)
    configure(guarded, 1, weights, nodes=5)
    return guarded


def aggregate(guarded, server_round, results):
    merged = aggregate_train(guarded, server_round, results)
    assert merged is not None
    return merged


def weighted_mean(models, counts):
    total = sum(counts)
    return [sum(m[k] * n for m, n in zip(models, counts, strict=True)) / total for k in range(len(models[0]))]


def test_before_d_iter_everyone_is_kept_even_an_obviously_bad_client(global_weights):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(global_weights, recorder, **{"audit-start-round": 3, "gan-steps": 2})
    honest, results = round_results(global_weights)
    merged = aggregate(guarded, 1, results)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert record["audit"] == "warm-up"
    assert record["kept"]["audit"] == ["0", "1", "2", "3", "4"] and not record.get("dropped")
    assert "audit_accuracy" not in record
    assert np.isfinite(record["gan"]["d_loss"]) and np.isfinite(record["gan"]["g_loss"])
    # The poisoned bias is averaged in: the aggregate is far from the honest mean.
    honest_mean = weighted_mean(honest, HONEST_EXAMPLES)
    assert merged[-1][POISON_CLASS] - honest_mean[-1][POISON_CLASS] > 10


def test_audit_consensus_is_read_from_the_config_and_must_leave_the_attacker_a_minority(global_weights):
    """audit-consensus 1.0 scores only samples all five models agree on; the poisoned model says 7 to
    everything, so those are the sevens, where it agrees: a bar above the honest share (0.8) lets it in."""
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(global_weights, recorder, **{"audit-consensus": 1.0})
    _, results = round_results(global_weights)
    aggregate(guarded, 1, results)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert 0 < record["audit_scored"] < 64
    assert record["audit_accuracy"]["4"] == 1.0 and "4" in record["kept"]["audit"]

    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(global_weights, recorder, **{"audit-consensus": 0.8})
    aggregate(guarded, 1, results)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert list(record["dropped"]) == ["4"]


def test_audit_per_class_and_worst_class_score_are_read_from_the_config(global_weights):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(global_weights, recorder, **{"audit-per-class": 3, "audit-score": "worst-class"})
    _, results = round_results(global_weights)
    aggregate(guarded, 1, results)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    capped = sum(min(3, n) for n in record["audit_label_counts"].values())
    assert record["audit_scored"] == capped < 64
    assert list(record["dropped"]) == ["4"] and "worst-class agreement" in record["dropped"]["4"]


@pytest.mark.parametrize("strategy", ["fedavg", "fedmedian"])
def test_gan_audit_drops_the_poisoned_model_and_inner_aggregates_the_honest_ones(global_weights, strategy):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(global_weights, recorder, strategy=strategy)
    honest, results = round_results(global_weights)
    merged = aggregate(guarded, 1, results)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert list(record["dropped"]) == ["4"] and "audit accuracy" in record["dropped"]["4"]
    assert record["kept"]["audit"] == ["0", "1", "2", "3"]
    accuracy = record["audit_accuracy"]
    assert accuracy["4"] < 0.5 and min(accuracy[str(i)] for i in range(4)) >= 0.9
    assert record["audit_scored"] == 64  # audit-consensus 0: every sample is scored
    counts = record["audit_label_counts"]
    assert sum(counts.values()) == 64 and all(n > 0 for n in counts.values())
    if strategy == "fedavg":
        expected = weighted_mean(honest, HONEST_EXAMPLES)
    else:
        expected = [np.median(np.stack([m[k] for m in honest]), axis=0) for k in range(len(honest[0]))]
    for got, want in zip(merged, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_inversion_audit_drops_the_same_poisoned_model(global_weights):
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(global_weights, recorder, audit="inversion", **{"auxiliary-size": 0})
    audit_strategy = guarded.inner
    assert isinstance(audit_strategy, AuditStrategy) and audit_strategy.generator is None
    honest, results = round_results(global_weights)
    merged = aggregate(guarded, 1, results)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert record["audit"] == "inversion" and "gan" not in record
    assert list(record["dropped"]) == ["4"] and record["audit_accuracy"]["4"] < 0.5
    for got, want in zip(merged, weighted_mean(honest, HONEST_EXAMPLES), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_png_grid_is_written_for_every_audited_round_only(global_weights, tmp_path):
    guarded = make(global_weights, **{"audit-start-round": 2, "gan-steps": 2, "out-dir": str(tmp_path)})
    _, results = round_results(global_weights)
    for server_round in (1, 2, 3):
        aggregate(guarded, server_round, results)
    written = sorted(p.name for p in (tmp_path / "audit").iterdir())
    assert written == ["round-002.png", "round-003.png"]
    assert (tmp_path / "audit" / "round-002.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_auxiliary_set_keeps_only_the_auxiliary_classes(global_weights):
    audit_strategy = make(global_weights, **{"auxiliary-classes": "0,4"}).inner
    assert isinstance(audit_strategy, AuditStrategy) and audit_strategy.auxiliary is not None
    assert len(audit_strategy.auxiliary) > 0
    assert set(audit_strategy.auxiliary.y.tolist()) == {0, 4}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"auxiliary-classes": "0,12"}, "auxiliary-classes"),
        ({"auxiliary-classes": "zero"}, "auxiliary-classes"),
        ({"auxiliary-classes": "1,1"}, "auxiliary-classes"),
        ({"auxiliary-size": 0}, "auxiliary-size"),
    ],
)
def test_bad_auxiliary_configuration_raises_naming_the_key(global_weights, overrides, key):
    with pytest.raises(ConfigError, match=key):
        make(global_weights, **overrides)


def test_constructor_validates_parameters(global_weights):
    config = RunConfig.from_run_config(BASE)
    model = new_model(config, load_bundle(config))
    common = {
        "inner": make(global_weights).inner.inner,
        "generator": "inversion",
        "start_round": 1,
        "theta": 0.5,
        "audit_size": 8,
        "model": model,
        "model_name": "lenet",
        "input_shape": (1, 28, 28),
        "num_classes": 10,
        "auxiliary": None,
    }
    AuditStrategy(**common)
    for name, value in [
        ("theta", 1.5),
        ("start_round", 0),
        ("generator", "vae"),
        ("audit_size", 0),
        ("consensus", -0.5),
        ("per_class", -1),
        ("score", "loss"),
        ("d_iter", -1),
        ("d_iter", 600),  # GAN iterations need generator="gan"
        ("gan_generator", "vae"),
        ("discriminator_init", "mean"),
    ]:
        with pytest.raises(ValueError, match=name):
            AuditStrategy(**{**common, name: value})
    with pytest.raises(ValueError, match="auxiliary"):
        AuditStrategy(**{**common, "generator": "gan"})


def test_the_gan_survives_a_checkpoint(global_weights):
    from strategies.wrapper import restore_strategy_state, strategy_state

    trained = make(global_weights, **{"audit-start-round": 3, "gan-steps": 2})
    aggregate(trained, 1, round_results(global_weights)[1])
    state = strategy_state(trained)
    fresh = make(global_weights, **{"audit-start-round": 3, "gan-steps": 2})
    before = [a.copy() for a in state["inner"]["own"]["generator"]]
    restore_strategy_state(fresh, state)
    restored = strategy_state(fresh)["inner"]["own"]
    assert set(restored) == {"generator", "discriminator"}
    for got, want in zip(restored["generator"], before, strict=True):
        np.testing.assert_array_equal(got, want)
    untouched = make(global_weights, **{"audit-start-round": 3, "gan-steps": 2})
    assert "discriminator" not in strategy_state(untouched)["inner"]["own"]  # made in the first round


def hand_made(weights: list[np.ndarray]) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[np.ndarray]]:
    """M (array k all 0.01·(k + 1)), three clients M + c (c = 0.3, -0.1, 0.4), and M + mean(u) = M + 0.2."""
    previous = [np.full(w.shape, 0.01 * (k + 1), dtype=w.dtype) for k, w in enumerate(weights)]
    clients = [[(m + c).astype(m.dtype) for m in previous] for c in (0.3, -0.1, 0.4)]
    expected = [(m + 0.2).astype(m.dtype) for m in previous]
    return previous, clients, expected


def assert_discriminator_starts_from(disc: torch.nn.Module, expected: list[np.ndarray]) -> None:
    """Every shared tensor, and the first K rows of the final layer, equal ``expected`` (state-dict order)."""
    tensors = list(disc.state_dict().values())
    assert len(tensors) == len(expected)
    for got, want in zip(tensors, expected, strict=True):
        got = got.detach().cpu().numpy()
        if got.shape != want.shape:  # the final layer: K real rows + the fake row
            assert got.shape[0] == want.shape[0] + 1
            got = got[: want.shape[0]]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("init", "target"), [("aggregate", "aggregate"), ("previous", "previous")])
def test_discriminator_starts_from_the_configured_model(global_weights, init, target):
    """gan-discriminator-init: aggregate starts D at M(t-1) + mean(u_t) (Alg. 1 l. 6); previous at M(t-1)."""
    previous, clients, aggregate_model = hand_made(global_weights)
    audit_strategy = make(previous, **{"gan-discriminator-init": init}).inner
    assert isinstance(audit_strategy, AuditStrategy)
    disc = audit_strategy.start_discriminator(clients)
    assert_discriminator_starts_from(disc, aggregate_model if target == "aggregate" else previous)
    # the next round refreshes the same discriminator (its fake row carries on) from the new round's models
    fake_row = list(disc.state_dict().values())[-1][-1].clone()
    later = [[(a + 1.0).astype(a.dtype) for a in c] for c in clients]
    audit_strategy.start_discriminator(later)
    if target == "aggregate":
        assert_discriminator_starts_from(disc, [(a + 1.0).astype(a.dtype) for a in aggregate_model])
    else:
        assert_discriminator_starts_from(disc, previous)
    assert torch.equal(list(disc.state_dict().values())[-1][-1], fake_row)


def test_gan_d_iter_sets_the_first_audited_round_in_gan_iterations(global_weights):
    """gan-d-iter 5 at gan-steps 2: rounds 1-2 (2 and 4 iterations) are warm-up, round 3 (6) is audited."""
    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(global_weights, recorder, **{"gan-d-iter": 5, "gan-steps": 2, "audit-start-round": 9})
    assert guarded.inner.start_round == 3
    _, results = round_results(global_weights)
    audits = []
    for server_round in (1, 2, 3):
        aggregate(guarded, server_round, results)
        audits.append(recorder.end_round(server_round, accuracy=0.0, loss=0.0)["audit"])
    assert audits == ["warm-up", "warm-up", "gan"]
    with pytest.raises(ConfigError, match="gan-d-iter"):
        make(global_weights, audit="inversion", **{"gan-d-iter": 5, "auxiliary-size": 0})


def test_the_paper_generator_audits_at_the_dataset_size_and_drops_the_poisoned_model(global_weights):
    from fedsec.models.gan import PaperGenerator

    recorder = RunRecorder(out_dir=None, scenario="t", config={})
    guarded = make(
        global_weights, recorder, **{"gan-generator": "paper", "gan-discriminator-init": "aggregate"}
    )
    audit_strategy = guarded.inner
    assert isinstance(audit_strategy, AuditStrategy) and isinstance(audit_strategy.generator, PaperGenerator)
    assert audit_strategy.audit_data(1).shape == (64, *audit_strategy.input_shape)
    _, results = round_results(global_weights)
    aggregate(guarded, 1, results)
    record = recorder.end_round(1, accuracy=0.0, loss=0.0)
    assert list(record["dropped"]) == ["4"] and record["audit_accuracy"]["4"] < 0.5
