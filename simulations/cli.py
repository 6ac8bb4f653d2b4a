"""The ``fedsec`` command line: run, deploy, list and report scenarios.

``fedsec run SCENARIO`` validates the scenario and overrides before anything
starts, runs it through ``flwr run`` on Flower's Ray simulation engine, shows
per-round progress, and prints the final table; ``fedsec deploy`` does the same
on Flower's deployment engine with SuperNodes on loopback.  Errors a user can
cause end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedsec.config import RunConfig
from fedsec.errors import FedsecError
from fedsec.results import (
    ACCURACY_PLOT,
    METRICS_FILE,
    SUMMARY_FILE,
    read_metrics,
    read_summary,
    write_atomically,
)
from simulations import launcher
from simulations.flower_session import FlowerSession
from simulations.html_report import REPORT_FILE, write_html
from simulations.plan import prepare, prepare_runs, resumed_config
from simulations.processes import LaunchError
from simulations.report import render_report
from simulations.scenarios import available, load_scenario
from simulations.sweep import completed_with, write_sweep_summary

EXIT_USAGE = 2
EXIT_FAILED = 1


def _follow(
    console: Console,
    config: RunConfig,
    run: Callable[..., launcher.RunOutcome],
    *,
    timeout: float = launcher.RUN_TIMEOUT,
    **kwargs: Any,
) -> int:
    console.print(
        f"[bold]fedsec[/bold] {config.scenario}: {config.num_clients} clients, strategy {config.strategy}, "
        f"model {config.model}, dataset {config.dataset}, {config.num_server_rounds} rounds"
    )
    console.print(f"records → {config.out_dir}")
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting Flower…", total=config.num_server_rounds)

        def on_round(record: dict[str, Any]) -> None:
            progress.update(
                task,
                completed=record["round"],
                description=f"round {record['round']}: accuracy {_number(record.get('accuracy'), '.4f')}",
            )

        def on_lost(name: str) -> None:
            console.print(f"[yellow]{name} exited; the run continues with the other nodes[/yellow]")

        out = Path(config.out_dir)
        try:
            outcome = run(config, on_round=on_round, on_lost=on_lost, timeout=timeout, **kwargs)
        except KeyboardInterrupt:
            close_unfinished(out, config, status="interrupted", reason="interrupted (SIGINT or SIGTERM)")
            raise
        except LaunchError as error:
            close_unfinished(out, config, status="failed", reason=str(error))
            raise
    print_final(console, out)
    console.print(
        f"run {outcome.run_id} {outcome.status} in {outcome.seconds:.1f}s "
        f"(startup {outcome.startup_seconds:.1f}s); records in {outcome.out_dir}"
    )
    report = write_html([out], out / REPORT_FILE)
    console.print(f"plot: {out / ACCURACY_PLOT}; report: {report}")
    return 0


def close_unfinished(out: Path, config: RunConfig, *, status: str, reason: str) -> None:
    """Give a run that ended early a ``summary.json`` saying how it ended (when the ServerApp wrote none)."""
    if (out / SUMMARY_FILE).exists() or not out.is_dir():
        return
    rounds = read_metrics(out) if (out / METRICS_FILE).exists() else []
    summary = {
        "scenario": config.scenario,
        "config": config.to_run_config(),
        "rounds": max((r["round"] for r in rounds), default=0),
        "final": dict(rounds[-1]) if rounds else {"accuracy": None, "loss": None},
        "status": status,
        "reason": reason,
    }
    write_atomically(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def _number(value: Any, fmt: str) -> str:
    """``value`` formatted, or ``-`` when it is missing or not a number (e.g. a non-finite loss)."""
    return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def print_final(console: Console, out_dir: Path) -> None:
    """Print the per-round table and the final figures of a finished run."""
    summary = read_summary(out_dir)
    table = Table(title=f"{summary['scenario']} — per round")
    for column in ("round", "accuracy", "loss", "seconds", "failures", "rejected"):
        table.add_column(column, justify="right")
    for record in read_metrics(out_dir):
        table.add_row(
            str(record["round"]),
            _number(record.get("accuracy"), ".4f"),
            _number(record.get("loss"), ".4f"),
            _number(record.get("seconds"), ".1f"),
            str(record.get("failures", 0)),
            str(len(record.get("rejected", {}))),
        )
    console.print(table)
    final = summary["final"]
    console.print(
        f"[bold]final accuracy {_number(final.get('accuracy'), '.4f')}[/bold], "
        f"loss {_number(final.get('loss'), '.4f')}; plot: {out_dir / 'accuracy.png'}"
    )


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    if args.resume:
        config = resumed_config(args)
        with _federation(args, config.out_dir, runs=1) as session:
            return _follow(console, config, launcher.run_simulation, timeout=args.timeout, session=session)
    if not args.scenario:
        raise FedsecError("give a scenario (fedsec scenarios lists them), or --resume OUT")
    plan = prepare_runs(args)
    todo = pending_runs(plan.configs, console) if getattr(args, "keep_completed", False) else plan.configs
    with _federation(args, plan.base, runs=len(todo)) as session:
        for config in todo:
            _follow(console, config, launcher.run_simulation, timeout=args.timeout, session=session)
    if plan.summarised:
        summary = write_sweep_summary(
            plan.scenario, plan.base, [Path(c.out_dir) for c in plan.configs], plan.values, plan.seeds
        )
        console.print(render_report([plan.base]), markup=False)
        console.print(f"sweep summary: {plan.base / 'summary.json'} ({len(summary['runs'])} runs)")
        console.print(f"report: {write_html([plan.base], plan.base / REPORT_FILE)}")
    return 0


def pending_runs(configs: Sequence[RunConfig], console: Console) -> list[RunConfig]:
    """``--keep-completed``: the configs whose directory holds no completed run of the same config."""
    todo = []
    for config in configs:
        if completed_with(config, launcher.run_config_text(config)):
            console.print(f"kept: {config.out_dir} (completed with the same run config)")
        else:
            todo.append(config)
    return todo


@contextlib.contextmanager
def _federation(args: argparse.Namespace, base: str | Path, *, runs: int) -> Iterator[FlowerSession | None]:
    """The Flower session the runs share: on ``--ray-address``'s cluster, or on a Ray head of its own
    when there is more than one run (start-up paid once); ``None`` (each run starts its own) otherwise.
    """
    address = getattr(args, "ray_address", None) or ""
    if not address and runs < 2:
        yield None
        return
    logs = Path(base) / "logs"
    with launcher.simulation_session(logs, ray_address=address, ray_head=not address) as session:
        yield session


def cmd_deploy(args: argparse.Namespace, console: Console) -> int:
    if args.nodes < 1:
        raise FedsecError(f"--nodes must be >= 1, got {args.nodes}")
    if args.resume:
        config = resumed_config(args)
    elif not args.scenario:
        raise FedsecError("give a scenario (fedsec scenarios lists them), or --resume OUT")
    else:
        config = prepare(args, nodes=args.nodes)
    if config.perfect_knowledge_hook:
        raise FedsecError(
            "perfect-knowledge-hook is a simulation-only hook (colluders recompute other partitions' "
            "updates); `fedsec deploy` refuses it — run the scenario with `fedsec run`"
        )
    certificates = Path(args.certificates).expanduser() if args.certificates else None
    return _follow(
        console,
        config,
        launcher.run_deployment,
        timeout=args.timeout,
        nodes=args.nodes,
        certificates=certificates,
        authenticate=args.auth,
    )


def cmd_scenarios(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="scenarios (simulations/scenarios/)")
    table.add_column("name")
    table.add_column("description")
    for name in available():
        table.add_row(name, load_scenario(name).description)
    console.print(table)
    return 0


def cmd_keys(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="run-config keys (override with --set KEY=VALUE)")
    for column in ("key", "default", "meaning"):
        table.add_column(column)
    for key, spec in RunConfig.keys().items():
        table.add_row(key, repr(spec.default), spec.metadata["help"])
    console.print(table)
    return 0


def cmd_docs(args: argparse.Namespace, console: Console) -> int:
    from simulations import docgen

    if args.check:
        stale = docgen.stale_pages()
        for page in stale:
            console.print(f"stale: {page} (run `make docs`)")
        return 1 if stale else 0
    for page in docgen.write_pages():
        console.print(f"wrote {page}")
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    out = Path(args.out).expanduser().resolve() if args.out else None
    runs = [Path(d) for d in args.runs]
    text = render_report(runs, out)
    if args.html:
        print(f"wrote {write_html(runs, Path(args.html).expanduser())}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if out is not None:
        print(f"wrote {out / 'report.md'} and {out / 'accuracy.png'}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from simulations import compare

    labels = tuple(args.labels.split(",", 1)) if args.labels else None
    if labels is not None and len(labels) != 2:
        raise FedsecError(f"--labels wants two names separated by a comma, got {args.labels!r}")
    comparison = compare.compare_dirs(
        Path(args.a), Path(args.b), rtol=args.rtol, labels=labels, matched_only=args.matched_only
    )
    sys.stdout.write(compare.markdown(comparison))
    if args.json:
        compare.write_json(comparison, Path(args.json).expanduser())
        console.print(f"wrote {args.json}")
    return 0 if comparison.agrees else EXIT_FAILED


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from fedsec.bench import SECTIONS
    from simulations.bench import run_bench

    only = [name.strip() for name in (args.sections or ",".join(SECTIONS)).split(",") if name.strip()]
    run_bench(quick=args.quick, out=Path(args.out), console=console, only=only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsec", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log fedsec's own steps")
    sub = parser.add_subparsers(dest="command", required=True)

    def scenario_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument(
            "scenario", nargs="?", help="scenario name (fedsec scenarios) or path to a .toml file"
        )
        command.add_argument(
            "--resume", metavar="OUT", help="continue the interrupted run in OUT from its last complete round"
        )
        command.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a run-config key")
        command.add_argument("--rounds", type=int, help="shorthand for --set num-server-rounds=N")
        command.add_argument("--out", help="output directory, new or empty (default: runs/<scenario>-<time>)")
        command.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
        command.add_argument(
            "--timeout",
            type=float,
            default=launcher.RUN_TIMEOUT,
            metavar="SECONDS",
            help=f"stop waiting for a run after this long (default {launcher.RUN_TIMEOUT:.0f})",
        )
        return command

    run = scenario_command("run", "run a scenario on Flower's Ray simulation engine")
    run.add_argument(
        "--keep-completed",
        action="store_true",
        help="with a non-empty --out (an interrupted sweep): reuse each run there that completed with the "
        "same run config, rerun the rest",
    )
    run.add_argument("--clients", type=int, help="shorthand for --set num-clients=N")
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run on this existing Ray cluster (what `ray start --head` prints) instead of starting Ray",
    )
    run.add_argument(
        "--only", metavar="PATTERN,...", help="run only the sweep runs whose label matches (e.g. 'dba/*')"
    )
    run.add_argument(
        "--seeds",
        metavar="S1,S2,...",
        default="",
        help="run every run at each of these seeds; tables report mean ± std (e.g. 42,1,2)",
    )
    run.set_defaults(handler=cmd_run)
    deploy = scenario_command("deploy", "run a scenario with a SuperLink and N SuperNodes on loopback")
    deploy.add_argument("--nodes", type=int, required=True, help="number of SuperNodes to start")
    deploy.add_argument(
        "--certificates",
        metavar="DIR",
        help="use TLS with the files scripts/make_certificates.sh made in DIR",
    )
    deploy.add_argument(
        "--auth", action="store_true", help="admit only registered SuperNodes (needs --certificates)"
    )
    deploy.set_defaults(handler=cmd_deploy)
    sub.add_parser("scenarios", help="list the scenario files").set_defaults(handler=cmd_scenarios)
    sub.add_parser("keys", help="list every run-config key with its default").set_defaults(handler=cmd_keys)
    docs = sub.add_parser("docs", help="regenerate the generated pages of docs/ (configuration.md)")
    docs.add_argument("--check", action="store_true", help="only say which pages are stale; exit 1 if any")
    docs.set_defaults(handler=cmd_docs)
    report = sub.add_parser("report", help="render runs into Markdown tables and plots")
    report.add_argument("runs", nargs="+", help="run output directories")
    report.add_argument("--out", help="also write report.md and accuracy.png to this directory")
    report.add_argument(
        "--html", metavar="FILE", help="write one self-contained HTML page (tables, curves, heatmaps) instead"
    )
    report.set_defaults(handler=cmd_report)
    compare = sub.add_parser(
        "compare", help="say whether two records of the same runs agree, bit for bit or within --rtol"
    )
    compare.add_argument(
        "a", help="a run directory, or a directory of runs (sweep, seeds, docs/results/NAME)"
    )
    compare.add_argument("b", help="the same runs recorded again (matched by their path below A and B)")
    compare.add_argument(
        "--rtol",
        type=float,
        default=1e-6,
        help="largest relative difference of a number still counted as agreeing (default 1e-6)",
    )
    compare.add_argument(
        "--matched-only",
        action="store_true",
        help="compare the runs found in both A and B; runs in only one are counted, not failed "
        "(e.g. A = docs/results, B = a few of its runs re-run)",
    )
    compare.add_argument("--labels", metavar="A,B", help="names for A and B in the table and the JSON")
    compare.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    compare.set_defaults(handler=cmd_compare)
    bench = sub.add_parser("bench", help="time rounds, defenses and attacks against their references")
    bench.add_argument("--quick", action="store_true", help="small sizes; finishes in under 5 minutes")
    bench.add_argument(
        "--out", default="bench", help="directory for bench.json and bench.md (default: bench/)"
    )
    bench.add_argument(
        "--sections",
        default="",
        metavar="NAMES",
        help="run only these sections, comma-separated (simulation, startup, aggregation, attacks, "
        "memory, imports, scale); default: all",
    )
    bench.set_defaults(handler=cmd_bench)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    """The first SIGINT/SIGTERM stops the run; the ones after it are ignored while cleanup finishes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedsec`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    console = Console(stderr=False, highlight=False)
    handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    # `kill` stops the Flower processes too, like Ctrl-C; the handlers are restored on return
    try:
        return int(args.handler(args, console))
    except LaunchError as error:
        print(f"fedsec: run failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (FedsecError, FileNotFoundError, ValueError) as error:
        print(f"fedsec: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # SIGINT/SIGTERM stay ignored: a second Ctrl-C while the process exits must not kill it mid-way
        print("fedsec: interrupted; Flower processes stopped", file=sys.stderr)
        return 130
    finally:
        if signal.getsignal(signal.SIGINT) is _interrupt:  # not interrupted: give callers their handlers back
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
