"""``fedsec report --html``: the page's tables, curves, heatmaps and kept/dropped grids, and that a
browser (headless Chromium) renders it.

The runs are written by hand here (a grid of two attacks × two defenses, with per-round records),
so every number on the page is known.
"""

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from simulations.cli import main
from simulations.html_report import render_html, write_html

CONFIG = {"num-clients": 4, "roles": "label-flip:3", "dataset": "synthetic", "model": "lenet"}


def write_run(path: Path, *, variant: str, defense: str, asr: float, accuracy: float) -> None:
    path.mkdir(parents=True)
    records = [{"round": 0, "accuracy": 0.1, "asr": 0.0}]
    for rnd in (1, 2):
        kept = ["0", "1", "2"] if defense == "layered" else ["0", "1", "2", "3"]
        records.append(
            {
                "round": rnd,
                "accuracy": accuracy * rnd / 2,
                "asr": asr * rnd / 2,
                "kept": {defense: kept},
                "update_stats": {str(c): {"norm": 1.0} for c in range(4)},
            }
        )
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {**CONFIG, "scenario": "grid", "variant": variant, "defense": defense}
    summary = {
        "scenario": "grid",
        "config": config,
        "rounds": 2,
        "final": records[-1],
        "seconds": 3.5,
        "tables": {"Final metrics": {f"{variant}/{defense}": {"accuracy": accuracy, "asr": asr}}},
    }
    (path / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    base = tmp_path / "grid"
    cells = {
        ("dba", "layered"): (0.02, 0.95),
        ("dba", "fedavg"): (0.9, 0.96),
        ("scale", "layered"): (0.05, 0.94),
    }
    for (variant, defense), (asr, accuracy) in cells.items():
        write_run(base / variant / defense, variant=variant, defense=defense, asr=asr, accuracy=accuracy)
    runs = [f"{v}/{d}" for v, d in cells]
    (base / "summary.json").write_text(json.dumps({"scenario": "grid", "runs": runs, "tables": {}}))
    return base


def test_the_page_holds_the_runs_curves_heatmaps_and_who_was_kept_with_attackers_marked(grid):
    page = render_html([grid])
    assert (
        page.startswith("<!DOCTYPE html>")
        and "<script" not in page
        and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    # one row per run with its final metrics
    assert re.search(r"<td>dba/fedavg</td><td>2</td><td>0\.9600</td><td>0\.9000</td>", page)
    # accuracy and ASR curves, one line per run (3 runs × 2 metrics)
    assert page.count('<polyline class="curve"') == 6
    assert "Backdoor attack success rate" in page
    # heatmap: attacks as rows, defenses as columns, a missing cell marked absent
    heat = page[page.index("final ASR</h3>") : page.index("final clean accuracy</h3>")]
    assert re.findall(r"<tr><td>(\w+)</td>", heat) == ["dba", "scale"]
    assert "0.900</td>" in heat and '<td class="absent">–</td>' in heat
    # the layered runs dropped client 3, which roles make the attacker
    grids = page[page.index("What the defenses kept") :]
    assert (
        grids.count('<td class="dropped attacker" title="dropped">A</td>') == 4
    )  # 2 layered runs × 2 rounds
    assert grids.count('<td class="kept attacker" title="kept">A</td>') == 2  # fedavg kept it both rounds
    assert "<details><summary>scale/layered</summary>" in page and "<td>label-flip:3</td>" in page


def test_report_html_writes_the_page_and_a_run_dir_without_records_is_refused(grid, tmp_path, capsys):
    out = tmp_path / "pages" / "grid.html"
    assert main(["report", str(grid), "--html", str(out)]) == 0
    assert out.read_text() == render_html([grid])
    assert f"wrote {out}" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"has no summary\.json"):
        write_html([tmp_path / "nothing"], tmp_path / "x.html")


SIZE = ["--window-size=1200,1600"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    """Debian's Chromium, installed with apt-get where it is missing and this process may install it."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            capture_output=True,
            timeout=900,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        found = shutil.which("chromium")
    if not found:
        pytest.skip("Chromium is not installed and could not be (apt-get install chromium, as root)")
    return found


def test_headless_chromium_renders_the_tables_curves_and_heatmap(grid, tmp_path):
    browser = chromium()
    page = write_html([grid], tmp_path / "report.html")
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, *profile, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<polyline") == 6 and dom.count('class="heatmap"') == 2
    assert "dba/fedavg" in dom and "What the defenses kept" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            *profile,
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1200, 1600)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_runs_repeated_over_seeds_become_one_mean_curve_each():
    from simulations.html_report import seed_curves

    curves = seed_curves(
        {
            "dba/layered/seed=1": [(1, 0.2), (2, 0.4)],
            "dba/layered/seed=2": [(1, 0.4), (2, 0.8)],
            "dba/flame": [(1, 0.5)],
        }
    )
    assert curves == {
        "dba/layered (mean of 2 seeds)": [(1, pytest.approx(0.3)), (2, pytest.approx(0.6))],
        "dba/flame": [(1, 0.5)],
    }
