"""Scenario files: one TOML file of run-config keys per experiment.

A scenario is a flat TOML table of kebab-case run-config keys (the keys of
:class:`fedsec.config.RunConfig`); its first comment line is its one-line
description.  ``SCENARIO`` on the command line is a file name here (without
``.toml``) or a path to any TOML file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsec.config import ConfigValue, RunConfig
from fedsec.errors import ConfigError, UnknownNameError

SCENARIO_DIR = Path(__file__).resolve().parent


SWEEP_KEY = "sweep"
SWEEP_TABLE_KEY = "sweep-table"


@dataclass(frozen=True)
class Sweep:
    """One run-config key swept over values (``sweep = "num-clients=10,20,30"``)."""

    key: str
    values: tuple[ConfigValue, ...]
    table: str

    def label(self, value: ConfigValue) -> str:
        return f"{self.key}={value}"


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file (``sweep`` and ``sweep-table`` are scenario-level, not run-config keys)."""

    name: str
    path: Path
    description: str
    values: dict[str, ConfigValue]
    sweep: Sweep | None = None

    def config(self, overrides: dict[str, ConfigValue] | None = None) -> RunConfig:
        """The validated run config: defaults, then the file, then ``overrides``."""
        merged: dict[str, Any] = {"scenario": self.name, **self.values, **(overrides or {})}
        return RunConfig.from_run_config(merged)


def available() -> dict[str, Path]:
    """Scenario names shipped with fedsec, mapped to their files."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.toml"))}


def _description(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break
    return ""


def load_scenario(name_or_path: str) -> Scenario:
    """Load a scenario by name (from ``simulations/scenarios/``) or by path."""
    shipped = available()
    if name_or_path in shipped:
        path = shipped[name_or_path]
    else:
        path = Path(name_or_path).expanduser()
        if path.suffix != ".toml" or not path.is_file():
            raise UnknownNameError(
                f"unknown scenario {name_or_path!r}; choose one of: {', '.join(shipped)} or give a .toml path"
            )
    text = path.read_text()
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"scenario {path}: not valid TOML ({error})") from None
    nested = [k for k, v in values.items() if isinstance(v, dict | list)]
    if nested:
        raise ConfigError(
            f"scenario {path}: keys must be flat run-config values, not tables/arrays: {nested}"
        )
    sweep = _parse_sweep(values.pop(SWEEP_KEY, None), values.pop(SWEEP_TABLE_KEY, None), path)
    scenario = Scenario(
        name=str(values.get("scenario", path.stem)),
        path=path,
        description=_description(text),
        values=values,
        sweep=sweep,
    )
    scenario.config()  # validate now, with the file's name in any error
    if sweep is not None:
        for value in sweep.values:
            scenario.config({sweep.key: value})
    return scenario


def _parse_sweep(text: object, table: object, path: Path) -> Sweep | None:
    if text is None:
        return None
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"scenario {path}: 'sweep' must look like \"KEY=V1,V2,...\", got {text!r}")
    from fedsec.config import parse_assignment

    key, _, raw_values = text.partition("=")
    values = tuple(parse_assignment(f"{key}={v}")[1] for v in raw_values.split(",") if v.strip())
    if not values:
        raise ConfigError(f"scenario {path}: 'sweep' lists no values")
    return Sweep(key=key.strip(), values=values, table=str(table or f"sweep over {key.strip()}"))
