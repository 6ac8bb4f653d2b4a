"""Generated docs: the committed pages are what `fedsec docs` writes, and they cover the whole schema."""

import json
import re
import shutil

import pytest

from fedsec.config import RunConfig
from simulations import docgen
from simulations.cli import main


def test_the_committed_generated_pages_are_up_to_date():
    assert docgen.stale_pages() == [], "run `make docs` and commit the result"


def test_the_configuration_page_lists_every_key_once_with_its_default_under_the_schemas_groups():
    text = docgen.configuration_markdown()
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| (.+?) \| (.+) \|$", text, flags=re.MULTILINE)
    assert sorted(key for key, _, _ in rows) == sorted(RunConfig.keys())
    by_key = {key: (default, meaning) for key, default, meaning in rows}
    assert by_key["seed"][0] == "`42`"
    assert by_key["device"][0] == '`"auto"`'
    assert by_key["out-dir"][0] == '`""`'
    assert by_key["seed"][1] == RunConfig.keys()["seed"].metadata["help"]
    titles = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert titles[0] == "Run" and "PDGAN (Zhao et al.)" in titles
    assert text.index("`fda3-confidence`") > text.index("## FDA³ (Song et al.)")


def test_docs_check_reports_a_stale_page_and_docs_rewrites_it(tmp_path, monkeypatch, capsys):
    shutil.copytree(docgen.ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "configuration.md"
    page.write_text(page.read_text().replace("| `seed` | `42` |", "| `seed` | `7` |"))
    monkeypatch.setattr(docgen, "ROOT", tmp_path)
    assert main(["docs", "--check"]) == 1
    assert "stale: docs/configuration.md" in capsys.readouterr().out
    assert main(["docs"]) == 0
    assert page.read_text() == docgen.configuration_markdown()
    assert main(["docs", "--check"]) == 0


def recorded(root, name, *, accuracy, tables):
    base = root / "docs" / "results" / name
    base.mkdir(parents=True)
    summary = {
        "scenario": name,
        "rounds": 3,
        "final": {"accuracy": accuracy},
        "seconds": 9.5,
        "tables": tables,
    }
    (base / "summary.json").write_text(json.dumps(summary))
    (base / "command.txt").write_text(f"fedsec run {name}\n")


def test_results_blocks_are_generated_from_the_recorded_runs_and_go_stale_when_a_record_changes(tmp_path):
    recorded(tmp_path, "demo", accuracy=0.9, tables={"T1": {"row": {"col": 0.5}}, "T2": {"r": {"c": 1}}})
    page = tmp_path / "docs" / "demo.md"
    page.write_text(
        '# Demo\n\n<!-- results: demo tables="T2" -->\ntyped by hand\n<!-- /results -->\n\nafter\n'
    )
    (tmp_path / "docs" / "configuration.md").write_text(docgen.configuration_markdown())
    assert docgen.stale_pages(tmp_path) == ["docs/demo.md"]
    assert docgen.write_pages(tmp_path) == ["docs/demo.md"]
    text = page.read_text()
    assert "typed by hand" not in text and text.endswith("<!-- /results -->\n\nafter\n")
    assert "Recorded with `fedsec run demo` (records: `docs/results/demo/`)." in text
    assert "| demo | 3 | 0.9000 | 9.5000 |" in text
    assert "**T2**" in text and "| r | 1 |" in text and "**T1**" not in text
    assert docgen.stale_pages(tmp_path) == []
    summary = tmp_path / "docs" / "results" / "demo" / "summary.json"
    summary.write_text(summary.read_text().replace("0.9", "0.8"))
    assert docgen.stale_pages(tmp_path) == ["docs/demo.md"]


def test_a_results_block_naming_a_missing_table_or_record_fails_with_what_exists(tmp_path):
    recorded(tmp_path, "demo", accuracy=0.9, tables={"T1": {}})
    with pytest.raises(KeyError, match="has no table 'T9'; it has: T1"):
        docgen.results_block("demo", ["T9"], tmp_path)
    with pytest.raises(FileNotFoundError, match=r"docs/results/none holds no summary\.json"):
        docgen.results_block("none", None, tmp_path)


def test_bench_blocks_hold_the_recorded_bench_tables(tmp_path):
    from tests.simulations.test_bench import _document

    base = tmp_path / "docs" / "results" / "bench-demo"
    base.mkdir(parents=True)
    (base / "bench.json").write_text(json.dumps(_document()))
    (base / "command.txt").write_text("fedsec bench --quick\n")
    (tmp_path / "docs" / "configuration.md").write_text(docgen.configuration_markdown())
    page = tmp_path / "docs" / "benchmarks.md"
    page.write_text("# B\n\n<!-- bench: bench-demo -->\nold numbers\n<!-- /bench -->\n")
    assert docgen.write_pages(tmp_path) == ["docs/benchmarks.md"]
    text = page.read_text()
    assert "old numbers" not in text and "Recorded with `fedsec bench --quick`" in text
    assert "| cnn | 100 | 1 | krum+guard | 50.0 |" in text and "- a note" in text
    with pytest.raises(FileNotFoundError, match=r"docs/results/none holds no bench\.json"):
        docgen.bench_block("none", tmp_path)


def test_a_readme_bench_table_shows_one_aggregation_cell_of_the_recorded_bench(tmp_path):
    from tests.simulations.test_bench import _document

    base = tmp_path / "docs" / "results" / "bench-demo"
    base.mkdir(parents=True)
    (base / "bench.json").write_text(json.dumps(_document()))
    (base / "command.txt").write_text("fedsec bench\n")
    readme = '<!-- bench-table: bench-demo model="cnn" clients="100" -->\nold\n<!-- /bench-table -->\n'
    text = docgen.fill_results(readme, tmp_path)
    assert "old" not in text and "Recorded with `fedsec bench`" in text
    assert "over Flower's FedAvg (20 ms)" in text and "2 cores (Test CPU)" in text
    assert "| krum | 50 | 5.00 | 80 | 60 | 2.5 | – | 1.2 | – |" in text.splitlines()
    assert "bulyan" not in text  # its cell is at 200 clients
    with pytest.raises(KeyError, match="no aggregation cell cnn x20 at 1 thread"):
        docgen.bench_table("bench-demo", "cnn", 20, tmp_path)


def test_per_round_tables_give_runs_repeated_over_seeds_one_mean_std_column():
    runs = [
        ("dba/layered/seed=1", {}, [{"round": 1, "asr": 0.2}, {"round": 2, "asr": 0.4}]),
        ("dba/layered/seed=2", {}, [{"round": 1, "asr": 0.4}, {"round": 2, "asr": 0.4}]),
        ("dba/flame", {}, [{"round": 1, "asr": 0.9}]),
    ]
    lines = docgen.per_round_table(runs, "asr").splitlines()
    assert lines[0] == "| round | dba/layered | dba/flame |"
    assert lines[2] == "| 1 | 0.3000 ± 0.1414 (n=2) | 0.9000 |"
    assert lines[3] == "| 2 | 0.4000 ± 0.0000 (n=2) | – |"


def test_a_readme_headline_cell_shows_the_recorded_cells_and_goes_stale_with_its_record(tmp_path):
    cell = {"mean": 0.4712, "std": 0.0577, "n": 3, "values": [0.42, 0.53, 0.47]}
    recorded(tmp_path, "demo", accuracy=0.9, tables={"T": {"FL": {"BIM": cell, "clean": 0.938}}})
    (tmp_path / "docs" / "configuration.md").write_text(docgen.configuration_markdown())
    readme = tmp_path / "README.md"
    readme.write_text(
        '| a | <!-- headline: demo table="T" cells="FL::BIM=FL BIM;FL::clean" -->old<!-- /headline --> |\n'
    )
    assert docgen.write_pages(tmp_path) == ["README.md"]
    assert "-->FL BIM 0.47 ± 0.06; FL clean 0.94 (1 / 3 seeds)<!--" in readme.read_text()
    assert readme.read_text().count("\n") == 1  # still one table row
    summary = tmp_path / "docs" / "results" / "demo" / "summary.json"
    summary.write_text(summary.read_text().replace("0.4712", "0.5"))
    assert docgen.stale_pages(tmp_path) == ["README.md"]
    with pytest.raises(KeyError, match=r"no cell \('FL', 'PGD'\)"):
        docgen.headline("demo", "T", "FL::PGD", tmp_path)
