"""Scenario files: one TOML file of run-config keys per experiment.

A scenario is a flat TOML table of kebab-case run-config keys (the keys of
:class:`fedsec.config.RunConfig`); its first comment line is its one-line
description.  Because every key is a run-config key, ``flwr run . --run-config
simulations/scenarios/NAME.toml`` accepts any scenario file.

A scenario may run several times, which only ``fedsec run`` does (the
ServerApp refuses such a file with one line pointing there):
``sweep = "KEY=V1,V2"`` runs once per value of one key; ``variants =
"NAME.variants.toml"`` names a file (next to the scenario) of ``[variants.NAME]``
tables, each one run's overrides (e.g. the paper's PK / LK / SNAL2 / SAnoDC
attackers), which set the run's ``variant`` key to NAME so tables name their
rows after it, and optional ``[defenses.NAME]`` tables that cross them with
defenses (one run per pair, the ``defense`` key naming the column), for
attack × defense grids.  A scenario file of one's own may also hold those
tables inline (then only ``fedsec run`` reads it).  ``SCENARIO`` on the
command line is a file name here (without ``.toml``) or a path to any TOML file.

``seeds = "42,1,2"`` (or ``fedsec run --seeds``) repeats every run at each seed;
the summary's tables then hold mean ± std over the seeds.  The variants file (or
the scenario, inline) may also hold the paper's published numbers as
``[paper."TABLE"."ROW"]`` tables of ``COLUMN = number``; reports show them in a
``COLUMN (paper)`` column beside fedsec's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedsec.config import RunConfig
from fedsec.config_values import ConfigValue
from fedsec.errors import ConfigError, UnknownNameError

SCENARIO_DIR = Path(__file__).resolve().parent


SWEEP_KEY = "sweep"
SWEEP_TABLE_KEY = "sweep-table"
VARIANTS_KEY = "variants"
DEFENSES_KEY = "defenses"
SEEDS_KEY = "seeds"
PAPER_KEY = "paper"

#: ``{table: {row: {column: number}}}``: a paper's published numbers.
PaperTables = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class Sweep:
    """Runs of one scenario: one per value of ``key``, or one per named variant.

    ``sweep = "num-clients=10,20,30"`` gives ``key="num-clients"``; ``[variants.PK]``
    tables give ``key="variant"``, ``values`` the variant names and ``variants``
    each one's overrides.
    """

    key: str
    values: tuple[ConfigValue, ...]
    table: str
    variants: tuple[tuple[str, dict[str, ConfigValue]], ...] = ()

    def label(self, value: ConfigValue) -> str:
        return str(value) if self.variants else f"{self.key}={value}"

    def overrides(self, value: ConfigValue) -> dict[str, ConfigValue]:
        """The run-config values of the run for ``value`` (a single run: no sweep or variants left)."""
        single: dict[str, ConfigValue] = {SWEEP_KEY: "", VARIANTS_KEY: "", SEEDS_KEY: ""}
        if self.variants:
            return {**single, **dict(self.variants)[str(value)]}
        return {**single, self.key: value}


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file (``sweep`` and ``sweep-table`` are scenario-level, not run-config keys)."""

    name: str
    path: Path
    description: str
    values: dict[str, ConfigValue]
    sweep: Sweep | None = None
    seeds: tuple[int, ...] = ()
    paper: PaperTables = field(default_factory=dict)

    def config(self, overrides: dict[str, ConfigValue] | None = None) -> RunConfig:
        """The validated run config: defaults, then the file, then ``overrides``."""
        merged: dict[str, Any] = {"scenario": self.name, **self.values, **(overrides or {})}
        return RunConfig.from_run_config(merged)


#: Suffix of the files that hold a scenario's ``[variants.*]`` / ``[defenses.*]`` tables.
VARIANTS_SUFFIX = ".variants.toml"


def available() -> dict[str, Path]:
    """Scenario names shipped with fedsec, mapped to their files."""
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.toml")) if not p.name.endswith(VARIANTS_SUFFIX)}


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
    variants, defenses, paper = _variant_tables(values, path)
    nested = [k for k, v in values.items() if isinstance(v, dict | list)]
    if nested:
        raise ConfigError(
            f"scenario {path}: keys must be flat run-config values, not tables/arrays: {nested}"
        )
    table = values.get(SWEEP_TABLE_KEY)
    if variants is not None:
        if values.get(SWEEP_KEY):
            raise ConfigError(f"scenario {path}: use either 'sweep' or [variants.*], not both")
        sweep: Sweep | None = _parse_variants(variants, defenses, table, path)
    else:
        if defenses is not None:
            raise ConfigError(f"scenario {path}: [defenses.*] needs [variants.*] (rows) as well")
        sweep = _parse_sweep(values.get(SWEEP_KEY) or None, table, path)
    scenario = Scenario(
        name=str(values.get("scenario", path.stem)),
        path=path,
        description=_description(text),
        values=values,
        sweep=sweep,
        seeds=parse_seeds(values.get(SEEDS_KEY) or "", f"scenario {path}"),
        paper=_parse_paper(paper, path),
    )
    scenario.config()  # validate now, with the file's name in any error
    _check_runs(scenario, f"scenario {path}")
    return scenario


def _check_runs(scenario: Scenario, where: str) -> None:
    """Validate the config of every run of ``scenario``'s sweep; errors start with ``where``."""
    if scenario.sweep is None:
        return
    for value in scenario.sweep.values:
        try:
            scenario.config(scenario.sweep.overrides(value))
        except ConfigError as error:
            raise ConfigError(f"{where}, {scenario.sweep.label(value)}: {error}") from None


def _variant_tables(values: dict[str, Any], path: Path) -> tuple[object, object, object]:
    """The ``[variants.*]``, ``[defenses.*]`` and ``[paper.*]`` tables: inline, or in the file
    ``variants`` names."""
    inline_variants = values.pop(VARIANTS_KEY, None) if isinstance(values.get(VARIANTS_KEY), dict) else None
    inline_defenses = values.pop(DEFENSES_KEY, None)
    inline_paper = values.pop(PAPER_KEY, None)
    reference = values.get(VARIANTS_KEY)
    if not reference:
        return inline_variants, inline_defenses, inline_paper
    if inline_variants is not None or inline_defenses is not None or inline_paper is not None:
        raise ConfigError(f"scenario {path}: give [variants.*] inline or in {reference!r}, not both")
    if not isinstance(reference, str):
        raise ConfigError(f"scenario {path}: 'variants' must name a file, got {reference!r}")
    companion = (path.parent / reference).resolve()
    if not companion.is_file():
        raise ConfigError(f"scenario {path}: the variants file {companion} does not exist")
    try:
        tables = tomllib.loads(companion.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"scenario {companion}: not valid TOML ({error})") from None
    unknown = sorted(set(tables) - {VARIANTS_KEY, DEFENSES_KEY, PAPER_KEY})
    if unknown or VARIANTS_KEY not in tables:
        raise ConfigError(
            f"scenario {companion}: holds [variants.*], [defenses.*] and [paper.*] tables only, got {unknown}"
        )
    return tables[VARIANTS_KEY], tables.get(DEFENSES_KEY), tables.get(PAPER_KEY)


def parse_seeds(text: object, where: str) -> tuple[int, ...]:
    """``"42,1,2"`` → ``(42, 1, 2)``: distinct non-negative integers ("" → no seeds)."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ConfigError(f"{where}: 'seeds' must look like \"42,1,2\", got {text!r}")
    seeds: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not item.isdigit():
            raise ConfigError(f"{where}: 'seeds' must be non-negative integers like \"42,1,2\", got {item!r}")
        if int(item) in seeds:
            raise ConfigError(f"{where}: seed {item} is listed twice in 'seeds'")
        seeds.append(int(item))
    return tuple(seeds)


def _parse_paper(tables: object, path: Path) -> PaperTables:
    """``[paper."TABLE"."ROW"]`` tables of ``COLUMN = number`` (a paper's published numbers)."""
    if tables is None:
        return {}
    shape = f'scenario {path}: [paper] must be tables [paper."TABLE"."ROW"] of COLUMN = number'
    if not isinstance(tables, dict):
        raise ConfigError(shape)
    paper: PaperTables = {}
    for table, rows in tables.items():
        if not isinstance(rows, dict):
            raise ConfigError(shape)
        for row, cells in rows.items():
            if not isinstance(cells, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in cells.values()
            ):
                raise ConfigError(f"{shape}; got [paper.{table!r}.{row!r}] = {cells!r}")
            paper.setdefault(str(table), {})[str(row)] = {str(c): float(v) for c, v in cells.items()}
    return paper


def _flat_tables(tables: object, kind: str, path: Path) -> list[tuple[str, dict[str, ConfigValue]]]:
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"scenario {path}: [{kind}.NAME] must be tables of run-config keys")
    runs: list[tuple[str, dict[str, ConfigValue]]] = []
    for name, overrides in tables.items():
        if not isinstance(overrides, dict) or any(isinstance(v, dict | list) for v in overrides.values()):
            raise ConfigError(f"scenario {path}: {kind} {name!r} must be a flat table of run-config keys")
        runs.append((str(name), dict(overrides)))
    return runs


def _parse_variants(variants: object, defenses: object, table: object, path: Path) -> Sweep:
    """Rows ``[variants.X]``, optionally crossed with columns ``[defenses.Y]`` (runs ``X/Y``)."""
    rows = [(name, {**o, "variant": name}) for name, o in _flat_tables(variants, "variants", path)]
    if defenses is not None:
        columns = _flat_tables(defenses, "defenses", path)
        rows = [
            (f"{row}/{column}", {**row_over, **column_over, "defense": column})
            for row, row_over in rows
            for column, column_over in columns
        ]
    return Sweep(
        key="variant",
        values=tuple(name for name, _ in rows),
        table=str(table or "variants"),
        variants=tuple(rows),
    )


def with_sweep(scenario: Scenario, text: str) -> Scenario:
    """``scenario`` swept as ``sweep = TEXT`` says (``--set sweep=KEY=V1,V2``), instead of its own runs."""
    sweep = _parse_sweep(text, scenario.values.get(SWEEP_TABLE_KEY), scenario.path)
    assert sweep is not None
    values = {k: v for k, v in scenario.values.items() if k not in (SWEEP_KEY, VARIANTS_KEY)}
    swept = replace(scenario, values=values, sweep=sweep)
    _check_runs(swept, f"--set sweep={text}")
    return swept


def _parse_sweep(text: object, table: object, path: Path) -> Sweep | None:
    if text is None:
        return None
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"scenario {path}: 'sweep' must look like \"KEY=V1,V2,...\", got {text!r}")
    from fedsec.config_values import parse_assignment

    key, _, raw_values = text.partition("=")
    values = tuple(parse_assignment(f"{key}={v}")[1] for v in raw_values.split(",") if v.strip())
    if not values:
        raise ConfigError(f"scenario {path}: 'sweep' lists no values")
    return Sweep(key=key.strip(), values=values, table=str(table or f"sweep over {key.strip()}"))
