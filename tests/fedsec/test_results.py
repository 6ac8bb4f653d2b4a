"""Run records: the metrics.jsonl / summary.json / accuracy.png contract."""

import json

import pytest

from fedsec.results import RunRecorder, read_metrics, read_summary


def test_recorder_writes_the_three_record_files(tmp_path):
    recorder = RunRecorder(out_dir=tmp_path, scenario="demo", config={"seed": 1})
    recorder.end_round(0, accuracy=0.1, loss=2.3)
    recorder.note(1, rejected={"3": "array 0 has 1 non-finite values (NaN/Inf)"}, kept=["0", "1"])
    recorder.note(1, kept=["2"], dropped=["3"])
    recorder.end_round(1, accuracy=0.8, loss=0.5)
    summary = recorder.finish(tables={"Table 1": {"FedAvg": {"accuracy": 0.8}}})

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1]
    last = read_metrics(tmp_path)[-1]
    assert set(last) >= {"round", "accuracy", "loss", "seconds", "kept", "dropped", "rejected"}
    assert last["kept"] == ["0", "1", "2"]  # notes of one round merge
    assert last["rejected"] == {"3": "array 0 has 1 non-finite values (NaN/Inf)"}

    on_disk = read_summary(tmp_path)
    assert on_disk == summary
    assert on_disk["scenario"] == "demo" and on_disk["config"] == {"seed": 1}
    assert on_disk["rounds"] == 1
    assert on_disk["final"]["accuracy"] == 0.8 and on_disk["final"]["loss"] == 0.5
    assert on_disk["rejected_updates"] == 1
    assert on_disk["tables"]["Table 1"]["FedAvg"]["accuracy"] == 0.8
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_non_finite_metrics_become_null_not_invalid_json(tmp_path):
    recorder = RunRecorder(out_dir=tmp_path, scenario="demo", config={})
    recorder.end_round(1, accuracy=0.5, loss=float("nan"))
    assert read_metrics(tmp_path)[0]["loss"] is None


def test_relative_out_dir_is_refused(tmp_path):
    with pytest.raises(ValueError, match="absolute"):
        RunRecorder(out_dir="relative", scenario="x", config={})  # type: ignore[arg-type]
