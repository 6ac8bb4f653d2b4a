"""The runs a ``fedsec run`` or ``fedsec deploy`` command asks for, validated before any process starts.

:func:`prepare_runs` turns a scenario and the command's overrides into one config per run
(its sweep's values and seeds, each in its own output directory); :func:`prepare` is the
single run that ``fedsec deploy`` takes; :func:`resumed_config` is the config of the
interrupted run that ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from fedsec.config import RunConfig
from fedsec.config_values import ConfigValue, parse_assignment
from fedsec.errors import FedsecError
from fedsec.results import SUMMARY_FILE, read_summary
from simulations.scenarios import (
    SEEDS_KEY,
    SWEEP_KEY,
    Scenario,
    load_scenario,
    parse_seeds,
    with_sweep,
)


def _overrides(args: argparse.Namespace) -> dict[str, ConfigValue]:
    overrides: dict[str, ConfigValue] = dict(parse_assignment(item) for item in args.set or [])
    if getattr(args, "clients", None) is not None:
        overrides["num-clients"] = args.clients
    if getattr(args, "rounds", None) is not None:
        overrides["num-server-rounds"] = args.rounds
    return overrides


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    """The run's own, fresh output directory (``--out`` or ``runs/<scenario>-<time>``).

    An existing non-empty ``--out`` is refused (records of two runs must never mix)
    unless ``--force`` replaces it; a file there is refused.
    """
    if not args.out:
        return (Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FedsecError(f"--out {out} is a file; give a directory")
    keep = getattr(args, "keep_completed", False)
    if keep and getattr(args, "force", False):
        raise FedsecError("give either --force (replace --out) or --keep-completed (reuse its finished runs)")
    if out.is_dir() and any(out.iterdir()) and not keep:
        if not getattr(args, "force", False):
            raise FedsecError(
                f"--out {out} is not empty; choose a new directory, add --keep-completed to reuse its "
                "finished runs of the same configs, or --force to replace it"
            )
        shutil.rmtree(out)
    return out


@dataclass(frozen=True)
class Plan:
    """The runs ``fedsec run`` will make: one config per run, and where the sweep's summary goes."""

    scenario: Scenario
    configs: list[RunConfig]
    base: Path
    values: list[ConfigValue]
    seeds: tuple[int, ...] = ()

    @property
    def summarised(self) -> bool:
        """Whether the runs get a summary of their own (a sweep, variants, or several seeds)."""
        return self.scenario.sweep is not None or bool(self.seeds)


def prepare_runs(args: argparse.Namespace, *, nodes: int | None = None) -> Plan:
    """Scenario + overrides → validated configs whose names all resolve (before any process starts).

    One config, or one per value of the scenario's sweep (each in ``OUT/LABEL``);
    ``--only PATTERN,...`` keeps the sweep runs whose label matches a shell-style pattern.
    With seeds (``--seeds``, ``--set seeds=...`` or the scenario's ``seeds``), each of those runs
    once per seed, in ``OUT[/LABEL]/seed=S``.
    """
    from simulations.validate import validate

    scenario = load_scenario(args.scenario)
    overrides = _overrides(args)
    swept = overrides.pop(SWEEP_KEY, "")
    if swept:  # --set sweep=KEY=V1,V2: these runs instead of the scenario's own
        scenario = with_sweep(scenario, str(swept))
    seeds = scenario.seeds
    for where, text in (
        ("--set seeds", overrides.pop(SEEDS_KEY, "")),
        ("--seeds", getattr(args, "seeds", "")),
    ):
        if text not in ("", None):
            seeds = parse_seeds(text, where)
    if seeds and "seed" in overrides:
        raise FedsecError("give either --set seed=N (one run) or --seeds (several), not both")
    if nodes is not None:
        overrides["num-clients"] = nodes
    out = _out_dir(args, scenario.name)
    values: list[ConfigValue] = []
    if scenario.sweep is None:
        variants = [(out, overrides)]
    else:
        sweep = scenario.sweep
        values = list(sweep.values)
        only = [p.strip() for p in (getattr(args, "only", None) or "").split(",") if p.strip()]
        if only:
            values = [v for v in values if any(fnmatch.fnmatchcase(sweep.label(v), p) for p in only)]
            if not values:
                labels = ", ".join(sweep.label(v) for v in sweep.values)
                raise FedsecError(f"--only {args.only!r} matches none of the runs: {labels}")
        # --set wins over a variant's own keys (e.g. --set layered-clip=false in every variant)
        variants = [(out / sweep.label(v), {**sweep.overrides(v), **overrides}) for v in values]
    if seeds:
        variants = [
            (run_out / f"seed={seed}", {**run_values, SEEDS_KEY: "", "seed": seed})
            for run_out, run_values in variants
            for seed in seeds
        ]
    configs = []
    for run_out, run_values in variants:
        config = scenario.config(run_values)
        if config.num_clients < 1:
            raise FedsecError(
                "num-clients must be >= 1 for `fedsec run`/`fedsec deploy` (they start that many nodes); "
                "set it with --clients N"
            )
        validate(config)
        configs.append(config.replace(out_dir=str(run_out)))
    return Plan(scenario=scenario, configs=configs, base=out, values=values, seeds=seeds)


def prepare(args: argparse.Namespace, *, nodes: int | None = None) -> RunConfig:
    """The single run of a scenario (sweeps run only through ``fedsec run``)."""
    plan = prepare_runs(args, nodes=nodes)
    if plan.summarised:
        raise FedsecError(
            f"scenario {plan.scenario.name} runs several variants or seeds; run it with `fedsec run`"
        )
    return plan.configs[0]


def resumed_config(args: argparse.Namespace) -> RunConfig:
    """The config of the interrupted run in ``--resume OUT`` (what it submitted), set to resume."""
    import tomllib

    if args.scenario or args.set or getattr(args, "only", None) or getattr(args, "seeds", ""):
        raise FedsecError(
            "--resume continues a run as it was configured: give no scenario, --set, --only or --seeds"
        )
    out = Path(args.resume).expanduser().resolve()
    submitted = out / "run_config.toml"
    if not submitted.is_file():
        raise FedsecError(f"{out} holds no run to resume (no run_config.toml)")
    if (out / SUMMARY_FILE).exists() and read_summary(out).get("status") == "completed":
        raise FedsecError(f"the run in {out} already completed; nothing to resume")
    if (out / SUMMARY_FILE).exists():
        (
            out / SUMMARY_FILE
        ).unlink()  # the summary of the interrupted attempt; the resumed run writes its own
    config = RunConfig.from_run_config(tomllib.loads(submitted.read_text()))
    from simulations.validate import validate

    validate(config)
    return config.replace(resume=True, out_dir=str(out))
