"""``fedsec compare``: identical, within-rtol and differing records are told apart, and where they part."""

import json

import pytest

from fedsec.errors import FedsecError
from fedsec.results import METRICS_FILE
from simulations import docgen
from simulations.cli import main
from simulations.compare import Comparison, compare_dirs, compare_rounds, markdown


def _rounds(accuracies, *, dropped=(), seconds=1.0):
    return [
        {"round": r, "accuracy": a, "loss": 1.0 - a, "seconds": seconds * (r + 1), "dropped": list(dropped)}
        for r, a in enumerate(accuracies)
    ]


def _write(path, rounds):
    path.mkdir(parents=True, exist_ok=True)
    (path / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rounds))


def test_identical_records_ignore_wall_clock_fields():
    a = _rounds([0.1, 0.5, 0.9])
    b = _rounds([0.1, 0.5, 0.9], seconds=7.0)
    result = compare_rounds("run", a, b)
    assert result.verdict(0.0) == "identical"
    assert result.first_round is None and result.max_relative == 0.0
    assert result.numbers == 3 * 3  # round, accuracy, loss per round; seconds skipped


def test_the_first_differing_round_and_the_largest_difference_are_found():
    a = _rounds([0.1, 0.5, 0.9])
    b = _rounds([0.1, 0.5 * (1 + 1e-7), 0.8])
    result = compare_rounds("run", a, b)
    assert result.first_round == 1
    assert result.first_round_relative == pytest.approx(1e-7, rel=1e-3)
    assert result.max_relative == pytest.approx(0.1 / 0.2)  # round 2's loss: 1 - 0.9 against 1 - 0.8
    assert result.verdict(1e-6) == "differs"
    assert compare_rounds("run", a[:2], b[:2]).verdict(1e-6) == "within rtol"
    assert result.final_accuracy_a == 0.9 and result.final_accuracy_b == 0.8


def test_non_numeric_differences_and_missing_rounds_always_differ():
    kept = compare_rounds("run", _rounds([0.1, 0.5]), _rounds([0.1, 0.5], dropped=["3"]))
    assert kept.verdict(1.0) == "differs"
    assert kept.other and all(path.endswith(".dropped") for path in kept.other)
    shorter = compare_rounds("run", _rounds([0.1, 0.5]), _rounds([0.1]))
    assert shorter.verdict(1.0) == "differs" and shorter.first_round is None


def test_a_finite_value_against_a_non_finite_one_is_an_infinite_difference():
    result = compare_rounds("run", _rounds([0.1, 0.5]), _rounds([0.1, float("nan")]))
    assert result.max_relative == float("inf") and result.verdict(1e9) == "differs"


def test_runs_are_matched_by_their_path_and_unmatched_ones_fail(tmp_path):
    _write(tmp_path / "a" / "x" / "seed=1", _rounds([0.1, 0.5]))
    _write(tmp_path / "a" / "y" / "seed=1", _rounds([0.1, 0.6]))
    _write(tmp_path / "b" / "x" / "seed=1", _rounds([0.1, 0.5]))
    comparison = compare_dirs(tmp_path / "a", tmp_path / "b")
    assert [r.run for r in comparison.runs] == ["x/seed=1"]
    assert comparison.only_a == ("y/seed=1",) and not comparison.agrees
    matched = compare_dirs(tmp_path / "a", tmp_path / "b", matched_only=True)
    assert matched.agrees and "Not compared: 1 runs only in A." in markdown(matched)
    _write(tmp_path / "b" / "y" / "seed=1", _rounds([0.1, 0.6]))
    assert compare_dirs(tmp_path / "a", tmp_path / "b").agrees


def test_the_cli_exits_by_verdict_and_its_json_round_trips_into_the_docs(tmp_path, capsys):
    _write(tmp_path / "a", _rounds([0.1, 0.5]))
    _write(tmp_path / "b", _rounds([0.1, 0.5 * (1 + 1e-9)]))
    out = tmp_path / "docs" / "results" / "same" / "compare.json"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out)]) == 0
    assert "within rtol" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--rtol", "0"]) == 1
    comparison = Comparison.from_json(json.loads(out.read_text()))
    assert comparison.runs[0].verdict(comparison.rtol) == "within rtol"
    (out.parent / "command.txt").write_text("fedsec compare a b\n")
    block = docgen.compare_block("same", root=tmp_path)
    assert "`fedsec compare a b`" in block and markdown(comparison) in block


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "b", _rounds([0.1]))
    assert main(["compare", str(tmp_path / "empty"), str(tmp_path / "b")]) == 2
    assert "holds no run (metrics.jsonl)" in capsys.readouterr().err
    with pytest.raises(FedsecError, match="--rtol must be >= 0"):
        compare_dirs(tmp_path / "b", tmp_path / "b", rtol=-1)
