"""Generated docs: the committed pages are what `fedsec docs` writes, and they cover the whole schema."""

import re
import shutil

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
