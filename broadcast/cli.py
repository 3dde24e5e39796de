"""The ``paxos`` command line."""

from __future__ import annotations

import importlib
import importlib.metadata
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from broadcast import tracefile
from broadcast.spec import ConfigError
from paxos.sim.node import ReplicaFactory
from paxos.sim.runner import DEFAULT_FAULT_TICKS, SimConfig, SimResult, default_replica_factory, run

#: Failing seeds shown in full (the rest are listed by number).
_SHOWN_FAILURES = 20
#: Violations shown per failing seed.
_SHOWN_VIOLATIONS = 8


class _OneLineErrors(click.Group):
    """A group whose every user error (bad option, bad value, bad config) is one line.

    Click prints usage text before a usage error; operators scripting the CLI
    get ``Error: ...`` alone on stderr and a non-zero exit (2 for usage, 1 else).
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except ConfigError as exc:  # a configuration problem found outside option parsing
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


#: The distribution whose version ``paxos --version`` prints.
DISTRIBUTION = "paxos-broadcast"


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise click.ClickException(
            f"cannot tell the version: the {DISTRIBUTION} package is not installed"
        ) from None
    click.echo(f"paxos {version}")
    ctx.exit()


@click.group(cls=_OneLineErrors)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version and exit.",
)
def main() -> None:
    """Multi-Paxos FIFO total-order broadcast: nodes, clients and a fault simulator.

    Every --cluster SPEC option defaults to the PAXOS_CLUSTER environment
    variable; an explicit --cluster wins.
    """


@dataclass(frozen=True)
class _Job:
    """One seed to run; plain data, so that it pickles into worker processes."""

    seed: int
    nodes: int
    ticks: int
    trace: bool
    replica: str | None
    #: Fault rates fixed on the command line: (FaultRates field, value).
    overrides: tuple[tuple[str, float], ...] = ()
    clients: int | None = None
    commands: int | None = None
    outstanding: int | None = None
    #: Record the run's structured events (--trace-json).
    events: bool = False


def _load_replica(spec: str) -> ReplicaFactory:
    """``module:attr`` -> the replica class (or factory) it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected module:attr, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to the caller import
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def _run_job(job: _Job) -> SimResult:
    factory = default_replica_factory if job.replica is None else _load_replica(job.replica)
    return run(
        SimConfig(
            seed=job.seed,
            nodes=job.nodes,
            fault_ticks=job.ticks,
            trace=job.trace,
            replica_factory=factory,
            overrides=job.overrides,
            clients=job.clients,
            commands_per_client=job.commands,
            outstanding=job.outstanding,
            events=job.events,
        )
    )


def _results(jobs: Iterable[_Job], workers: int) -> Iterator[tuple[_Job, SimResult]]:
    """Results in seed order, whether computed here or in worker processes."""
    if workers <= 1:
        for job in jobs:
            yield job, _run_job(job)
        return
    # spawn: a clean interpreter per worker, same behaviour on every platform.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending: list[tuple[_Job, Any]] = []
        for job in jobs:
            pending.append((job, pool.apply_async(_run_job, (job,))))
            if len(pending) >= 4 * workers:
                done, result = pending.pop(0)
                yield done, result.get()
        for done, result in pending:
            yield done, result.get()


_OPTION_OF_FIELD = {
    "crash_rate": "--crash-rate",
    "tail": "--delay-tail",
    "tail_max_ticks": "--tail-ticks",
    "pause_rate": "--pause-rate",
}


def _replay_command(job: _Job) -> str:
    command = f"paxos sim --seed {job.seed} --nodes {job.nodes} --ticks {job.ticks}"
    for name, value in job.overrides:
        command += f" {_OPTION_OF_FIELD[name]} {value:g}"
    for option, count in (
        ("--clients", job.clients),
        ("--commands", job.commands),
        ("--outstanding", job.outstanding),
    ):
        if count is not None:
            command += f" {option} {count}"
    if job.replica is not None:
        command += f" --replica {job.replica}"
    return command + " --trace"


class _Progress:
    """One line updated in place on a terminal; a line every ~10% otherwise (every 500
    seeds when the total is not known: a time budget)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failing = 0
        self.tty = sys.stderr.isatty()
        self.step = max(1, total // 10) if total else 500
        self.start = time.monotonic()

    def update(self, result: SimResult) -> None:
        self.done += 1
        self.failing += not result.ok
        if self.total == 1:
            return
        of = f"/{self.total}" if self.total else ""
        line = (
            f"{self.done}{of} seeds, {self.failing} failing, "
            f"{time.monotonic() - self.start:.1f}s"
        )
        if self.tty:
            click.echo(f"\r{line}", nl=self.done == self.total, err=True)
        elif self.done % self.step == 0 or self.done == self.total:
            click.echo(line, err=True)


@main.command()
@click.option("--seeds", type=click.IntRange(min=1), help="Number of seeds to run [default: 100].")
@click.option(
    "--seed", type=click.IntRange(min=0), help="Run this seed only (with --seeds: the first seed)."
)
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option(
    "--ticks",
    type=click.IntRange(min=0),
    default=DEFAULT_FAULT_TICKS,
    show_default=True,
    help="Length of the fault phase.",
)
@click.option("--trace", is_flag=True, help="Print the run's trace (one seed only).")
@click.option(
    "--trace-json",
    "trace_json",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the run's events to FILE for `paxos viz` (one seed only).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Worker processes [default: number of CPUs]. Results do not depend on it.",
)
@click.option(
    "--replica",
    metavar="MODULE:ATTR",
    help="Simulate this Replica class instead of paxos.multi.replica.Replica "
    "(e.g. a mutant with a planted bug).",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Run seeds (from --seed, or 1) until this much time is spent, instead of --seeds.",
)
@click.option("--crash-rate", type=click.FloatRange(0, 1), help="Per-node, per-tick crash "
              "probability [default: drawn per seed].")
@click.option("--delay-tail", type=click.FloatRange(0, 1), help="Probability that a message is "
              "delayed far beyond an election timeout [default: drawn per seed].")
@click.option("--tail-ticks", type=click.IntRange(min=1), help="The longest such delay.")
@click.option("--pause-rate", type=click.FloatRange(0, 1), help="Per-node, per-tick probability "
              "that a node pauses [default: drawn per seed].")
@click.option("--clients", type=click.IntRange(1, 64), help="Clients [default: drawn per seed].")
@click.option("--commands", type=click.IntRange(0), help="Commands per client [default: drawn].")
@click.option("--outstanding", type=click.IntRange(1), help="Unacknowledged commands a client "
              "may have [default: drawn per seed].")
def sim(
    seeds: int | None,
    seed: int | None,
    nodes: int,
    ticks: int,
    trace: bool,
    trace_json: Path | None,
    jobs: int | None,
    replica: str | None,
    minutes: float | None,
    crash_rate: float | None,
    delay_tail: float | None,
    tail_ticks: int | None,
    pause_rate: float | None,
    clients: int | None,
    commands: int | None,
    outstanding: int | None,
) -> None:
    """Deterministic fault simulation: crashes, pauses, partitions, loss, duplication,
    reordering, long delays, replays of old messages.

    Every seed draws its own fault rates (and workload) and replays identically;
    the options fix some of them to focus a search. A failing seed prints the
    command that replays it. Exits non-zero if any run breaks safety or fails
    to converge after healing.
    """
    if seeds is not None and minutes is not None:
        raise click.UsageError("give --seeds or --minutes, not both")
    if seeds is None and minutes is None:
        seeds = 1 if seed is not None else 100
    first = 1 if seed is None else seed
    if trace and (minutes is not None or (seeds or 0) > 1):
        raise click.UsageError("--trace prints a single run: use --seed S without --seeds")
    if trace_json is not None and (minutes is not None or (seeds or 0) > 1):
        raise click.UsageError("--trace-json records a single run: use --seed S without --seeds")
    if trace_json is not None and not trace_json.absolute().parent.is_dir():
        raise click.BadParameter(
            f"no directory {str(trace_json.absolute().parent)!r}", param_hint="--trace-json"
        )
    if replica is not None:
        try:
            _load_replica(replica)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--replica") from None
    overrides = tuple(
        (name, float(value))
        for name, value in (
            ("crash_rate", crash_rate),
            ("tail", delay_tail),
            ("tail_max_ticks", tail_ticks),
            ("pause_rate", pause_rate),
        )
        if value is not None
    )
    workers = jobs if jobs is not None else os.cpu_count() or 1
    if trace_json is not None:
        workers = 1  # one run: its events need not cross a process boundary
    started = time.monotonic()
    deadline = started + minutes * 60 if minutes is not None else None

    def job_list() -> Iterator[_Job]:
        seed_ = first
        while (deadline is None and seed_ < first + (seeds or 0)) or (
            deadline is not None and time.monotonic() < deadline
        ):
            yield _Job(seed_, nodes, ticks, trace, replica, overrides, clients, commands,
                       outstanding, events=trace_json is not None)
            seed_ += 1

    progress = _Progress(seeds if seeds is not None else 0)
    failures: list[tuple[_Job, SimResult]] = []
    delivered = violations = liveness = count = 0
    for job, result in _results(job_list(), workers):
        count += 1
        progress.update(result)
        if trace:
            for line in result.trace:
                click.echo(line)
        if trace_json is not None:
            tracefile.write(trace_json, tracefile.sim_trace(result, _replay_command(job)))
        delivered += result.delivered
        violations += result.violation_count
        liveness += result.liveness_count
        if not result.ok:
            failures.append((job, result))
    wall = time.monotonic() - started

    for job, result in failures[:_SHOWN_FAILURES]:
        click.echo(f"FAILED seed {job.seed} ({result.faults.describe()})")
        shown = (result.violations + result.liveness_failures)[:_SHOWN_VIOLATIONS]
        for violation in shown:
            click.echo(f"  {violation}")
        hidden = result.violation_count + result.liveness_count - len(shown)
        if hidden > 0:
            click.echo(f"  ... and {hidden} more")
        click.echo(f"  replay: {_replay_command(job)}")
    if len(failures) > _SHOWN_FAILURES:
        rest = " ".join(str(job.seed) for job, _ in failures[_SHOWN_FAILURES:])
        click.echo(f"more failing seeds: {rest}")
    click.echo(
        f"seeds: {count} (from {first})  nodes: {nodes}  fault ticks: {ticks}  "
        f"commands delivered: {delivered}  violations: {violations}  "
        f"liveness failures: {liveness}  wall: {wall:.1f}s"
    )
    if failures:
        sys.exit(1)

from broadcast.commands import attach  # noqa: E402 - the runtime's commands

attach(main)
