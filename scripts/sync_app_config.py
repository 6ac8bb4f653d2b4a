"""Rewrite pyproject.toml's [tool.flwr.app.config] from fedsec.config.RunConfig's defaults.

Flower refuses run-config keys that pyproject.toml does not list, so every key of
the schema must appear there with its default.  Run after adding a config key:

    .venv/bin/python scripts/sync_app_config.py
"""

from __future__ import annotations

from pathlib import Path

import tomli_w

from fedsec.config import RunConfig

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
HEADER = "[tool.flwr.app.config]\n"


def main() -> None:
    text = PYPROJECT.read_text()
    start = text.index(HEADER) + len(HEADER)
    end = text.index("\n# ----", start)
    lines = [tomli_w.dumps({key: value}).strip() for key, value in RunConfig.defaults().items()]
    PYPROJECT.write_text(text[:start] + "\n".join(lines) + "\n" + text[end:])


if __name__ == "__main__":
    main()
