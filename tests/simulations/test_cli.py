"""The fedsec CLI: bad input ends in one clear line and a non-zero exit; listing and reports work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsec.errors import FedsecError
from fedsec.results import RunRecorder
from simulations.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "quickstart", "--set", "bogus-key=1"], "fedsec: error: unknown config key 'bogus-key'"),
        (
            ["run", "quickstart", "--set", "strategy=nope"],
            "fedsec: error: unknown strategy 'nope'; choose one of:",
        ),
        (["run", "quickstart", "--set", "learning-rate=-1"], "'learning-rate' must be > 0, got -1"),
        (["run", "no-such-scenario"], "unknown scenario 'no-such-scenario'; choose one of: "),
        (["run", "quickstart", "--set", "novalue"], "override 'novalue' must look like KEY=VALUE"),
        (["deploy", "quickstart", "--nodes", "0"], "--nodes must be >= 1"),
        (["report", "/nonexistent-run"], "has no summary.json"),
    ],
)
def test_user_errors_exit_non_zero_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_prints_no_traceback_for_a_bad_key():
    completed = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "run", "quickstart", "--set", "bogus-key=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "fedsec: error: unknown config key 'bogus-key'; `fedsec keys` lists the known keys"
    ]


def test_scenarios_and_keys_are_listed(capsys):
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "FedAvg" in out
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert "learning-rate" in out and "num-server-rounds" in out


def _fake_run(path, strategy, accuracies):
    recorder = RunRecorder(out_dir=path, scenario="quickstart", config={"strategy": strategy, "seed": 1})
    for i, acc in enumerate(accuracies):
        recorder.end_round(i, accuracy=acc, loss=1 - acc)
    recorder.finish(tables={"Table X": {"FedAvg": {"clean": acc}}})
    return path


def test_report_puts_runs_side_by_side_labelled_by_what_differs(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", "fedavg", [0.1, 0.5, 0.91])
    b = _fake_run(tmp_path / "b", "krum", [0.1, 0.4, 0.87])
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| strategy=fedavg | quickstart | 2 | 0.9100 |" in out
    assert "| strategy=krum | quickstart | 2 | 0.8700 |" in out
    assert "| 1 | 0.5000 | 0.4000 |" in out  # per-round accuracy, one column per run
    assert "## Table X (strategy=krum)" in out
    assert (tmp_path / "report" / "report.md").read_text() == out
    assert (tmp_path / "report" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_report_of_a_sweep_lists_its_runs_and_then_its_merged_tables(tmp_path, capsys):
    import json

    _fake_run(tmp_path / "dba" / "none", "fedavg", [0.1, 0.93])
    _fake_run(tmp_path / "dba" / "layered", "layered", [0.1, 0.90])
    (tmp_path / "dba" / "missing").mkdir()  # a run that never finished is left out
    merged = {"Grid": {"dba": {"none": 0.93, "layered": 0.90}}}
    (tmp_path / "summary.json").write_text(
        json.dumps({"scenario": "g", "runs": ["dba/none", "dba/layered", "dba/missing"], "tables": merged})
    )
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| dba/none | quickstart | 1 | 0.9300 |" in out
    assert "| dba/layered | quickstart | 1 | 0.9000 |" in out
    assert "dba/missing" not in out.split("## Test accuracy")[0]
    assert "| 1 | 0.9300 | 0.9000 |" in out
    assert "## Grid" in out and "## Table X" not in out


def test_deploy_with_incomplete_certificates_names_the_missing_files(tmp_path, capsys):
    certificates = tmp_path / "certs"
    certificates.mkdir()
    (certificates / "ca.crt").write_text("x")
    argv = [
        "deploy",
        "quickstart",
        "--nodes",
        "2",
        "--certificates",
        str(certificates),
        "--auth",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "lacks server.pem, server.key, supernode-0, supernode-0.pub" in err
    assert "scripts/make_certificates.sh" in err


def test_only_keeps_the_matching_runs_of_a_grid_and_refuses_a_pattern_matching_none(tmp_path):
    from simulations.cli import build_parser
    from simulations.plan import prepare_runs

    args = build_parser().parse_args(
        ["run", "layered-mnist", "--only", "dba/*,none/none", "--out", str(tmp_path)]
    )
    plan = prepare_runs(args)

    assert [c.variant + "/" + c.defense for c in plan.configs][:2] == ["none/none", "dba/none"]
    assert len(plan.configs) == 13 and plan.base == tmp_path
    assert {c.defense for c in plan.configs if c.variant == "dba"} >= {
        "layered",
        "layered-paper",
        "flame",
        "edge+distill",
    }
    bad = build_parser().parse_args(["run", "layered-mnist", "--only", "nope/*"])
    with pytest.raises(FedsecError, match="matches none of the runs"):
        prepare_runs(bad)


def test_set_wins_over_the_keys_of_a_grids_variants_and_defenses(tmp_path):
    from simulations.cli import build_parser
    from simulations.plan import prepare_runs

    only = "dba/layered,dba/layered-paper,dba/server"
    argv = ["run", "layered-mnist", "--only", only, "--out", str(tmp_path)]
    by_defense = {c.defense: c for c in prepare_runs(build_parser().parse_args(argv)).configs}
    assert by_defense["layered"].layered_clip and not by_defense["layered-paper"].layered_clip
    assert by_defense["layered-paper"].abl_schedule == "phased"
    assert by_defense["layered"].abl_schedule == "every-round"
    assert by_defense["layered"].poison_epochs == 10  # the dba variant's own key

    argv += ["--set", "layered-clip=false", "--set", "poison-epochs=3", "--set", "abl-schedule=every-round"]
    forced = prepare_runs(build_parser().parse_args(argv))
    assert [c.defense for c in forced.configs] == ["layered", "layered-paper", "server"]
    assert all(not c.layered_clip for c in forced.configs)  # `layered`'s own `layered-clip = true` lost
    assert all(c.poison_epochs == 3 and c.abl_schedule == "every-round" for c in forced.configs)
    assert all(c.strategy == "layered" and c.variant == "dba" for c in forced.configs)  # the rest is kept


def test_set_sweep_runs_one_config_per_value_in_place_of_the_scenarios_own_runs(tmp_path):
    from simulations.cli import build_parser
    from simulations.plan import prepare_runs

    args = build_parser().parse_args(
        ["run", "quickstart", "--set", "sweep=seed=1,2,3", "--out", str(tmp_path)]
    )
    plan = prepare_runs(args)
    assert [c.seed for c in plan.configs] == [1, 2, 3]
    assert [Path(c.out_dir).name for c in plan.configs] == ["seed=1", "seed=2", "seed=3"]
    assert all(c.sweep == "" and c.variants == "" for c in plan.configs)  # each is a single run
    grid = build_parser().parse_args(
        ["run", "layered-mnist", "--set", "sweep=seed=4,5", "--out", str(tmp_path)]
    )
    assert [(c.seed, c.variant) for c in prepare_runs(grid).configs] == [(4, ""), (5, "")]
    bad = build_parser().parse_args(["run", "quickstart", "--set", "sweep=local-epochs=1,0"])
    with pytest.raises(FedsecError, match=r"sweep=local-epochs=1,0, local-epochs=0: .*local-epochs"):
        prepare_runs(bad)


def test_deploy_refuses_the_perfect_knowledge_hook(capsys):
    from simulations.cli import main

    code = main(["deploy", "quickstart", "--nodes", "2", "--set", "perfect-knowledge-hook=true"])

    assert code == 2 and "simulation-only hook" in capsys.readouterr().err


def test_out_must_be_a_new_or_empty_directory_unless_forced(tmp_path, capsys, monkeypatch):
    from simulations import cli

    started = []
    monkeypatch.setattr(
        cli, "_follow", lambda console, config, run, **kwargs: started.append(config.out_dir) or 0
    )
    a_file = tmp_path / "file"
    a_file.write_text("x")
    used = tmp_path / "used"
    used.mkdir()
    (used / "summary.json").write_text("{}")
    assert main(["run", "quickstart", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["run", "quickstart", "--out", str(used)]) == 2
    assert "is not empty" in capsys.readouterr().err and (used / "summary.json").exists()
    assert main(["run", "quickstart", "--out", str(used), "--force"]) == 0
    assert started == [str(used)] and not used.exists()  # replaced: the run starts from an empty directory


def test_records_never_mix_two_runs(tmp_path):
    first = RunRecorder(out_dir=tmp_path, scenario="a", config={})
    first.end_round(0, accuracy=0.1, loss=2.0)
    first.finish()
    with pytest.raises(FedsecError, match="already holds another run's records"):
        RunRecorder(out_dir=tmp_path, scenario="b", config={})
    with pytest.raises(FedsecError, match="is a file"):
        RunRecorder(out_dir=tmp_path / "summary.json", scenario="c", config={})
    assert not list(tmp_path.glob(".*partial"))  # the summary was written through a temporary file


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["validation-size=4000"], "leave nothing of the"),
        (["dataset=digits", "validation-size=0"], None),
        (["dataset=synthetic", "validation-size=0", "num-clients=700"], "num-clients=700 is more than"),
        (["dataset=mnist", "data-root=/nonexistent"], "/nonexistent"),
    ],
)
def test_data_problems_stop_the_run_before_flower_starts(settings, message, capsys, monkeypatch):
    from simulations import cli

    monkeypatch.setattr(cli, "_follow", lambda console, config, run, **kwargs: 0)
    code = main(["run", "quickstart", *[arg for s in settings for arg in ("--set", s)]])
    err = capsys.readouterr().err
    if message is None:
        assert code == 0 and err == ""
    else:
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_seeds_repeat_every_run_of_a_grid_and_conflict_with_a_single_seed(tmp_path):
    from simulations.cli import build_parser
    from simulations.plan import prepare_runs

    args = build_parser().parse_args(
        ["run", "layered-mnist", "--only", "dba/flame", "--seeds", "7,3", "--out", str(tmp_path)]
    )
    plan = prepare_runs(args)
    assert plan.seeds == (7, 3) and plan.summarised
    assert [(c.variant, c.defense, c.seed, c.seeds) for c in plan.configs] == [
        ("dba", "flame", 7, ""),
        ("dba", "flame", 3, ""),
    ]
    assert [Path(c.out_dir).relative_to(tmp_path).as_posix() for c in plan.configs] == [
        "dba/flame/seed=7",
        "dba/flame/seed=3",
    ]
    single = build_parser().parse_args(
        ["run", "quickstart", "--set", "seeds=5,6", "--out", str(tmp_path / "q")]
    )
    assert [Path(c.out_dir).name for c in prepare_runs(single).configs] == ["seed=5", "seed=6"]
    both = build_parser().parse_args(["run", "quickstart", "--seeds", "1,2", "--set", "seed=3"])
    with pytest.raises(FedsecError, match="not both"):
        prepare_runs(both)
    repeated = build_parser().parse_args(["run", "quickstart", "--seeds", "1,1"])
    with pytest.raises(FedsecError, match="listed twice"):
        prepare_runs(repeated)


def _completed_run(config, accuracy=0.5):
    from simulations.launcher import write_run_config

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(config, out / "run_config.toml")
    recorder = RunRecorder(out_dir=out, scenario="quickstart", config={"seed": config.seed})
    recorder.end_round(1, accuracy=accuracy, loss=1 - accuracy)
    recorder.finish(status="completed")


def test_keep_completed_reuses_identical_finished_runs_and_reruns_the_rest(tmp_path, capsys, monkeypatch):
    from simulations import cli
    from simulations.plan import prepare_runs

    started = []

    def follow(console, config, run, **kwargs):
        started.append((Path(config.out_dir).name, Path(config.out_dir).exists()))
        _completed_run(config, accuracy=0.9)
        return 0

    monkeypatch.setattr(cli, "_follow", follow)
    argv = ["run", "quickstart", "--seeds", "1,2,3", "--out", str(tmp_path)]
    first, interrupted, _ = prepare_runs(cli.build_parser().parse_args(argv)).configs
    _completed_run(first, accuracy=0.5)
    Path(interrupted.out_dir).mkdir()
    (Path(interrupted.out_dir) / "metrics.jsonl").write_text('{"round": 0, "accuracy": 0.1}\n')

    assert main(argv) == 2 and "--keep-completed" in capsys.readouterr().err
    assert main([*argv, "--keep-completed"]) == 0
    assert "kept: " + first.out_dir in " ".join(capsys.readouterr().out.split())
    # seed 1 is not rerun; seed 2's unfinished attempt is cleared before it runs again
    assert started == [("seed=2", False), ("seed=3", False)]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["runs"] and (tmp_path / "seed=1" / "summary.json").exists()
    cell = next(iter(next(iter(summary["tables"].values())).values()))["accuracy"]
    assert cell["values"] == [0.5, 0.9, 0.9]  # the kept run's record is what the summary uses

    other = ["run", "quickstart", "--seeds", "1", "--set", "local-epochs=3", "--out", str(tmp_path)]
    assert main([*other, "--keep-completed"]) == 2
    assert "completed run of another run config" in capsys.readouterr().err
    assert main([*argv, "--keep-completed", "--force"]) == 2
    assert "either --force" in capsys.readouterr().err
    assert len(started) == 2
