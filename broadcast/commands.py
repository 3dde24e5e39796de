"""The runtime's CLI commands: node, cluster up, keys, broadcast, subscribe, status.

Attached to the ``paxos`` click group in :mod:`broadcast.cli`. Every user
error (bad spec, unknown node id, port in use, corrupted data directory,
unreachable cluster) ends in a one-line message and a non-zero exit.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from broadcast import payloads
from broadcast.client import Client, ClusterUnavailable, Committed
from broadcast.errors import Compacted, Forbidden, SessionExpired, WrongCluster
from broadcast.history import DEFAULT_RETAIN_ENTRIES, DEFAULT_SEGMENT_BYTES, HistoryError
from broadcast.keys import Keypair, save_keypair
from broadcast.local import cluster_file, spawn_node
from broadcast.logs import LEVELS, configure
from broadcast.protocol import Members
from broadcast.snapshots import DEFAULT_SNAPSHOT_BYTES, DEFAULT_SNAPSHOT_ENTRIES, SnapshotError
from broadcast.spec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Cluster,
    ConfigError,
    local_cluster,
    parse_cluster,
)
from broadcast.transport import TransportError
from broadcast.wal import DEFAULT_SEGMENT_BYTES as DEFAULT_WAL_SEGMENT_BYTES
from broadcast.wal import WalError
from paxos.multi.config import ReplicaConfig

log_level_option = click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Least severe log level written to stderr.",
)


#: The environment variable every ``--cluster`` option falls back to.
CLUSTER_ENVVAR = "PAXOS_CLUSTER"
#: ... and ``paxos node --cluster-id``.
CLUSTER_ID_ENVVAR = "PAXOS_CLUSTER_ID"

cluster_option = click.option(
    "--cluster",
    "spec",
    envvar=CLUSTER_ENVVAR,
    show_envvar=True,
    metavar="SPEC",
    help="ID=HOST:PORT,... or a TOML file. Defaults to $PAXOS_CLUSTER; --cluster wins.",
)


insecure_option = click.option(
    "--insecure",
    is_flag=True,
    help="Plaintext, no authentication (benchmarks and cost comparisons only: anyone who "
    "can reach a node can then forge its messages and read every payload).",
)


def client_key_option(command: Any) -> Any:
    command = insecure_option(command)
    return click.option(
        "--key",
        "key_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="This client's key file [default: the cluster file's [client] key_file].",
    )(command)


def _client(cluster: Cluster, key_file: Path | None, insecure: bool, **kwargs: Any) -> Client:
    """A client, or a one-line error (no keys, a key file that is missing or open to all)."""
    try:
        return Client(cluster, key_file=key_file, insecure=insecure, **kwargs)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _cluster(spec: str | None) -> Cluster:
    if spec is None:
        raise click.UsageError(f"give --cluster SPEC or set {CLUSTER_ENVVAR}")
    try:
        return parse_cluster(spec)
    except ConfigError as exc:
        ctx = click.get_current_context(silent=True)
        from_env = (
            ctx is not None
            and ctx.get_parameter_source("spec") is click.core.ParameterSource.ENVIRONMENT
        )
        where = f"--cluster (from {CLUSTER_ENVVAR})" if from_env else "--cluster"
        raise click.ClickException(f"{where}: {exc}") from None


# ---------------------------------------------------------------------- paxos node

#: ``--retain`` size units: decimal and binary multiples of a byte.
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
_RETAIN_RE = re.compile(r"(0|[1-9][0-9]{0,18})(" + "|".join(_SIZE_UNITS) + ")?")
#: The most entries or bytes ``--retain`` accepts (an int64, like the history's offsets).
_RETAIN_MAX = 2**63 - 1


def parse_retain(text: str) -> tuple[int | None, int | None]:
    """``--retain``'s value as (entries, bytes), one of them None: ``N`` is an entry
    count, ``N<unit>`` a size (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB). Nothing
    else is accepted, not even spaces or fractions: ValueError."""
    match = _RETAIN_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text[:40]!r} is neither an entry count (100000) nor a size "
            f"(512MiB, 2GB; units {', '.join(_SIZE_UNITS)})"
        )
    number, unit = int(match.group(1)), match.group(2)
    amount = number * _SIZE_UNITS[unit] if unit else number
    if amount > _RETAIN_MAX:
        raise ValueError(f"{text!r} is too large")
    return (None, amount) if unit else (amount, None)


def _retain_callback(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int | None, int | None] | None:
    if value is None:
        return None
    try:
        return parse_retain(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


retain_option = click.option(
    "--retain",
    default=None,
    metavar="N|SIZE",
    callback=_retain_callback,
    help=f"History kept on disk for subscribers: at least N entries, or at least SIZE "
    f"of payloads (512MiB, 2GB). Older entries are deleted; a subscriber asking for "
    f"them is told the earliest index still held. Default: "
    f"{DEFAULT_RETAIN_ENTRIES} entries.",
)


@click.command("node")
@click.option("--id", "node_id", type=int, required=True, help="This node's id in the cluster.")
@cluster_option
@click.option(
    "--join",
    is_flag=True,
    help="A new member, added with paxos member add (not one of the cluster's starting "
    "members): it starts as a learner and catches up.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the write-ahead log and the history live (created if missing).",
)
@click.option(
    "--no-fsync",
    is_flag=True,
    help="Do not fsync the log (benchmarks only: a crash can lose acknowledged data).",
)
@click.option("--tick-ms", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--cluster-id",
    default=None,
    envvar=CLUSTER_ID_ENVVAR,
    show_envvar=True,
    help="The cluster this node belongs to (recorded in the data directory on the first "
    "start and checked on every later one). Default: the SPEC file's cluster_id, else "
    "what the data directory recorded, else an id derived from the SPEC's members.",
)
@click.option(
    "--max-payload-bytes",
    type=click.IntRange(1),
    default=None,
    help=f"The cluster's payload limit, recorded on the first start (default "
    f"{DEFAULT_MAX_PAYLOAD_BYTES}); every member must be started with the same one.",
)
@click.option(
    "--snapshot-entries",
    type=click.IntRange(1),
    default=DEFAULT_SNAPSHOT_ENTRIES,
    show_default=True,
    help="Snapshot and compact the log after this many deliveries ...",
)
@click.option(
    "--snapshot-bytes",
    type=click.IntRange(1),
    default=DEFAULT_SNAPSHOT_BYTES,
    show_default=True,
    help="... or after this many bytes of delivered payloads, whichever comes first.",
)
@click.option(
    "--compact-keep-slots",
    type=click.IntRange(0),
    default=None,
    help="Slots kept in memory and in the log below each snapshot, so that a follower "
    "a little behind catches up from the log instead of installing the snapshot "
    "[default: 256].",
)
@click.option(
    "--wal-segment-bytes",
    type=click.IntRange(4096),
    default=DEFAULT_WAL_SEGMENT_BYTES,
    hidden=True,  # tests and benchmarks: small segments make compaction visible early
)
@retain_option
@click.option(
    "--history-segment-bytes",
    type=click.IntRange(1024, 2**40),
    default=DEFAULT_SEGMENT_BYTES,
    hidden=True,  # tests: a retention that deletes something without writing 16 MiB first
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="This node's key file [default: DATA_DIR/node.key].",
)
@click.option(
    "--max-clients",
    type=click.IntRange(1),
    default=None,
    help="Connections in use at once (the other members' count too, and always get in); "
    "one more client waits in its handshake for a place [default: 4096].",
)
@click.option(
    "--reply-cutoff-s",
    type=click.FloatRange(0, min_open=True),
    default=None,
    hidden=True,  # tests: cut off a client that does not read sooner than after 30 s
)
@click.option(
    "--reply-budget-bytes",
    type=click.IntRange(1),
    default=None,
    hidden=True,  # tests: what a client that does not read costs with another budget
)
@click.option(
    "--metrics",
    "metrics",
    metavar="HOST:PORT",
    default=None,
    help="Serve Prometheus metrics (/metrics), health (/healthz, /readyz) and live "
    "events for paxos viz (/events) on this HTTP address (a bare PORT means "
    "127.0.0.1:PORT). Off by default; unauthenticated, so keep it on loopback or a "
    "private network.",
)
@click.option(
    "--service",
    type=click.Choice(["none", "coord"]),
    default="none",
    show_default=True,
    help="The state machine this node replicates: none (an ordered stream of payloads), "
    "or coord: the coordination service of paxos kv (keys, sessions, locks, elections, "
    "watches). Every member must run the same one.",
)
@insecure_option
@log_level_option
def node_command(
    node_id: int,
    spec: str | None,
    join: bool,
    data_dir: Path,
    no_fsync: bool,
    tick_ms: int,
    cluster_id: str | None,
    max_payload_bytes: int | None,
    snapshot_entries: int,
    snapshot_bytes: int,
    compact_keep_slots: int | None,
    wal_segment_bytes: int,
    retain: tuple[int | None, int | None] | None,
    history_segment_bytes: int,
    key_file: Path | None,
    max_clients: int | None,
    reply_cutoff_s: float | None,
    reply_budget_bytes: int | None,
    metrics: str | None,
    service: str,
    insecure: bool,
    log_level: str,
) -> None:
    """Run one node in the foreground until Ctrl-C or SIGTERM.

    By default it speaks CURVE: the SPEC must be a cluster file with every node's
    public key, and the node's key file must hold the key the file names for it.
    """
    from broadcast.node import DEFAULT_REPLY_BUDGET, DEFAULT_REPLY_CUTOFF_S, Node

    configure(log_level)
    cluster = _cluster(spec)
    raise_fd_limit()
    try:
        replica_config = (
            None
            if compact_keep_slots is None
            else ReplicaConfig(
                nodes=cluster.starting_ids, compact_keep_slots=compact_keep_slots
            )
        )
        state_machine = None
        if service == "coord":
            from broadcast.kv.service import CoordService

            state_machine = CoordService()
        node = Node(
            node_id,
            cluster,
            data_dir,
            state_machine=state_machine,
            fsync=not no_fsync,
            tick_ms=tick_ms,
            cluster_id=cluster_id,
            max_payload_bytes=max_payload_bytes,
            snapshot_entries=snapshot_entries,
            snapshot_bytes=snapshot_bytes,
            wal_segment_bytes=wal_segment_bytes,
            replica_config=replica_config,
            max_clients=max_clients,
            retain_entries=retain[0] if retain else None,
            retain_bytes=retain[1] if retain else None,
            history_segment_bytes=history_segment_bytes,
            key_file=key_file,
            insecure=insecure,
            reply_budget_bytes=reply_budget_bytes or DEFAULT_REPLY_BUDGET,
            reply_cutoff_s=reply_cutoff_s or DEFAULT_REPLY_CUTOFF_S,
            join=join,
            metrics=metrics,
        )
    except (ConfigError, TransportError, WalError, HistoryError, SnapshotError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"data directory {data_dir}: {exc.strerror or exc}") from None

    def stop(signum: int, frame: object) -> None:
        if signum == signal.SIGTERM and not handing_over.is_set():
            # A graceful stop (a rolling restart): a leader hands over first, so that
            # the others need not wait for an election timeout. In another thread: the
            # node's loop runs in this one.
            handing_over.set()
            threading.Thread(target=hand_over_then_stop, daemon=True).start()
            return
        node._stop.set()
        node.transport.wake()

    def hand_over_then_stop() -> None:
        node.hand_over(timeout=2.0)
        node._stop.set()
        node.transport.wake()

    handing_over = threading.Event()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The node allocates many short-lived objects per batch and keeps a growing log:
    # collect the young generation less often, and never rescan what startup made.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        node.run()
    except (WalError, HistoryError) as exc:
        # The one thing a node cannot survive: it can no longer write its disk.
        raise click.ClickException(f"stopped: {exc}") from None


def raise_fd_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit.

    Every connection costs a node a file descriptor from the moment it is accepted,
    before its handshake says who it is (a stranger's too, until HANDSHAKE_IVL closes
    it); a node that runs out cannot open its next log segment and stops. The default
    soft limit (often 1024) is far below what --max-clients allows.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ---------------------------------------------------------------------- paxos cluster up


@click.group("cluster")
def cluster_group() -> None:
    """Run a local cluster of separate node processes."""


@cluster_group.command("up")
@click.option("--nodes", type=click.IntRange(1, 15), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1, 65000), default=7100, show_default=True,
              help="Node i listens on 127.0.0.1:(base-port + i).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("paxos-data"), show_default=True)
@click.option("--no-fsync", is_flag=True, help="Benchmarks only: nodes do not fsync.")
@click.option("--retain", default=None, metavar="N|SIZE", callback=_retain_callback,
              help="Passed to every node (see paxos node --help).")
@click.option("--metrics-base-port", type=click.IntRange(1, 65000), default=None,
              help="Node i serves metrics, health and live events on "
              "127.0.0.1:(metrics-base-port + i) (see paxos node --metrics).")
@click.option("--service", type=click.Choice(["none", "coord"]), default="none",
              show_default=True, help="Passed to every node (coord: the paxos kv service).")
@insecure_option
@log_level_option
def cluster_up(
    nodes: int,
    base_port: int,
    data_dir: Path,
    no_fsync: bool,
    retain: tuple[int | None, int | None] | None,
    metrics_base_port: int | None,
    service: str,
    insecure: bool,
    log_level: str,
) -> None:
    """Start NODES local node processes and print the cluster file; Ctrl-C stops them all.

    On the first run it creates DATA_DIR/cluster.toml with a fresh cluster id, a CURVE
    keypair for every node (DATA_DIR/nodeI/node.key) and a client key allowed to do
    everything (DATA_DIR/keys/admin.key), so that every command given
    --cluster DATA_DIR/cluster.toml just works.

    A node that dies is reported and the others keep running (the cluster
    serves while a majority is up); if every node has exited, so does this
    command, with an error.
    """
    configure(log_level)
    extra: tuple[str, ...] = ()
    if retain is not None:
        entries, size = retain
        extra = ("--retain", f"{entries}" if entries is not None else f"{size}B")
    if service != "none":
        extra += ("--service", service)
    try:
        cluster = local_cluster(nodes, base_port)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        cluster = cluster_file(data_dir, cluster, secure=not insecure)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    children = {
        i: spawn_node(
            i,
            cluster,
            data_dir,
            fsync=not no_fsync,
            log_level=log_level,
            extra=extra
            + (("--metrics", f"127.0.0.1:{metrics_base_port + i}") if metrics_base_port else ()),
            insecure=insecure,
        )
        for i in cluster.ids
    }
    spec = cluster.spec() if insecure else str(cluster.path)
    click.echo(spec)
    sys.stdout.flush()
    prog = sys.argv[0] if Path(sys.argv[0]).name == "paxos" else "paxos"  # e.g. .venv/bin/paxos
    click.echo(
        f"{nodes} nodes running; Ctrl-C stops them. From another shell:\n"
        f"  export {CLUSTER_ENVVAR}={spec}\n"
        f"  {prog} broadcast {'--insecure ' if insecure else ''}hello\n"
        f"  {prog} subscribe {'--insecure ' if insecure else ''}--count 1",
        err=True,
    )
    stopping = threading.Event()  # set by the signal handler, read by the loop

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exited: list[int] = []  # nodes that exited on their own, in the order seen
    try:
        while not stopping.is_set() and len(exited) < len(children):
            for node_id, child in children.items():
                if stopping.is_set():
                    break  # Ctrl-C reaches the nodes too: their exit is no news
                if node_id not in exited and child.poll() is not None:
                    exited.append(node_id)
                    if len(exited) < len(children):
                        click.echo(
                            f"node {node_id} exited with code {child.returncode}; "
                            "the other nodes keep running",
                            err=True,
                        )
            time.sleep(0.2)  # a supervisor's heartbeat, not a test wait
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if len(exited) == len(children):
        codes = ", ".join(f"node {i}: {children[i].returncode}" for i in cluster.ids)
        raise click.ClickException(f"every node has exited ({codes})")
    unclean = [
        i for i, c in children.items()
        if i not in exited and c.returncode not in (0, -signal.SIGTERM)
    ]
    problems = []
    if exited:
        problems.append(f"nodes {sorted(exited)} exited while the cluster ran")
    if unclean:
        problems.append(f"nodes {unclean} did not stop cleanly")
    if problems:
        raise click.ClickException("; ".join(problems))


# ---------------------------------------------------------------------- paxos keys


@click.group("keys")
def keys_group() -> None:
    """CURVE keys for nodes and clients."""


@keys_group.command("gen")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_gen(path: Path) -> None:
    """Create a keypair in the new file PATH (mode 0600) and print its public key.

    Put the public key in the cluster file: under [nodes.ID] key for a node, or as a
    [clients.NAME] table (key, ids, allow) for a client.
    """
    keypair = Keypair.generate()
    try:
        save_keypair(path, keypair)
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror or exc}") from None
    click.echo(keypair.public_text)



# ---------------------------------------------------------------------- paxos broadcast


@click.command("broadcast")
@cluster_option
@click.option("--client-id", default=None,
              help="A name for this run's session (a label: every run opens a new session).")
@click.option("--count", type=click.IntRange(1), default=None, help="Generate COUNT messages.")
@click.option("--size", type=click.IntRange(1), default=100, show_default=True,
              help="Size in bytes of generated messages (at most --max-payload-bytes).")
@click.option("--file", "files", multiple=True, metavar="PATH",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Broadcast the file's bytes as one payload (repeatable, in order).")
@click.option("--b64", is_flag=True,
              help="MESSAGE arguments and stdin lines are base64: broadcast the decoded bytes.")
@click.option("--max-payload-bytes", type=click.IntRange(1), default=None,
              help="Refuse larger payloads (arguments, lines, files) [default: the "
              "cluster's limit].")
@click.option("--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Give up after this many seconds without progress.")
@click.argument("messages", nargs=-1)
@client_key_option
@log_level_option
def broadcast_command(
    spec: str | None,
    client_id: str | None,
    count: int | None,
    size: int,
    files: tuple[Path, ...],
    b64: bool,
    max_payload_bytes: int | None,
    timeout: float,
    messages: tuple[str, ...],
    key_file: Path | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Broadcast MESSAGES in order ('-' reads lines from stdin); one JSON line per commit.

    Each MESSAGE argument, stdin line or --file is one payload. With --b64,
    arguments and stdin lines are base64 text of binary payloads. A payload
    larger than --max-payload-bytes is refused (a too long stdin line stops the
    run after the lines before it are committed, without reading the rest).
    """
    configure(log_level if log_level != "info" else "warning")
    if count is None and not messages and not files:
        raise click.UsageError("give MESSAGE arguments, '-' for stdin, --file PATH or --count N")
    if count is not None and (messages or files):
        raise click.UsageError("--count generates messages: give no MESSAGE or --file with it")
    if files and messages:
        raise click.UsageError("--file gives the payloads: give no MESSAGE arguments with it")
    if b64 and (files or count is not None):
        raise click.UsageError("--b64 decodes MESSAGE arguments and stdin lines only")
    cluster = _cluster(spec)
    # What can be refused before a node answers is refused now: bad base64 arguments,
    # missing files and, with an explicit --max-payload-bytes, anything above it. The
    # cluster's own limit is known once a session is open (it may be above the default).
    unknown_limit = max_payload_bytes or 2**62
    try:
        if count is not None:
            payloads.generated(count, size, unknown_limit)
        elif files:
            payloads.files(files, unknown_limit)
        else:
            payloads.payloads(messages, sys.stdin.buffer, b64=b64, limit=unknown_limit)
    except payloads.PayloadError as exc:
        raise click.ClickException(str(exc)) from None

    # A bad stdin line or file ends the run: what came before it is committed first.
    stopped: list[payloads.PayloadError] = []
    source: Iterator[bytes] = iter(())

    def until_error() -> Iterator[bytes]:
        try:
            yield from source
        except payloads.PayloadError as exc:
            stopped.append(exc)

    out = sys.stdout
    quoted: dict[str, str] = {}

    def report(c: Committed) -> None:
        # The same line json.dumps would print, without its per-call cost.
        client = quoted.get(c.client)
        if client is None:
            client = quoted[c.client] = json.dumps(c.client)
        out.write(f'{{"index": {c.index}, "client": {client}, "seq": {c.seq}}}\n')

    committed: list[Committed] = []
    try:
        with _client(
            cluster, key_file, insecure, client_id=client_id, timeout=timeout
        ) as client:
            client.open_session()
            limit = min(max_payload_bytes or client.max_payload_bytes, client.max_payload_bytes)
            if count is not None:
                source = payloads.generated(count, size, limit)
            elif files:
                source = payloads.files(files, limit)
            else:
                source = payloads.payloads(messages, sys.stdin.buffer, b64=b64, limit=limit)
            committed = client.broadcast_many(until_error(), on_commit=report)
    except Forbidden as exc:
        hint = " (give --client-id with a name your key is granted)" if (
            exc.what.startswith("session") and client_id is None
        ) else ""
        raise click.ClickException(f"{exc}{hint}") from None
    except (ClusterUnavailable, SessionExpired, WrongCluster) as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # PayloadTooLarge, PayloadError, a bad client id
        raise click.ClickException(str(exc)) from None
    if stopped:
        raise click.ClickException(
            f"{stopped[0]}; stopped there, {len(committed)} payloads before it committed"
        )


# ---------------------------------------------------------------------- paxos subscribe


def delivery_json(index: int, client: str, seq: int, payload: bytes) -> str:
    """One delivery as the JSON line ``paxos subscribe`` prints."""
    line: dict[str, Any] = {"index": index, "client": client, "seq": seq}
    try:
        line["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        line["payload_b64"] = base64.b64encode(payload).decode("ascii")
    return json.dumps(line)


@click.command("subscribe")
@cluster_option
@click.option("--from", "from_index", type=click.IntRange(1), default=1, show_default=True)
@click.option("--count", type=click.IntRange(1), default=None, help="Exit after COUNT deliveries.")
@click.option("--node", "node_id", type=int, default=None, help="Read from this node only.")
@click.option("--idle-timeout", type=click.FloatRange(0.1), default=None,
              help="Stop after this many seconds without a delivery.")
@click.option("--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Fail after this many seconds in which no node answered.")
@client_key_option
@log_level_option
def subscribe_command(
    spec: str | None,
    from_index: int,
    count: int | None,
    node_id: int | None,
    idle_timeout: float | None,
    timeout: float,
    key_file: Path | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Print the ordered delivery stream as JSON lines, from index FROM on."""
    configure(log_level if log_level != "info" else "warning")
    cluster = _cluster(spec)
    if node_id is not None and node_id not in cluster.nodes:
        raise click.BadParameter(f"node {node_id} is not in the cluster", param_hint="--node")
    seen = 0
    with _client(cluster, key_file, insecure) as client:
        stream = client.subscribe(
            from_index, node=node_id, idle_timeout=idle_timeout, unreachable_timeout=timeout
        )
        try:
            for delivery in stream:
                c = delivery.command
                click.echo(delivery_json(delivery.index, c.client, c.seq, c.payload))
                seen += 1
                if count is not None and seen >= count:
                    return
        except (ClusterUnavailable, Forbidden) as exc:
            raise click.ClickException(str(exc)) from None
        except Compacted as exc:
            raise click.ClickException(
                f"{exc} (use --from {exc.earliest}, or start from a snapshot)"
            ) from None
    if count is not None:
        raise click.ClickException(f"only {seen} of {count} deliveries before the idle timeout")


# ---------------------------------------------------------------------- paxos status


@click.command("status")
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per node.")
@click.option("--timeout", type=click.FloatRange(0.05), default=1.0, show_default=True)
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh the table every --interval seconds (with each node's deliveries per "
    "second) until Ctrl-C.",
)
@click.option("--interval", type=click.FloatRange(0.1), default=1.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--count", type=click.IntRange(1), default=None,
              help="With --watch: stop after this many refreshes.")
@client_key_option
def status_command(
    spec: str | None,
    as_json: bool,
    timeout: float,
    watch: bool,
    interval: float,
    count: int | None,
    key_file: Path | None,
    insecure: bool,
) -> None:
    """Show each member: id, address, reachable, role, ballot, leader, last delivered
    index; and the membership (voters and learners, as the cluster's log has it).

    Exits non-zero unless a majority of the voters answer and see one leader with a
    quorum (the leader heard from a majority lately; followers heard from it). With
    --watch it refreshes until Ctrl-C (or --count refreshes) and exits 0.
    """
    configure("warning")
    cluster = _cluster(spec)
    with _client(cluster, key_file, insecure) as client:
        if not watch:
            rows, members, voters = _status_rows(client, timeout)
            _show_status(rows, members, as_json)
            _judge_status(rows, voters, client.cluster)
            return
        tty = sys.stdout.isatty() and not as_json
        before: dict[int, tuple[float, int]] = {}
        shown = 0
        try:
            while count is None or shown < count:
                started = time.monotonic()
                rows, members, _ = _status_rows(client, timeout)
                now = time.monotonic()
                for row in rows:
                    delivered = row["delivered"]
                    if isinstance(delivered, int):
                        last = before.get(row["id"])
                        if last is not None and now > last[0]:
                            row["rate"] = round((delivered - last[1]) / (now - last[0]), 1)
                        before[row["id"]] = (now, delivered)
                if tty:
                    click.clear()
                if not as_json:
                    click.echo(time.strftime("%H:%M:%S") + f"  every {interval:g}s, Ctrl-C stops")
                _show_status(rows, members, as_json)
                if not tty and not as_json:
                    click.echo("")
                sys.stdout.flush()
                shown += 1
                if count is not None and shown >= count:
                    break
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            pass


def _status_rows(
    client: Client, timeout: float
) -> tuple[list[dict[str, Any]], Members | None, set[int]]:
    try:
        client.refresh_members(timeout)  # members added since the file was written
        members = client.members(timeout=timeout)
    except Forbidden as exc:
        raise click.ClickException(str(exc)) from None
    cluster = client.cluster
    ids = sorted(set(members.voters) | set(members.learners)) if members else cluster.ids
    voters = set(members.voters) if members else set(cluster.ids)
    rows = []
    for node_id in ids:
        if node_id not in cluster.nodes:
            continue
        try:
            s = client.status(node_id, timeout)
        except Forbidden as exc:
            raise click.ClickException(str(exc)) from None
        rows.append(
            {
                "id": node_id,
                "member": "voter" if node_id in voters else "learner",
                "address": cluster.nodes[node_id],
                "reachable": s is not None,
                "role": s.role if s else None,
                "ballot": list(s.ballot) if s else None,
                "leader": (s.leader or None) if s else None,
                "delivered": s.delivered if s else None,
                "commit_slot": s.commit if s else None,
                "leader_ok": s.leader_ok if s else None,
                "cluster_id": s.cluster_id if s else None,
                "sessions": s.sessions if s else None,
                "snapshot_index": s.snapshot_index if s else None,
                "snapshot_slot": s.snapshot_slot if s else None,
                "floor": s.floor if s else None,
                "log_bytes": s.log_bytes if s else None,
                "connections": s.connections if s else None,
            }
        )
    return rows, members, voters


def _show_status(rows: list[dict[str, Any]], members: Members | None, as_json: bool) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    rates = any("rate" in row for row in rows)
    click.echo(f"{'id':>3} {'address':<21} {'reachable':<9} {'role':<9} "
               f"{'ballot':<9} {'leader':>6} {'quorum':<6} {'delivered':>9} "
               + (f"{'per s':>9} " if rates else "")
               + f"{'snapshot':>9} {'floor':>9} {'log':>9}")
    for row in rows:
        b = row["ballot"]
        ballot = f"{b[0]}.{b[1]}" if isinstance(b, list) else "-"
        ok = "-" if row["leader_ok"] is None else "yes" if row["leader_ok"] else "NO"
        click.echo(
            f"{row['id']:>3} {row['address']:<21} {'yes' if row['reachable'] else 'NO':<9} "
            f"{row['role'] or '-':<9} {ballot:<9} {row['leader'] or '-':>6} {ok:<6} "
            f"{_or_dash(row['delivered']):>9} "
            + (f"{_or_dash(row.get('rate')):>9} " if rates else "")
            + f"{_or_dash(row['snapshot_index']):>9} "
            f"{_or_dash(row['floor']):>9} {_size(row['log_bytes']):>9}"
        )
    if members is not None:
        learners = f", learners {list(members.learners)}" if members.learners else ""
        click.echo(
            f"membership epoch {members.epoch}: voters {list(members.voters)}{learners}; "
            f"quorums: phase 1 {members.phase1_quorum}, phase 2 {members.phase2_quorum}"
        )


def _judge_status(rows: list[dict[str, Any]], voters: set[int], cluster: Cluster) -> None:
    if not any(row["reachable"] for row in rows):
        raise click.ClickException(f"no node of {cluster.spec()} is reachable")
    # A leader with a quorum, as the nodes we reach see it: a majority of the cluster
    # agrees on one leader they hear from (and that leader hears from a majority).
    votes: dict[int, int] = {}
    for row in rows:
        leader = row["leader"]
        if row["leader_ok"] and isinstance(leader, int) and row["member"] == "voter":
            votes[leader] = votes.get(leader, 0) + 1
    majority = len(voters) // 2 + 1
    if not any(count >= majority for count in votes.values()):
        reachable = sum(1 for row in rows if row["reachable"] and row["member"] == "voter")
        raise click.ClickException(
            f"no leader with a quorum: {reachable} of {len(voters)} voters reachable, "
            f"leaders seen: {sorted(votes) or 'none'}"
        )


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(value)


@click.command("snapshot")
@cluster_option
@click.option("--node", "node_id", type=int, required=True, help="The node to snapshot.")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds to wait for the snapshot to be durable.")
@client_key_option
def snapshot_command(
    spec: str | None, node_id: int, timeout: float, key_file: Path | None, insecure: bool
) -> None:
    """Make a node take a snapshot and compact its log now; prints where it stands."""
    configure("warning")
    cluster = _cluster(spec)
    if node_id not in cluster.nodes:
        raise click.ClickException(f"node {node_id} is not in the cluster ({cluster.spec()})")
    with _client(cluster, key_file, insecure) as client:
        try:
            s = client.take_snapshot(node_id, timeout)
        except Forbidden as exc:
            raise click.ClickException(str(exc)) from None
    if s is None:
        raise click.ClickException(f"node {node_id} did not answer within {timeout:.0f}s")
    click.echo(
        f"node {node_id}: snapshot at index {s.snapshot_index} (slot {s.snapshot_slot}), "
        f"floor {s.floor}, log {_size(s.log_bytes)}, delivered {s.delivered}"
    )


def attach(group: click.Group) -> None:
    """Add the runtime commands to the ``paxos`` group."""
    from broadcast.demo import demo_command
    from broadcast.kv.cli import kv_group
    from broadcast.members_cli import leader_group, member_group
    from broadcast.viz_cli import viz_command
    from chaos.cli import chaos_command

    for command in (
        node_command,
        cluster_group,
        keys_group,
        broadcast_command,
        subscribe_command,
        status_command,
        snapshot_command,
        member_group,
        leader_group,
        demo_command,
        chaos_command,
        viz_command,
        kv_group,
    ):
        group.add_command(command)
