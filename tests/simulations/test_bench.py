"""``fedsec bench``: arithmetic and bench.json layout on stubbed timings; its FGSM floor (no timing)."""

import io
import json
import math
from pathlib import Path

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
from fedsec.robust import coordinate_median
from fedsec.updates import UpdateMatrix
from simulations.bench import aggregation, common, floors, peers, report
from simulations.bench import main as bench_main
from simulations.bench.attacks import frozen
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


MACHINE = {
    "cores": 2,
    "gpu": False,
    "cpu": "Test CPU",
    "memory_gb": 8.0,
    "python": "3.11.9",
    "torch": "2.14.1",
    "flwr": "1.42.0",
    "ray": "2.50.0",
    "art": "1.20.1",
    "byzfl": "0.0.11",
}


def _ctx(seconds=60.0):
    return common.Context(
        plan=common.BenchPlan.for_mode(quick=True),
        out=None,  # type: ignore[arg-type]
        console=Console(file=io.StringIO()),
        budget=Budget(seconds),
    )


def test_aggregation_rows_ratio_floor_ratio_and_share_of_a_round():
    reference = aggregation._agg_row("cnn", 10, 100, "flower-fedavg", ms=200.0, reference_ms=200.0, repeats=3)
    krum = aggregation._agg_row(
        "cnn", 10, 100, "krum", ms=700.0, reference_ms=200.0, floor_ms=350.0, threads=2, repeats=3
    )
    skipped = aggregation._agg_row("cnn", 10, 200, "krum", predicted_ms=2800.0, status="skipped (budget)")
    assert reference["ratio"] == 1.0 and krum["ratio"] == 3.5 and krum["strategy"] == "krum+guard"
    assert krum["floor_ratio"] == 2.0 and krum["threads"] == 2 and reference["floor_ratio"] is None
    assert skipped["ms"] is None and skipped["ratio"] is None and skipped["predicted_ms"] == 2800.0
    assert set(reference) == set(skipped)  # every row of a section has the same keys
    ctx = _ctx(10.0)
    ctx.round_seconds["cnn"] = 9.8  # a steady simulation round of cnn
    aggregation.fill_round_shares([reference, krum, skipped], ctx)
    assert krum["added_pct_of_round"] == pytest.approx(100 * 500 / (9800 + 200))  # 5.0%
    assert krum["round_s"] == 9.8
    assert krum["floor_added_pct_of_round"] == pytest.approx(100 * 150 / (9800 + 200))  # 1.5%
    assert reference["added_pct_of_round"] == 0.0 and skipped["added_pct_of_round"] is None
    assert krum["added_pct_of_own_round"] is None and krum["own_round_s"] is None  # no 100-client round ran
    ctx.rounds_at[("cnn", 100)] = 19.8  # a simulated round in which all 100 clients train
    ten = aggregation._agg_row("cnn", 10, 10, "krum", ms=300.0, reference_ms=200.0, floor_ms=250.0)
    aggregation.fill_round_shares([krum, ten], ctx)
    assert krum["added_pct_of_own_round"] == pytest.approx(100 * 500 / (19800 + 200))  # 2.5%
    assert krum["floor_added_pct_of_own_round"] == pytest.approx(100 * 150 / (19800 + 200))
    assert krum["own_round_s"] == 19.8 and krum["added_pct_of_round"] == pytest.approx(5.0)
    assert ten["added_pct_of_own_round"] is None  # only the sizes that were simulated


def test_the_share_note_gives_the_floors_own_share_for_a_defense_past_ten_percent():
    from simulations.bench.findings import share_note

    rows = [
        {
            "strategy": "krum+guard",
            "added_pct_of_round": 8.0,
            "floor_added_pct_of_round": 6.0,
            "round_s": 3.5,
        },
        {
            "strategy": "bulyan+guard",
            "added_pct_of_round": 20.5,
            "floor_added_pct_of_round": 19.0,
            "round_s": 3.5,
        },
    ]
    assert share_note(rows, 2) == (
        "aggregation cnn x100, 2 thread(s), share of a round (3.50s, the 10-client cnn round): "
        "bulyan +20.5% (its floor alone +19.0%), krum +8.0% over Flower's FedAvg; 1 of 2 add at most 10%."
    )
    rows[0].update(added_pct_of_own_round=4.5, floor_added_pct_of_own_round=3.4, own_round_s=6.25)
    rows[1].update(added_pct_of_own_round=11.5, floor_added_pct_of_own_round=10.6, own_round_s=6.25)
    assert share_note(rows, 1).endswith(
        "krum +8.0% over Flower's FedAvg; 1 of 2 add at most 10%. Share of the simulated round at 100 cnn "
        "clients (6.25s: the same data as the 10-client round, a hundredth of it on each client): "
        "bulyan +11.5% (its floor alone +10.6%), krum +4.5% over Flower's FedAvg; 1 of 2 add at most 10%."
    )


class StubStrategy:
    """An aggregate_train that returns ``arrays`` (None: kept the previous model)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def aggregate_train(self, server_round, replies):
        return self.arrays, None


def _stub_strategies(monkeypatch):
    monkeypatch.setattr(aggregation, "flower_fedavg", lambda n, initial: StubStrategy(initial))
    monkeypatch.setattr(
        aggregation,
        "ready_strategy",
        lambda name, n, initial, *, model: StubStrategy(None if name == "broken" else initial),
    )
    monkeypatch.setattr(peers, "flower_strategy", lambda name, config, initial, grid: StubStrategy(initial))


def test_a_defense_that_returns_no_model_is_marked_failed_not_timed_as_ok(monkeypatch):
    _stub_strategies(monkeypatch)
    weights = [np.zeros((2, 2), dtype=np.float32)]

    rows = aggregation._aggregation_at(_ctx(), "lenet", weights, 3, ["working", "broken"], {})

    status = {row["strategy"]: row["status"] for row in rows}
    assert status == {"flower-fedavg": "ok", "working+guard": "ok", "broken+guard": aggregation.FAILED}
    assert all(row["ms"] is not None for row in rows)


def test_aggregation_cell_has_floor_and_peers_and_says_when_byzfl_is_missing(monkeypatch):
    _stub_strategies(monkeypatch)
    monkeypatch.setattr(peers, "byzfl_available", lambda: False)
    weights = [np.zeros((3, 4), dtype=np.float32), np.zeros(5, dtype=np.float32)]

    rows = aggregation._aggregation_at(_ctx(), "lenet", weights, 7, ["krum", "gan-audit"], {}, threads=(1, 2))

    assert [(r["threads"], r["strategy"]) for r in rows] == [
        (t, s) for t in (1, 2) for s in ("flower-fedavg", "krum+guard", "gan-audit+guard")
    ]
    krum, audit = rows[1], rows[2]
    assert krum["f"] == 1 and krum["floor_steps"] == "decode+gram+combine" and krum["floor_ms"] > 0
    assert krum["flower"] == "flower-krum" and krum["flower_ms"] is not None
    assert krum["byzfl"] == "byzfl.Krum(f=2), torch input"
    assert krum["byzfl_ms"] is None and krum["byzfl_status"] == peers.NOT_INSTALLED
    assert audit["floor_ms"] is None and audit["flower"] is None and audit["byzfl"] is None
    document = bench_document(
        date="d",
        machine=MACHINE,
        quick=True,
        sections={"aggregation": rows},
        notes=[],
        wall_seconds=1.0,
    )
    line = next(t for t in report.markdown(document).splitlines() if "| krum+guard |" in t)
    assert "| ByzFL not installed (pip install -e .[bench]; make installs it) |" in line


def _replies(n, *, seed, equal_counts=False):
    weights = [np.zeros((3, 4), dtype=np.float32), np.zeros(5, dtype=np.float32)]
    replies = aggregation.synthetic_replies(weights, n, seed=seed)
    replies[0] = aggregation.synthetic_replies([w + 0.3 for w in weights], 1, seed=99)[0]  # an outlier
    if equal_counts:
        for msg in replies:
            msg.content.metric_records["metrics"]["num-examples"] = 30
    return weights, replies


def test_floor_steps_compute_what_the_defenses_compute():
    weights, replies = _replies(9, seed=3)
    reference = [w + 0.25 for w in weights]
    matrix = floors.decode_matrix(replies, reference)
    expected = np.stack(
        [
            np.concatenate(
                [
                    (a - r).ravel()
                    for a, r in zip(m.content["arrays"].to_numpy_ndarrays(), reference, strict=True)
                ]
            )
            for m in replies
        ]
    )
    assert matrix.dtype == np.float32 and matrix.shape == (9, 17)
    np.testing.assert_allclose(matrix, expected, rtol=1e-6, atol=1e-6)
    updates = UpdateMatrix(matrix)
    np.testing.assert_allclose(floors.gram(matrix), updates.gram(), rtol=1e-5, atol=1e-5)
    w = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(floors.weighted_sum(matrix, w), updates.combine(w), rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(0)
    for n in (9, 10):  # odd and even: the middle value, the mean of the two middle ones
        x = rng.standard_normal((n, 23)).astype(np.float32)
        median = floors.column_sort_median(x, block=5)  # blocks of 5 columns, the last one short
        np.testing.assert_allclose(median, np.median(x, axis=0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(median, coordinate_median(UpdateMatrix(x)), rtol=1e-6, atol=1e-7)
    steps = {"decode": 1.0, "gram": 2.0, "combine": 4.0, "sort": 8.0, "history": 16.0, "sort-kept": 32.0}
    assert floors.floor_seconds("krum", steps) == 7.0 and floors.floor_seconds("fedmedian", steps) == 9.0
    assert floors.floor_seconds("foolsgold", steps) == 23.0  # its history pass is part of the rule
    # Bulyan sorts only the θ = n − 2f updates its Multi-Krum keeps
    assert floors.floor_seconds("bulyan", steps) == 35.0 and floors.floor_seconds("gan-audit", steps) is None
    timed = floors.time_steps(
        replies, reference, repeat=1, steps=("decode", "sort", "history", "sort-kept"), kept=2
    )
    assert set(timed) == {"decode", "sort", "history", "sort-kept"} and all(t > 0 for t in timed.values())
    with pytest.raises(ValueError, match="kept must be an integer in"):
        floors.time_steps(replies, reference, repeat=1, steps=("sort-kept",), kept=len(replies) + 1)


@pytest.mark.parametrize("label", ["krum", "multikrum", "fedmedian", "fedtrimmedavg", "fedavg"])
def test_byzfl_peer_aggregates_what_fedsecs_own_aggregator_does(label):
    assert peers.byzfl_available(), "ByzFL is missing: `make install` installs it (the bench extra)"
    n = 11
    # fedsec's averages weigh by num-examples, ByzFL's do not: equal counts make them the same rule.
    weights, replies = _replies(n, seed=5, equal_counts=True)
    config = aggregation.bench_config(label, n, "lenet")
    f = aggregation.assumed_malicious(n)
    assert (f, config.num_malicious_clients, config.trim_beta) == (2, 2, 0.2)
    ours = aggregation.ready_strategy(label, n, list(weights), model="lenet")
    expected, _ = ours.aggregate_train(1, aggregation.fresh_replies(replies))
    theirs = peers.byzfl_aggregate(label, replies, f=f, beta=config.trim_beta)
    assert expected is not None and list(theirs.keys()) == list(expected.keys())
    for a, b in zip(theirs.to_numpy_ndarrays(), expected.to_numpy_ndarrays(), strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Not a trivial agreement: the robust rules leave the outlier (reply 0) out, the mean does not.
    mean = np.mean([m.content["arrays"].to_numpy_ndarrays()[0] for m in replies], axis=0)
    robust = not np.allclose(theirs.to_numpy_ndarrays()[0], mean, atol=1e-3)
    assert robust == (label != "fedavg")


def test_thread_limit_caps_torch_and_blas_threads_and_restores_them():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with common.thread_limit(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before


def _document():
    aggregation_rows = [
        aggregation._agg_row("cnn", 1663370, 100, "flower-fedavg", ms=20.0, reference_ms=20.0, repeats=3),
        aggregation._agg_row(
            "cnn",
            1663370,
            100,
            "krum",
            ms=50.0,
            reference_ms=20.0,
            floor_ms=10.0,
            flower="flower-krum",
            flower_ms=80.0,
            flower_status="ok",
            byzfl="byzfl.Krum(f=21), torch input",
            byzfl_ms=60.0,
            byzfl_status="ok",
            repeats=3,
        ),
        aggregation._agg_row(
            "cnn", 1663370, 200, "bulyan", predicted_ms=9e4, status="skipped (budget; ~90s predicted)"
        ),
    ]
    aggregation_rows[1]["added_pct_of_round"] = 2.5
    aggregation_rows[1]["added_pct_of_own_round"] = 1.25
    return bench_document(
        date="2026-01-01 00:00 UTC",
        machine=MACHINE,
        quick=True,
        sections={
            "aggregation": aggregation_rows,
            "attacks": [{"attack": "fgsm", "images": 100, "per_100_s": 0.0123, "status": "ok"}],
        },
        notes=["a note"],
        wall_seconds=42.0,
    )


def test_markdown_renders_each_section_and_its_cells():
    text = report.markdown(_document())
    lines = text.splitlines()
    assert lines[0] == (
        "Benchmark of 2026-01-01 00:00 UTC (quick run, 42.0 s): 2 cores (Test CPU), no GPU, 8.0 GB; "
        "Python 3.11.9, torch 2.14.1, flwr 1.42.0, ray 2.50.0, ART 1.20.1, ByzFL 0.0.11."
    )
    recorded = {"aggregation", "attacks"}  # a section without rows (left out by --sections) has no table
    assert all((f"**{report.TITLES[name]}**" in lines) == (name in recorded) for name in report.COLUMNS)
    header = lines[lines.index(f"**{report.TITLES['aggregation']}**") + 2]
    assert header == (
        "| model | clients | threads | strategy | fedsec ms | floor ms | x floor | Flower ms | ByzFL ms "
        "| Flower FedAvg ms | x FedAvg | +% of round | +% of its N's round | status |"
    )
    krum = "| krum+guard | 50.0 | 10.0 | 5.00 | 80.0 | 60.0 | 20.0 | 2.50 | 2.50 | 1.25 | ok |"
    assert f"| cnn | 100 | 1 {krum}" in lines
    assert "| cnn | 100 | 1 | flower-fedavg | 20.0 | – | – | – | – | 20.0 | 1.00 | – | – | ok |" in lines
    skipped = "| – | – | – | – | – | – | – | – | – | skipped (budget; ~90s predicted) |"
    assert f"| cnn | 200 | 1 | bulyan+guard {skipped}" in lines
    assert "| fgsm | 100 | 0.012 | – | – | – | ok | – |" in lines
    assert lines[-3:] == ["Notes:", "", "- a note"]


def test_print_tables_prints_every_title_row_and_note():
    buffer = io.StringIO()
    report.print_tables(Console(file=buffer, width=300), _document())
    out = buffer.getvalue()
    assert all(title in out for title in report.TITLES.values())
    krum = next(line for line in out.splitlines() if "krum+guard" in line)
    cells = [cell.strip() for cell in krum.split("│")[1:-1]]
    expected = ["cnn", "100", "1", "krum+guard", "50.0", "10.0", "5.00", "80.0", "60.0", "20.0", "2.50"]
    assert cells == [*expected, "2.50", "1.25", "ok"]
    assert "- a note" in out and "skipped (budget; ~90s predicted)" in out


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
    agg_rows = [
        aggregation._agg_row("lenet", 61706, 10, "flower-fedavg", ms=2.0, reference_ms=2.0, repeats=3),
        aggregation._agg_row("lenet", 61706, 10, "fedavg", ms=3.0, reference_ms=2.0, repeats=3),
    ]
    attacks = [{"attack": "fgsm", "images": 100, "per_100_s": 0.02, "reference": "plain batched torch"}]
    attacks[0].update(reference_per_100_s=0.01, ratio=ratio(0.02, 0.01), status="ok", note="")

    def stub_simulation(ctx):
        ctx.round_seconds["lenet"] = 5.0
        return [simulation], [memory]

    monkeypatch.setattr(bench_main, "bench_aggregation", lambda ctx: agg_rows)
    monkeypatch.setattr(bench_main, "bench_attacks", lambda ctx: attacks)
    monkeypatch.setattr(bench_main, "bench_simulation", stub_simulation)
    imports = [
        {"step": "torch", "rss_mb": 700.0, "added_mb": 690.0, "cuda_mb": 0.0, "status": "ok"},
        {"step": "fedsec ClientApp", "rss_mb": 720.0, "added_mb": 20.0, "cuda_mb": 0.0, "status": "ok"},
    ]
    monkeypatch.setattr(bench_main, "bench_imports", lambda ctx: imports)
    startup = [
        {"mode": "alone", "runs": 2, "first_startup_s": 12.0, "extra_startup_s": 11.0, "total_s": 50.0},
        {"mode": "shared", "runs": 2, "first_startup_s": 15.0, "extra_startup_s": 6.0, "total_s": 40.0},
    ]
    monkeypatch.setattr(bench_main, "bench_startup", lambda ctx: startup)
    monkeypatch.setattr(bench_main, "foreign_flower_processes", lambda own_tag=None: [])

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
    assert document["sections"]["startup"] == startup
    assert document["sections"]["imports"] == imports
    assert any(note.startswith("imports: every client process holds 720 MB") for note in document["notes"])
    assert any(note.startswith("start-up: a run alone takes 11.0s") for note in document["notes"])
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
    with frozen(model):
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


def test_startup_rows_report_the_first_run_and_the_mean_extra_run_per_mode_and_the_note_compares_them():
    from simulations.bench.findings import startup_findings
    from simulations.bench.startup import startup_rows

    rows = startup_rows([20.0, 18.0, 16.0], [27.0, 8.0, 6.0], {"alone": 90.0, "shared": 60.0})
    assert rows == [
        {"mode": "alone", "runs": 3, "first_startup_s": 20.0, "extra_startup_s": 17.0, "total_s": 90.0},
        {"mode": "shared", "runs": 3, "first_startup_s": 27.0, "extra_startup_s": 7.0, "total_s": 60.0},
    ]
    (note,) = startup_findings(rows)
    assert "a run alone takes 17.0s" in note and "first run takes 27.0s" in note
    assert "each extra run 7.0s" in note and "3 runs: 90s alone, 60s shared" in note
    assert startup_findings([{"mode": "skipped", "runs": 1, "status": "skipped (time budget)"}]) == []


def test_bench_sections_runs_only_the_named_sections_and_says_which_it_left_out(tmp_path, monkeypatch):
    agg_rows = [
        aggregation._agg_row("lenet", 61706, 10, "flower-fedavg", ms=2.0, reference_ms=2.0, repeats=3),
        aggregation._agg_row("lenet", 61706, 10, "fedavg", ms=3.0, reference_ms=2.0, repeats=3),
    ]

    def must_not_run(ctx):
        raise AssertionError("a section that was not asked for ran")

    def reference_round(ctx, models):
        ctx.round_seconds.update({model: 4.0 for model in models})

    monkeypatch.setattr(bench_main, "bench_aggregation", lambda ctx: agg_rows)
    monkeypatch.setattr(bench_main, "round_reference", reference_round)
    for name in ("bench_simulation", "bench_startup", "bench_memory", "bench_scale", "bench_attacks"):
        monkeypatch.setattr(bench_main, name, must_not_run)
    monkeypatch.setattr(bench_main, "foreign_flower_processes", lambda own_tag=None: [])

    assert main(["bench", "--quick", "--sections", " aggregation ", "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "bench.json").read_text())
    assert [name for name, rows in document["sections"].items() if rows] == ["aggregation"]
    assert document["sections"]["aggregation"][1]["round_s"] == 4.0  # the reference round, not a simulation
    left_out = next(note for note in document["notes"] if note.startswith("sections not run"))
    assert all(name in left_out for name in ("simulation", "startup", "attacks", "memory", "scale"))
    assert "aggregation" not in left_out

    assert main(["bench", "--sections", "aggregation,rounds", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="bench sections must be some of"):
        bench_main.run_bench(quick=True, out=tmp_path / "y", console=Console(file=io.StringIO()), only=())


def test_the_memory_sampler_rereads_pss_only_when_rss_grew_or_when_asked(monkeypatch):
    from simulations.bench import memory

    rss = {"VmRSS": 1000, "VmHWM": 1000}
    reads: list[int] = []

    def pss_kb(pid):
        reads.append(pid)
        return rss["VmRSS"] // 2

    monkeypatch.setattr(memory, "tagged_pids", lambda tag: [7])
    monkeypatch.setattr(memory, "_status_kb", lambda pid: dict(rss))
    monkeypatch.setattr(memory, "_argv", lambda pid: ["ray::ClientAppActor"])
    monkeypatch.setattr(memory, "_pss_kb", pss_kb)
    sampler = memory.MemorySampler("tag", pss_growth=0.05)
    sampler.sample()
    sampler.sample()  # RSS flat: the PSS reading is reused
    rss["VmRSS"] = 1040  # grew 4%: still reused
    sampler.sample()
    assert len(reads) == 1 and sampler.peak_pss_kb == 500
    rss["VmRSS"] = 1100  # grew 10% since the reading: read again
    sampler.sample()
    assert len(reads) == 2 and sampler.peak_pss_kb == 550 and sampler.peak_rss_kb == 1100
    sampler.sample(fresh_pss=True)
    assert len(reads) == 3


def test_steady_fit_seconds_is_the_median_over_the_rounds_after_the_first():
    from fedsec.bench import steady_fit_seconds

    records = [{"round": 1, "fit_seconds": 9.0}] + [
        {"round": r, "fit_seconds": v} for r, v in ((2, 1.0), (3, 3.0), (4, 2.0))
    ]
    assert steady_fit_seconds(records) == 2.0
    assert steady_fit_seconds(records[:1]) is None
    assert steady_fit_seconds([{"round": 2, "seconds": 1.0}]) is None


def test_a_client_process_imports_no_attack_plotting_or_dataset_library_until_a_role_needs_it():
    from simulations.bench.imports import STEPS, import_steps

    every = tuple(step for step in STEPS if not step[0].startswith("+ "))  # what every client runs
    rows = import_steps((*every, ("+ ART", "import fedsec.attacks.evasion")))
    loaded = {row["step"]: set(row["loaded"].split(", ")) - {"–"} for row in rows}
    before_roles = set().union(*(loaded[step] for step, _ in every))
    client = len(every) - 1
    assert "torch" in loaded["torch"]
    assert before_roles.isdisjoint(
        {"art", "sklearn", "torchvision", "flwr_datasets", "datasets", "matplotlib"}
    )
    assert "art" in loaded["+ ART"]
    assert rows[client]["rss_mb"] > rows[0]["rss_mb"] and rows[-1]["added_mb"] > 0


def test_import_findings_name_the_largest_step_and_what_eager_imports_would_hold():
    from simulations.bench.findings import import_findings

    rows = [
        {"step": "interpreter", "rss_mb": 10.0, "added_mb": None, "cuda_mb": 0.0},
        {"step": "torch", "rss_mb": 650.0, "added_mb": 640.0, "cuda_mb": 280.0},
        {"step": "fedsec ClientApp", "rss_mb": 700.0, "added_mb": 50.0, "cuda_mb": 280.0},
        {"step": "+ ART (attacking roles)", "rss_mb": 870.0, "added_mb": 170.0, "cuda_mb": 280.0},
    ]
    (note,) = import_findings(rows)
    assert note.startswith("imports: every client process holds 700 MB after torch, fedsec ClientApp;")
    assert "the largest step is torch (+640 MB; 280 MB resident in CUDA libraries" in note
    assert "add 170 MB: a client importing them all eagerly would hold 870 MB." in note
    assert import_findings([{"step": "all", "status": "failed: boom"}]) == []


def test_the_scale_search_stops_at_the_first_size_that_does_not_complete():
    from simulations.bench.common import BenchPlan
    from simulations.bench.findings import scale_findings
    from simulations.bench.scale import largest_completed, search

    ran: list[int] = []

    def run(clients):
        ran.append(clients)
        completed = clients <= 4000
        return {
            "clients": clients,
            "dataset": "fashion-mnist",
            "rounds": 2,
            "completed": completed,
            "s_per_round": clients / 1000,
            "round1_s": 1.0,
            "startup_s": 9.0,
            "peak_rss_mb": 4000.0,
            "status": "finished:completed" if completed else "failed: run 7 did not finish within 600s",
        }

    rows = search((8000, 2000, 4000, 16000), run, train_examples=60000)
    assert ran == [2000, 4000, 8000]  # ascending, and nothing after the first failure
    assert all(row["search"] for row in rows)
    assert largest_completed(rows)["clients"] == 4000
    plan = BenchPlan.for_mode(quick=False)
    scale = [{"clients": 1000, "fraction_fit": 0.1, "completed": True}, *rows]
    note = scale_findings(scale, plan)[-1]
    assert "4000 clients (fashion-mnist) completed 2 rounds at 4.0 s per steady round" in note
    assert "8000 clients did not: failed: run 7 did not finish within 600s" in note


def test_a_search_size_that_leaves_clients_too_few_examples_is_not_run():
    from simulations.bench.scale import largest_completed, search

    def run(clients):
        return {"clients": clients, "completed": True}

    rows = search((1000, 2000, 4000), run, train_examples=3800)
    assert [row["clients"] for row in rows] == [1000, 2000]
    assert rows[-1]["status"].startswith("not run: data-bound (3800 training examples")
    assert largest_completed(rows)["clients"] == 1000


def test_the_notes_keep_a_models_simulated_sizes_apart():
    from simulations.bench.findings import findings

    record = Path(__file__).resolve().parents[2] / "docs" / "results" / "bench-shares" / "bench.json"
    document = json.loads(record.read_text())
    sections = document["sections"]
    notes = findings(sections, common.BenchPlan.for_mode(quick=False))
    simulated = [n.split(":")[0] for n in notes if n.startswith("overhead, simulation cnn")]
    assert simulated == ["overhead, simulation cnn x10", "overhead, simulation cnn x100"]
    rounds = [f"steady round {r['round_s']:.2f}s" for r in sections["simulation"] if r["model"] == "cnn"]
    assert [sum(1 for n in notes if r in n) for r in rounds] == [1, 1] and rounds[0] != rounds[1]
    shares = next(n for n in notes if n.startswith("aggregation cnn x100, 1 thread(s), share"))
    hundred = next(r for r in sections["simulation"] if r["model"] == "cnn" and r["clients"] == 100)
    assert f"Share of the simulated round at 100 cnn clients ({hundred['round_s']:.2f}s" in shares
