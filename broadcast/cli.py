"""The ``paxos`` command line."""

from __future__ import annotations

import importlib
import importlib.metadata
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

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
        )
    )


def _results(jobs: list[_Job], workers: int) -> Iterator[SimResult]:
    """Results in seed order, whether computed here or in worker processes."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _run_job(job)
        return
    chunk = max(1, min(16, len(jobs) // (workers * 8)))
    # spawn: a clean interpreter per worker, same behaviour on every platform.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(_run_job, jobs, chunksize=chunk)


def _replay_command(job: _Job) -> str:
    command = f"paxos sim --seed {job.seed} --nodes {job.nodes} --ticks {job.ticks}"
    if job.replica is not None:
        command += f" --replica {job.replica}"
    return command + " --trace"


class _Progress:
    """One line updated in place on a terminal; a line every ~10% otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failing = 0
        self.tty = sys.stderr.isatty()
        self.step = max(1, total // 10)
        self.start = time.monotonic()

    def update(self, result: SimResult) -> None:
        self.done += 1
        self.failing += not result.ok
        if self.total <= 1:
            return
        line = (
            f"{self.done}/{self.total} seeds, {self.failing} failing, "
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
def sim(
    seeds: int | None,
    seed: int | None,
    nodes: int,
    ticks: int,
    trace: bool,
    jobs: int | None,
    replica: str | None,
) -> None:
    """Deterministic fault simulation: crashes, partitions, loss, duplication, reordering.

    Every seed draws its own fault rates and replays identically. Exits non-zero
    if any run breaks safety or fails to converge after healing.
    """
    if seeds is None:
        seeds = 1 if seed is not None else 100
    first = 1 if seed is None else seed
    if trace and seeds > 1:
        raise click.UsageError("--trace prints a single run: use --seed S without --seeds")
    if replica is not None:
        try:
            _load_replica(replica)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--replica") from None
    workers = jobs if jobs is not None else os.cpu_count() or 1
    job_list = [_Job(s, nodes, ticks, trace, replica) for s in range(first, first + seeds)]

    started = time.monotonic()
    progress = _Progress(len(job_list))
    failures: list[tuple[_Job, SimResult]] = []
    delivered = violations = liveness = 0
    for job, result in zip(job_list, _results(job_list, workers), strict=True):
        progress.update(result)
        if trace:
            for line in result.trace:
                click.echo(line)
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
        f"seeds: {len(job_list)}  nodes: {nodes}  fault ticks: {ticks}  "
        f"commands delivered: {delivered}  violations: {violations}  "
        f"liveness failures: {liveness}  wall: {wall:.1f}s"
    )
    if failures:
        sys.exit(1)

from broadcast.commands import attach  # noqa: E402 - the runtime's commands

attach(main)
