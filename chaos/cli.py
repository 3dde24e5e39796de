"""``paxos chaos``: Jepsen-style fault tests of a local cluster of real node processes."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

from broadcast.logs import LEVELS, configure
from chaos.checkers import check_all
from chaos.faults import FAULT_KINDS
from chaos.harness import (
    DEFAULT_SPARES,
    SERVICES,
    ChaosConfig,
    ChaosRun,
    HarnessError,
    load_run,
    load_watches,
    print_lines,
    run_service,
)
from chaos.history import HistoryError
from chaos.kvcheck import check_kv_all
from chaos.network import NetworkError

#: Exit statuses: 0 every checker passed; 1 a violation (or an undecided checker);
#: 2 the harness itself failed, so there is no verdict.
EXIT_VIOLATION = 1
EXIT_HARNESS = 2
#: The default --op-timeout of a run of the coordination service.
KV_OP_TIMEOUT = 1.0


def _faults(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    faults = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in faults if f not in FAULT_KINDS]
    if unknown:
        raise click.BadParameter(
            f"unknown fault(s) {', '.join(unknown)}; choose from {','.join(FAULT_KINDS)}",
            param_hint="--faults",
        )
    return faults


def _interrupt(signum: int, frame: object) -> None:
    # Unwind through the harness's finally blocks: nodes stopped, namespaces removed.
    raise SystemExit(128 + signum)


@click.command("chaos")
@click.option("--nodes", type=click.IntRange(1, 15), default=3, show_default=True)
@click.option("--service", type=click.Choice(SERVICES), default="broadcast", show_default=True,
              help="What the nodes run and the clients use: broadcast (the key-value example "
                   "over the broadcast log), or kv (the coordination service, paxos kv: keys, "
                   "sessions with short leases, ephemeral keys, locks and fenced writes).")
@click.option("--duration", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds of client load under faults (healing and checking come after).")
@click.option("--faults", "faults_text", default=",".join(FAULT_KINDS), show_default=True,
              help="Comma-separated faults to inject, or 'none'.")
@click.option("--clients", type=click.IntRange(1, 64), default=6, show_default=True,
              help="Concurrent sequential clients.")
@click.option("--keys", type=click.IntRange(1, 10_000), default=6, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed of the fault schedule and the load.")
@click.option("--network", type=click.Choice(["auto", "netns", "loopback"]), default="auto",
              show_default=True,
              help="netns: nodes in network namespaces, partitions by iptables (root); "
                   "loopback: 127.0.0.1, no partitions; auto: netns if possible.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where data, logs, history and summary go (default: a temporary "
                   "directory, removed after a passing run unless --keep).")
@click.option("--keep", is_flag=True, help="Keep the run directory even if the run passed.")
@click.option("--op-timeout", type=click.FloatRange(0.5), default=None,
              help="A client operation without an answer for this long ends 'unknown' "
                   "[default: 5 s; 1 s with --service kv, whose sessions last 1.5-3 s].")
@click.option("--powerloss-scope", type=click.Choice(["mixed", "one", "all"]), default="mixed",
              show_default=True,
              help="Power loss hits one node, all nodes at once, or either (all: 1 in 4).")
@click.option("--unsafe-no-fsync", is_flag=True,
              help="Run the nodes with --no-fsync (to watch the checkers catch the data loss "
                   "that power loss then causes).")
@click.option("--compose", is_flag=True,
              help="Compose faults: while a partition lasts, also kill, pause or power-cut "
                   "a node.")
@click.option("--tempo", type=click.FloatRange(0.05, 10), default=1.0, show_default=True,
              help="Scale the time between, and the length of, faults (0.3: 3x as fast).")
@click.option("--snapshot-entries", type=click.IntRange(1), default=200, show_default=True,
              help="Nodes snapshot and compact every this many deliveries (small: snapshots, "
                   "compaction and installs happen many times per run).")
@click.option("--insecure", is_flag=True,
              help="Run nodes and clients without CURVE (plaintext, no authentication), "
                   "as before keys existed.")
@click.option("--spares", type=click.IntRange(0, 64), default=None,
              help="Spare node ids the network gets addresses for: each reconfigure fault "
                   "uses one for the new member it adds (once they run out, it is skipped). "
                   f"Default: {DEFAULT_SPARES} with reconfigure, else 0.")
@click.option("--lock-pause-chance", type=click.FloatRange(0, 1), default=0.25,
              show_default=True,
              help="--service kv: how often a client that obtained a lock pauses itself "
                   "(renewals stopped) past its session's lease before it writes with the "
                   "lock's fencing token.")
@click.option("--check", "check_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), default=None,
              help="Do not run anything: check a saved run directory again.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="warning",
              show_default=True)
def chaos_command(
    nodes: int,
    service: str,
    duration: float,
    faults_text: str,
    clients: int,
    keys: int,
    seed: int | None,
    network: str,
    run_dir: Path | None,
    keep: bool,
    op_timeout: float | None,
    powerloss_scope: str,
    unsafe_no_fsync: bool,
    compose: bool,
    tempo: float,
    snapshot_entries: int,
    insecure: bool,
    spares: int | None,
    lock_pause_chance: float,
    check_dir: Path | None,
    as_json: bool,
    log_level: str,
) -> None:
    """Run NODES real node processes under client load while injecting faults
    (kill, pause, partition, powerloss, reconfigure: a member replaced by a new node),
    then check total-order broadcast and linearizability (with --service kv: the
    coordination service's results, locks and ephemeral keys too). Exits non-zero on
    any violation."""
    configure(log_level)
    if check_dir is not None:
        _recheck(check_dir, as_json)
        return
    signal.signal(signal.SIGTERM, _interrupt)
    if op_timeout is None:
        op_timeout = KV_OP_TIMEOUT if service == "kv" else ChaosConfig.op_timeout
    config = ChaosConfig(
        nodes=nodes,
        service=service,
        duration=duration,
        faults=_faults(faults_text),
        clients=clients,
        keys=keys,
        seed=seed,
        network=network,
        run_dir=run_dir,
        keep=keep,
        op_timeout=op_timeout,
        powerloss_scope=powerloss_scope,
        unsafe_no_fsync=unsafe_no_fsync,
        compose=compose,
        tempo=tempo,
        snapshot_entries=snapshot_entries,
        insecure=insecure,
        spares=spares,
        kv_pause_chance=lock_pause_chance,
    )
    try:
        run = ChaosRun(config)
        summary = run.execute()
    except (HarnessError, NetworkError, OSError) as exc:
        click.echo(f"paxos chaos: harness error: {exc}", err=True)
        sys.exit(EXIT_HARNESS)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        print_lines(summary.render(), sys.stdout)
    run.cleanup(summary)
    if not summary.ok:
        sys.exit(EXIT_VIOLATION)


def _recheck(run_dir: Path, as_json: bool) -> None:
    try:
        ops, observations = load_run(run_dir)
        watches = load_watches(run_dir)
    except (OSError, HistoryError, ValueError, KeyError, TypeError) as exc:
        click.echo(f"paxos chaos: cannot read {run_dir}: {exc}", err=True)
        sys.exit(EXIT_HARNESS)
    started = time.perf_counter()
    if run_service(run_dir) == "kv":
        verdicts, _ = check_kv_all(ops, observations, watches)
    else:
        verdicts = check_all(ops, observations)
    seconds = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in verdicts], indent=2))
    else:
        for v in verdicts:
            click.echo(f"{v.name:<13} {v.label:<9} {v.checked:>7} checked  {v.notes}")
            for message in v.violations:
                click.echo(f"    - {message}")
        click.echo(f"checked {len(ops)} operations in {seconds:.2f} s")
    if not all(v.ok is True for v in verdicts):
        sys.exit(EXIT_VIOLATION)
