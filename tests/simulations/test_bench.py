"""``fedsec bench``: arithmetic and bench.json layout on stubbed timings; its FGSM floor (no timing)."""

import io
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from fedsec.attacks.evasion import generate
from fedsec.bench import (
    SECTIONS,
    Budget,
    bench_document,
    measure,
    measure_samples,
    per_100,
    plain_fgsm,
    plain_pgd,
    predict_seconds,
    ratio,
    steady_round_seconds,
)
from simulations import bench
from simulations.cli import main


class StubTimer:
    """Returns the given readings one after the other."""

    def __init__(self, readings):
        self.readings = list(readings)

    def __call__(self):
        return self.readings.pop(0)


def test_measure_returns_the_median_of_the_timed_calls_after_the_warmup():
    calls = []
    # Three timed calls lasting 1, 3 and 2 "seconds"; the warm-up call reads no clock.
    timer = StubTimer([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])
    assert measure(lambda: calls.append(1), repeat=3, warmup=1, timer=timer) == 2.0
    assert len(calls) == 4 and timer.readings == []
    assert measure_samples(lambda: None, repeat=2, timer=StubTimer([5.0, 5.5, 6.0, 8.0])) == [0.5, 2.0]
    with pytest.raises(ValueError, match="repeat must be an int >= 1"):
        measure(lambda: None, repeat=0)


def test_ratio_and_scaling_arithmetic():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None and ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None and ratio(1.0, math.nan) is None
    assert per_100(0.5, 5) == 10.0  # SimBA on 5 images, reported per 100
    assert per_100(13.0, 100) == 13.0
    with pytest.raises(ValueError, match="images must be >= 1"):
        per_100(1.0, 0)
    assert predict_seconds(0.2, 10, 100, exponent=2) == pytest.approx(20.0)  # Krum: O(n²)
    assert predict_seconds(0.2, 10, 100, exponent=1) == pytest.approx(2.0)


def test_steady_round_seconds_skips_round_zero_and_reports_round_one_apart():
    records = [
        {"round": 0, "seconds": 5.0},
        {"round": 1, "seconds": 9.0},
        {"round": 2, "seconds": 2.0},
        {"round": 3, "seconds": 4.0},
        {"round": 4, "seconds": 3.0},
    ]
    assert steady_round_seconds(records) == (9.0, 3.0)
    assert steady_round_seconds(records[:2]) == (9.0, None)
    assert steady_round_seconds([]) == (None, None)


def test_budget_allows_what_ends_before_the_deadline():
    budget = Budget(10.0, timer=StubTimer([100.0, 104.0, 104.0, 112.0]))
    assert budget.allows(6.0)  # at 104: 6 s left
    assert not budget.allows(6.1)
    assert budget.left() == -2.0


def _row(**extra):
    return {"model": "cnn", "clients": 100, "ms": 12.5, "ratio": 1.25, "status": "ok", **extra}


def test_bench_document_layout_keys_and_types():
    document = bench_document(
        date="2026-01-01 00:00 UTC",
        machine={"cores": 2, "gpu": False, "python": "3.11.9", "torch": "2.14.1", "flwr": "1.41.0"},
        quick=True,
        sections={"aggregation": [_row(predicted_ms=math.inf)], "simulation": []},
        notes=["a note"],
        wall_seconds=123.456,
    )
    assert list(document) == ["date", "machine", "quick", "sections", "notes", "wall_seconds"]
    assert list(document["sections"]) == list(SECTIONS)
    assert document["sections"]["attacks"] == []  # sections that did not run are present and empty
    assert document["sections"]["aggregation"] == [_row(predicted_ms=None)]  # non-finite → null
    assert document["quick"] is True and document["wall_seconds"] == 123.5
    assert json.loads(json.dumps(document)) == document
    with pytest.raises(ValueError, match="unknown bench sections"):
        bench_document(date="d", machine={}, quick=False, sections={"speed": []})
    with pytest.raises(ValueError, match="row 0 key 'ms': expected a scalar, got list"):
        bench_document(date="d", machine={}, quick=False, sections={"memory": [{"ms": [1]}]})


def test_aggregation_rows_ratio_and_share_of_a_round():
    reference = bench._agg_row("cnn", 10, 100, "flower-fedavg", ms=200.0, reference_ms=200.0, repeats=3)
    krum = bench._agg_row("cnn", 10, 100, "krum", ms=700.0, reference_ms=200.0, repeats=3)
    skipped = bench._agg_row("cnn", 10, 200, "krum", predicted_ms=2800.0, status="skipped (budget)")
    assert reference["ratio"] == 1.0 and krum["ratio"] == 3.5 and krum["strategy"] == "krum+guard"
    assert skipped["ms"] is None and skipped["ratio"] is None and skipped["predicted_ms"] == 2800.0
    assert set(reference) == set(skipped)  # every row of a section has the same keys
    ctx = bench.Context(
        plan=bench.BenchPlan.for_mode(quick=True),
        out=None,  # type: ignore[arg-type]
        console=Console(file=io.StringIO()),
        budget=Budget(10.0),
    )
    ctx.round_seconds["cnn"] = 9.8  # a steady simulation round of cnn
    bench.fill_round_shares([reference, krum, skipped], ctx)
    assert krum["added_pct_of_round"] == pytest.approx(100 * 500 / (9800 + 200))  # 5.0%
    assert reference["added_pct_of_round"] == 0.0 and skipped["added_pct_of_round"] is None


class StubStrategy:
    """An aggregate_train that returns ``arrays`` (None: kept the previous model)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def aggregate_train(self, server_round, replies):
        return self.arrays, None


def test_a_defense_that_returns_no_model_is_marked_failed_not_timed_as_ok(monkeypatch):
    monkeypatch.setattr(bench, "flower_fedavg", lambda n, initial: StubStrategy(initial))
    monkeypatch.setattr(
        bench,
        "ready_strategy",
        lambda name, n, initial, *, model: StubStrategy(None if name == "broken" else initial),
    )
    ctx = bench.Context(
        plan=bench.BenchPlan.for_mode(quick=True),
        out=None,  # type: ignore[arg-type]
        console=Console(file=io.StringIO()),
        budget=Budget(60.0),
    )
    weights = [np.zeros((2, 2), dtype=np.float32)]

    rows = bench._aggregation_at(ctx, "lenet", weights, 3, ["flower-fedavg", "working", "broken"], {})

    status = {row["strategy"]: row["status"] for row in rows}
    assert status["flower-fedavg"] == "ok" and status["working+guard"] == "ok"
    assert status["broken+guard"].startswith("failed")


def test_bench_command_writes_the_layout_from_stubbed_sections(tmp_path, monkeypatch, capsys):
    simulation = {
        "model": "lenet",
        "clients": 10,
        "floor_s": 4.0,
        "floor_kind": "1 thread x2 parallel",
        "round_s": 5.0,
        "ratio": ratio(5.0, 4.0),
        "round1_s": 9.0,
        "startup_s": 12.0,
        "superlink_start_s": 1.5,
        "client_build_s": 0.5,
        "cli_polls": 30,
        "cli_poll_cpu_s": 20.0,
        "status": "finished:completed",
    }
    memory = {"model": "lenet", "clients": 10, "peak_rss_mb": 3000.0, "status": "finished:completed"}
    aggregation = [
        bench._agg_row("lenet", 61706, 10, "flower-fedavg", ms=2.0, reference_ms=2.0, repeats=3),
        bench._agg_row("lenet", 61706, 10, "fedavg", ms=3.0, reference_ms=2.0, repeats=3),
    ]
    attacks = [{"attack": "fgsm", "images": 100, "per_100_s": 0.02, "reference": "plain batched torch"}]
    attacks[0].update(reference_per_100_s=0.01, ratio=ratio(0.02, 0.01), status="ok", note="")

    def stub_simulation(ctx):
        ctx.round_seconds["lenet"] = 5.0
        return [simulation], [memory]

    monkeypatch.setattr(bench, "bench_aggregation", lambda ctx: aggregation)
    monkeypatch.setattr(bench, "bench_attacks", lambda ctx: attacks)
    monkeypatch.setattr(bench, "bench_simulation", stub_simulation)
    monkeypatch.setattr(bench, "foreign_flower_processes", lambda own_tag=None: [])

    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["quick"] is True and document["machine"]["cores"] >= 1
    assert document["machine"]["gpu"] is False
    assert {"python", "torch", "flwr"} <= set(document["machine"])
    assert list(document["sections"]) == list(SECTIONS)
    assert document["sections"]["simulation"][0]["ratio"] == 1.25
    assert document["sections"]["aggregation"][1]["ratio"] == 1.5
    assert document["sections"]["aggregation"][1]["added_pct_of_round"] == pytest.approx(
        round(100 * 1.0 / (5000 + 2.0), 2)
    )
    assert document["sections"]["attacks"][0]["ratio"] == 2.0
    assert document["sections"]["memory"] == [memory]  # quick mode: only the 10-client runs
    assert document["sections"]["scale"][0]["status"].startswith("skipped (quick mode")
    assert all(isinstance(n, str) for n in document["notes"])
    for rows in document["sections"].values():
        for row in rows:
            assert all(isinstance(v, str | int | float | bool | type(None)) for v in row.values())
    out = capsys.readouterr().out
    assert "1. simulation overhead" in out and "5. scale" in out and "bench.json" in out
    markdown = (tmp_path / "bench.md").read_text()
    assert "| lenet | 10 |" in markdown and "no GPU" in markdown


def test_plain_fgsm_matches_fedsecs_fgsm_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(8, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ours = generate("fgsm", model, x, y, num_classes=3, params={"eps": 0.1})
    with bench.frozen(model):
        plain = plain_fgsm(model, x, y, eps=0.1)
    np.testing.assert_allclose(plain.numpy(), ours.numpy(), atol=1e-6)
    assert not torch.equal(plain, x)  # it did move the images


def test_plain_pgd_stays_in_the_ball_and_one_full_step_without_start_is_fgsm():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    adv = plain_pgd(
        model, x, y, eps=0.05, eps_step=0.01, max_iter=10, generator=torch.Generator().manual_seed(0)
    )
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    one = plain_pgd(model, x, y, eps=0.1, eps_step=0.1, max_iter=1, random_init=False)
    torch.testing.assert_close(one, plain_fgsm(model, x, y, eps=0.1))
