"""A node: one Multi-Paxos replica on a real socket and a real disk.

One loop thread owns the replica, the transport and the write-ahead log. Each
turn of the loop:

1. takes every frame that has arrived (one ``poll``), decodes it, and steps
   the replica with it (bad frames are dropped and logged);
2. takes work handed over by application threads (local broadcasts);
3. ticks the replica if a tick (``tick_ms``) has passed;
4. **persists** all records the replica asked for with one write and one
   fsync (group commit), **then** sends the messages, **then** delivers the
   committed commands to the state machine, local waiters, remote clients
   and subscribers.

Step 4's order is the crash-recovery contract: nothing a promise or an accept
vouches for leaves the node before it is on disk.

Nothing a peer or a client sends can stop the loop: a frame that fails to
decode, to be handled or to be answered is dropped, counted and logged (at
most one line per few seconds per kind, with counts), and the node goes on.
Only its own disk can stop it: a write-ahead log that fails to write or sync
ends :meth:`Node.run` with :class:`~broadcast.wal.WalError`, since a node that
cannot persist its vows must not make any.

Before anything else, the node checks its data directory's identity
(:mod:`broadcast.identity`): cluster id, node id, members and payload limit.

**Who may speak.** By default every connection is CURVE (:mod:`broadcast.auth`):
only the cluster's members and the clients its file authorises get in, and a
sender's identity is its key's. A member may send Paxos messages under its own
id only; a client key may do what its grant allows (broadcast, subscribe,
status, admin) and use only the session names it is granted. A node owes a
client at most ``reply_budget_bytes`` of deliveries (and snapshot parts) it has
not proved it read (tickets, see ``protocol.Fetch``): a client over budget is
paused, and cut off for good after ``reply_cutoff_s``.

**Snapshots and compaction.** Every ``snapshot_entries`` deliveries (or
``snapshot_bytes`` of delivered payloads), at the end of a turn (a delivery
boundary), the node takes a snapshot of its replica (client sessions
included) and of its state machine (``snapshot()``, bytes), and writes it in
a background thread, so delivery goes on meanwhile. Once the file is durable
it compacts: the replica drops what the snapshot covers (keeping
``compact_keep_slots`` for slow followers) and re-records its promise, and
the write-ahead log deletes the segments the rule of
:mod:`paxos.multi.compaction` allows. A restart loads the newest snapshot,
restores the state machine from it (``restore(bytes)``) and replays only the
log above it. A state machine without ``snapshot``/``restore`` gets no
automatic snapshots: its restart replays the whole log, which is then kept.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import os
import queue
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

from broadcast.answers import HeldQueries, ResultCache
from broadcast.auth import CLIENT_PRINCIPAL, Keyring
from broadcast.errors import Compacted, PayloadTooLarge, SessionExpired
from broadcast.history import (
    DEFAULT_RETAIN_ENTRIES,
    DEFAULT_SEGMENT_BYTES,
    History,
    HistoryError,
)
from broadcast.httpd import NodeHttp, parse_listen
from broadcast.identity import Identity, cluster_id_bytes, establish
from broadcast.keys import load_keypair, raw_key
from broadcast.logs import RateLimited, get_logger
from broadcast.metrics import NodeMetrics, Reading
from broadcast.protocol import (
    ACK_RUNS_MAX,
    FETCH_MAX,
    FETCH_MAX_BYTES,
    ChangeAnswer,
    ChangeMembers,
    CloseSession,
    Deliveries,
    Denied,
    Fetch,
    FetchRefused,
    FetchSnapshot,
    Members,
    MembersRequest,
    OpenSession,
    Query,
    QueryAnswer,
    QueryRefused,
    SessionEnded,
    SessionOpened,
    SnapshotPart,
    Status,
    StatusRequest,
    Submit,
    SubmitAck,
    SubmitRefused,
    SubmitResults,
    TakeSnapshot,
    TransferLeader,
)
from broadcast.snapshots import DEFAULT_SNAPSHOT_BYTES, DEFAULT_SNAPSHOT_ENTRIES, SnapshotStore
from broadcast.spec import (
    ADMIN,
    BROADCAST,
    DEFAULT_MAX_PAYLOAD_BYTES,
    STATUS,
    SUBSCRIBE,
    Cluster,
    ConfigError,
    Grant,
    bind_address,
    session_name,
)
from broadcast.transport import (
    DEFAULT_MAX_CONNECTIONS,
    NodeTransport,
    TransportConfig,
    TransportError,
    node_id_of,
)
from broadcast.wal import DEFAULT_SEGMENT_BYTES as DEFAULT_WAL_SEGMENT_BYTES
from broadcast.wal import WalCorruptionError, WriteAheadLog
from paxos.codec import (
    CodecError,
    accept_value_bytes,
    decode,
    decode_record,
    encode,
    encode_accept,
    encode_accept_record,
    encode_value,
)
from paxos.messages import Accept, Message
from paxos.multi.compaction import keep_from
from paxos.multi.config import ReplicaConfig
from paxos.multi.driver import ReadyDriver
from paxos.multi.membership import Op
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica, Role, StepFailed
from paxos.multi.sessions import MAX_NAME_LEN, close_command, open_command
from paxos.multi.snapshot import Snapshot, read_snapshot
from paxos.records import AcceptRecord, Record
from paxos.types import Command, Delivery, Value

log = get_logger("broadcast.node")

_command_of = itemgetter(2)  # Delivery -> its Command, in C
_payload_of = itemgetter(2)  # Command -> its payload

_MESSAGE_TYPES: tuple[type, ...] = tuple(Message.__args__)

#: Open requests waiting for their open to be applied here, at most.
_MAX_PENDING_OPENS = 10_000
#: Long-poll fetches held at once, at most.
_MAX_HELD_FETCHES = 10_000
#: How often a state machine with ``due`` is asked for commands its timers want proposed.
_DUE_INTERVAL_S = 0.1
#: `paxos snapshot` requests waiting for a snapshot to be durable, at most.
_MAX_SNAPSHOT_WAITERS = 64
#: A node's key file, in its data directory unless ``key_file`` says otherwise.
NODE_KEY_FILE = "node.key"
#: Bytes of deliveries and snapshot parts a node sends a client before the client proves
#: it read them (see protocol.Fetch): what a subscriber that never reads can cost.
DEFAULT_REPLY_BUDGET = 512 * 1024
#: A client over its budget this long is cut off: none of its requests is served again.
DEFAULT_REPLY_CUTOFF_S = 30.0
#: Clients remembered as cut off, and clients owed replies, at most (oldest forgotten).
_MAX_CUT_OFF = 65_536
_MAX_OWED = 16_384
#: Replies one client may owe tickets for (however small they are).
_MAX_TICKETS = 16


def frame_limit(config: ReplicaConfig) -> int:
    """The largest frame a member or client of a cluster with ``config`` ever sends (with
    room to spare): larger messages are refused by ZeroMQ before they are read.

    Every message is bounded by one of the byte limits below plus one entry beyond it
    (a batch, a catch-up reply, a promise, a snapshot chunk, a client's Submit of
    about 1 MiB), and an entry holds at most one payload beyond its own limit; 4 MiB
    more cover the per-command overhead (a review built a 5.06 MB catch-up reply with
    long session keys against the default limit, then 5.24 MB: too close).
    """
    bulk = max(
        1024 * 1024,
        config.batch_max_bytes,
        config.catchup_max_bytes,
        config.promise_max_bytes,
        config.snapshot_chunk_bytes,
    )
    return 2 * bulk + 2 * config.max_payload_bytes + 4 * 1024 * 1024


def _fd_limit() -> int:
    """This process's soft limit of open files (each connection costs one: see
    ``broadcast.commands.raise_fd_limit``)."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Owed:
    """Replies sent to one client that it has not proved it read (see protocol.Fetch)."""

    __slots__ = ("bytes", "last", "paused", "released", "tickets")

    def __init__(self, now: float) -> None:
        self.bytes = 0
        self.tickets: list[tuple[int, int]] = []  # (ticket, bytes), oldest first
        self.paused = 0.0  # when the client went over budget (0: it is not)
        self.released = 0  # the last ticket the client showed that released something
        self.last = now  # when the client last asked or was charged

    def release(self, ticket: int) -> None:
        """The client shows ``ticket``: it read that reply, so every earlier one too (they
        travel in order on one connection). Showing again the ticket that released
        something last says the client has read nothing since: what it was sent after it
        was lost (a connection reset on the way) and is owed no more, so a client that
        lost a reply is served again at once, once: the same ticket shown again forgives
        nothing more."""
        if ticket == self.released:
            # Once per ticket read: a client that shows the same one again without
            # reading anything new is not forgiven twice (second review: replaying it
            # made a node send without limit what the client never read).
            self.released = 0
            self.tickets.clear()
            self.bytes = 0
            self.paused = 0.0
            return
        for position, (issued, _) in enumerate(self.tickets):
            if issued == ticket:
                done = self.tickets[: position + 1]
                del self.tickets[: position + 1]
                self.bytes -= sum(size for _, size in done)
                self.paused = 0.0
                self.released = ticket
                return

    def forget(self, ticket: int) -> None:
        """The reply with ``ticket`` (the last one issued) was never sent: the client
        cannot read it, so it is not owed."""
        if self.tickets and self.tickets[-1][0] == ticket:
            self.bytes -= self.tickets.pop()[1]


class StateMachine(Protocol):
    """What a replicated application implements.

    ``apply`` is called once per committed command, in the total order, from
    the node's loop thread; it must be deterministic (same deliveries, same
    state on every node) and should be quick. If ``apply`` raises, the
    exception is the command's result (the broadcaster on this node gets it)
    and delivery goes on.

    Optionally, ``snapshot() -> bytes`` returns the whole state (called in the
    loop thread between deliveries, so it should copy or serialise quickly; the
    file is written in the background) and ``restore(data: bytes)`` replaces
    the state with one ``snapshot`` returned, on this node or on a peer. With
    both, the node snapshots and compacts its log, restarts from its latest
    snapshot and a lagging node installs a peer's. Without them, the node never
    compacts, and after a restart it calls ``apply`` again from index 1,
    rebuilding the state from scratch.
    """

    def apply(self, delivery: Delivery) -> Any: ...


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """A committed broadcast: its 1-based ``index`` in the total order, and what the
    local state machine's ``apply`` returned for it (None without a state machine)."""

    index: int
    result: Any


class _LocalSender:
    """The node's own client session, for broadcasts made through :meth:`Node.broadcast`.

    It opens its session through the log like any client. Payloads wait in
    ``held`` until the session is open and the window has room; a session that
    ends (expired while idle, say) is replaced, and the broadcasts it had not
    delivered are sent again in the new one: they can never be delivered in the
    old one after its end, so nothing is delivered twice.
    """

    def __init__(self, name: str, window: int) -> None:
        self.name = name
        self.window = window
        self.key: str | None = None
        self.nonce: bytes | None = None
        self.next_seq = 1
        self.waiting: dict[int, tuple[Command, concurrent.futures.Future[BroadcastResult]]] = {}
        self.held: list[tuple[bytes, concurrent.futures.Future[BroadcastResult]]] = []
        self.last_try = 0.0


class Node:
    """One cluster member: replica, transport, write-ahead log and delivery.

    Use :meth:`run` to serve in the calling thread (the ``paxos node`` command)
    or :meth:`start` / :meth:`stop` to run in a background thread inside an
    application, then :meth:`broadcast` from any thread (or
    ``await node.broadcast_async(...)`` from asyncio).

    ``cluster_id`` and ``max_payload_bytes`` are recorded in the data directory
    on the first start (defaults: the SPEC file's ``cluster_id`` or an id derived
    from the SPEC's members; 1 MiB) and must match on every later start.

    Guarantees: every node delivers every committed payload exactly once, all
    in one total order, each sender's payloads in the order it sent them; a
    payload whose broadcast returned is committed and survives any minority of
    crashes (with ``fsync=True``).

    Delivered commands go to the node's history (``<data_dir>/history``, see
    :mod:`broadcast.history`), which serves subscribers and :meth:`delivered`:
    at least ``retain_entries`` entries or ``retain_bytes`` payload bytes
    (default: 1,000,000 entries), older ones deleted, memory bounded.
    """

    def __init__(
        self,
        node_id: int,
        cluster: Cluster,
        data_dir: str | os.PathLike[str],
        *,
        state_machine: StateMachine | None = None,
        fsync: bool = True,
        tick_ms: int = 10,
        replica_config: ReplicaConfig | None = None,
        transport_config: TransportConfig | None = None,
        retry_s: float = 1.0,
        cluster_id: str | None = None,
        max_payload_bytes: int | None = None,
        snapshot_entries: int = DEFAULT_SNAPSHOT_ENTRIES,
        snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES,
        wal_segment_bytes: int = DEFAULT_WAL_SEGMENT_BYTES,
        retain_entries: int | None = None,
        retain_bytes: int | None = None,
        history_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        key_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        reply_budget_bytes: int = DEFAULT_REPLY_BUDGET,
        reply_cutoff_s: float = DEFAULT_REPLY_CUTOFF_S,
        max_clients: int | None = None,
        join: bool = False,
        metrics: str | None = None,
    ) -> None:
        if node_id not in cluster.nodes:
            raise ConfigError(f"node id {node_id} is not in the cluster ({cluster.spec()})")
        # A new member says so (--join): a node id that is not one of the cluster's
        # starting members by mistake, or one that is, started as new, is refused.
        if join and node_id in cluster.starting:
            raise ConfigError(
                f"node {node_id} is one of the cluster's starting members: --join is for "
                "members added later (paxos member add gives a new one a new id)"
            )
        if not join and node_id not in cluster.starting:
            raise ConfigError(
                f"node {node_id} is not one of the cluster's starting members "
                f"{list(cluster.starting_ids)}: a member added later starts with --join"
            )
        if tick_ms < 1:
            raise ConfigError("tick_ms must be >= 1")
        if metrics is not None:
            parse_listen(metrics)  # a bad address: refused before the data directory is touched
        if max_payload_bytes is not None and max_payload_bytes < 1:
            raise ConfigError("max_payload_bytes must be >= 1")
        if snapshot_entries < 1 or snapshot_bytes < 1:
            raise ConfigError("snapshot_entries and snapshot_bytes must be >= 1")
        if retain_entries is None and retain_bytes is None:
            retain_entries = DEFAULT_RETAIN_ENTRIES
        if (retain_entries or 0) < 0 or (retain_bytes or 0) < 0:
            raise ConfigError("retain_entries and retain_bytes must be >= 0")
        if history_segment_bytes < 1024:
            raise ConfigError("history_segment_bytes must be >= 1024")
        if reply_budget_bytes < 1 or reply_cutoff_s <= 0:
            raise ConfigError("reply_budget_bytes and reply_cutoff_s must be > 0")
        config = replica_config or ReplicaConfig(nodes=cluster.starting_ids)
        if config.nodes != cluster.starting_ids:
            raise ConfigError("replica_config.nodes must be the nodes the cluster started with")
        keyring: Keyring | None = None
        if insecure:
            log.warning(
                "node.insecure",
                node=node_id,
                warning="INSECURE: no authentication, no encryption. Anyone who can reach "
                f"{cluster.nodes[node_id]} can forge Paxos messages, make this cluster "
                "deliver what nobody broadcast, and read every payload. Benchmarks only.",
            )
        else:
            if not cluster.secure:
                raise ConfigError(
                    "the cluster names no CURVE keys: give a cluster file with keys "
                    "(paxos cluster up writes one), or run --insecure (no authentication)"
                )
            path = Path(key_file) if key_file is not None else Path(data_dir) / NODE_KEY_FILE
            keyring = Keyring.of(cluster, node_id, load_keypair(path))
        self.insecure = insecure
        #: Client name -> what its key may do (empty with --insecure: no keys at all).
        self._grants: dict[str, Grant] = dict(keyring.clients) if keyring else {}
        self.node_id = node_id
        self.cluster = cluster
        self.data_dir = Path(data_dir)
        self.state_machine = state_machine
        self.fsync = fsync
        self.tick_s = tick_ms / 1000.0
        self.retry_s = retry_s
        self.identity: Identity = establish(
            self.data_dir,
            node_id,
            cluster,
            cluster_id=cluster_id,
            max_payload_bytes=max_payload_bytes,
            default_max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
            alpha=config.alpha,
            phase2_quorum=config.phase2_quorum,
        )
        try:
            # The recorded limit decides what enters the log, the same on every member.
            self.config = dataclasses.replace(
                config, max_payload_bytes=self.identity.max_payload_bytes
            )
        except ValueError as exc:
            raise ConfigError(f"payload limit: {exc}") from None

        self.snapshots = SnapshotStore(self.data_dir / "snapshots", fsync=fsync)
        latest = self.snapshots.latest()
        snapshot = None
        if latest is not None:
            meta, blob = latest
            snapshot = Snapshot(meta.slot, meta.index, meta.crc, blob)
        self.wal, raw = WriteAheadLog.open(
            self.data_dir / "wal", fsync=fsync, segment_bytes=wal_segment_bytes
        )
        history: History | None = None
        try:
            if self.wal.floor > 1 and snapshot is None:
                # Segments were deleted because a snapshot covered them: without it, the
                # promises and accepted values they held are gone.
                raise WalCorruptionError(
                    str(self.data_dir / "wal"), -1, "log compacted, but no snapshot found"
                )
            #: Delivered commands, for subscribers: at least the retention, on disk.
            self.history = history = History(
                self.data_dir / "history",
                retain_entries=retain_entries or 0,
                retain_bytes=retain_bytes or 0,
                segment_bytes=history_segment_bytes,
                fsync=fsync,
            )
            records = self._decode_records(raw)
            #: Segment number -> highest slot accepted in it (for the compaction rule).
            self._segment_tops: dict[int, int] = {}
            position = 0
            for number, count in self.wal.recovered_segments:
                top = 0
                for record in records[position : position + count]:
                    if type(record) is AcceptRecord and record.slot > top:
                        top = record.slot
                position += count
                self._segment_tops[number] = top
            self.replica = Replica(
                node_id, self.config, random.Random(os.urandom(16)), records, snapshot
            )
            if snapshot is not None:
                self._restore_state_machine(snapshot)
            peers = {i: addr for i, addr in cluster.nodes.items() if i != node_id}
            self.transport = NodeTransport(
                node_id,
                bind_address(cluster.nodes[node_id]),
                peers,
                self._transport_config(transport_config, max_clients),
                cluster_id=cluster_id_bytes(self.identity.cluster_id),
                keyring=keyring,
            )
            self._connect_members()  # added through the log (snapshot or replayed prefix)
        except BaseException:
            if history is not None:
                history.close()
            self.wal.close()
            raise
        log.info(
            "node.recovered",
            node=node_id,
            cluster=self.identity.cluster_id,
            records=len(raw),
            snapshot_slot=snapshot.slot if snapshot else 0,
            ballot=list(self.replica.ballot),
            fsync=fsync,
            curve=not insecure,
            fd_limit=_fd_limit(),
            address=cluster.nodes[node_id],
            history=[self.history.first_index, self.history.last_index],
        )

        #: Keeps the Ready contract for every Ready of a turn.
        hooks = _Hooks(self)
        self.driver = ReadyDriver(hooks, hooks, hooks)
        # Per turn: slot values' encodings, and the Accept frames they arrived in.
        self._values: dict[int, tuple[Value, bytes]] = {}
        self._received_accepts: dict[int, tuple[Accept, bytes]] = {}
        # session key -> routing identity of its latest request here. Every delivery of
        # that session is acknowledged to it: acknowledging something committed is
        # always true, and a client ignores acks for seqs it is not waiting for.
        self._routes: dict[str, bytes] = {}
        self._acks: dict[bytes, dict[str, list[tuple[int, int, int]]]] = {}
        # (name, nonce) -> routing identity, for opens proposed here and not yet applied.
        self._pending_opens: dict[tuple[str, bytes], bytes] = {}
        self._held_fetches: list[tuple[float, bytes, Fetch]] = []
        # A state machine that answers remote callers (broadcast.answers): its results go
        # to the clients that broadcast the commands, and it answers read-only queries.
        self._encode_result: Callable[[Any], bytes] | None = _method(state_machine, "encode_result")
        self._query: Callable[[bytes, bool], bytes | None] | None = _method(state_machine, "query")
        self._due: Callable[[float, bool], list[bytes]] | None = _method(state_machine, "due")
        self._results = ResultCache() if self._encode_result is not None else None
        self._held_queries = HeldQueries()
        self._next_due = 0.0
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._local = _LocalSender(
            f"node{node_id}-{uuid.uuid4().hex[:8]}", self.config.session_window
        )
        self._callbacks: list[Callable[[Delivery], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_tick = time.monotonic() + self.tick_s
        # Repetitive warnings: one line at once, then at most one per 5 s with counts.
        self._dropped_frames = RateLimited(log, "frame.dropped", interval_s=5.0)
        self._failed_frames = RateLimited(log, "frame.failed", interval_s=5.0, level="error")
        self._failed_sends = RateLimited(log, "send.failed", interval_s=5.0, level="error")
        self._failed_applies = RateLimited(log, "apply.failed", interval_s=5.0, level="error")
        self._failed_reads = RateLimited(log, "history.read_failed", interval_s=5.0, level="error")
        self._failed_scrapes = RateLimited(
            log, "metrics.read_failed", interval_s=5.0, level="error"
        )
        self._sessions_gone = RateLimited(log, "session.ended", interval_s=5.0, level="info")
        #: Frames dropped (bad, hostile or failing), by reason; for tests and metrics.
        self.drops: dict[str, int] = {}
        self._role = (self.replica.role, self.replica.leader)
        # Snapshots: taken in this thread, written by one background thread.
        self.snapshot_entries = snapshot_entries
        self.snapshot_bytes = snapshot_bytes
        self._snapshots_enabled = state_machine is None or (
            callable(getattr(state_machine, "snapshot", None))
            and callable(getattr(state_machine, "restore", None))
        )
        if not self._snapshots_enabled:
            log.warning(
                "node.no_snapshots",
                node=node_id,
                reason="the state machine has no snapshot()/restore(): the log is never "
                "compacted and a restart replays it from index 1",
            )
        self._since_snapshot = (0, 0)  # deliveries and payload bytes since the last one
        #: The newest durable snapshot, taken here or installed from a peer.
        self._latest_snapshot: Snapshot | None = self.replica.snapshot
        self._saving: tuple[Snapshot, concurrent.futures.Future[object]] | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, f"paxos-snapshot-{node_id}")
        # `paxos snapshot` requests: (identity, nonce, the index delivered when it came).
        self._snapshot_waiters: list[tuple[bytes, int, int]] = []
        self._snapshot_now = False
        self._closed = False
        # Set when this node handed over, after hand_over() asked it to (see there).
        self._handover_done: threading.Event | None = None
        self._handover_commit = 0
        self._members_seen = (self.replica.current.epoch, self.replica.latest.epoch)
        #: Why :meth:`run` stopped, if it stopped on its own (a disk failure).
        self.failure: BaseException | None = None
        self.max_routes = 100_000
        # Replies owed to clients (tickets), and the clients cut off for not reading.
        self.reply_budget_bytes = reply_budget_bytes
        self.reply_cutoff_s = reply_cutoff_s
        self._owed: dict[bytes, _Owed] = {}
        self._paused: dict[bytes, float] = {}  # identity -> when it went over budget
        self._next_sweep = 0.0
        self._cut_off: dict[bytes, None] = {}
        self._denied = RateLimited(log, "client.denied", interval_s=5.0)
        self._cut_offs = RateLimited(log, "client.cut_off", interval_s=5.0)
        self._pauses = RateLimited(log, "client.paused", interval_s=5.0, level="info")
        #: Counters for Prometheus and the live view (None: ``metrics`` not given).
        self.metrics: NodeMetrics | None = None
        self._http: NodeHttp | None = None
        if metrics is not None:
            self.metrics = NodeMetrics(node_id)
            try:
                self._http = NodeHttp(
                    metrics, self.metrics, self._read_in_loop, node_id, self._loop_answers
                ).start()
            except BaseException:
                self.transport.close()
                self._writer.shutdown(wait=False)
                self.wal.close()
                self.history.close()
                raise

    def _transport_config(
        self, given: TransportConfig | None, max_clients: int | None
    ) -> TransportConfig:
        """``given`` as it is, or the default with ZeroMQ's message limit at this cluster's
        real frame limit (from its *recorded* payload limit) and ``max_clients``; the
        limit is lowered to what this process's open files allow (every connection costs
        one, and a node out of files cannot open its next log segment)."""
        if given is not None:
            return given
        wanted = max_clients if max_clients is not None else DEFAULT_MAX_CONNECTIONS
        room = max(16, _fd_limit() - 256)  # files for the logs, history, snapshots, peers
        if wanted > room:
            log.warning(
                "node.max_clients_lowered",
                node=self.node_id,
                wanted=wanted,
                max_clients=room,
                fd_limit=_fd_limit(),
                hint="raise the limit of open files (ulimit -n)",
            )
        return TransportConfig(
            max_msg_bytes=frame_limit(self.config), max_connections=min(wanted, room)
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Node:
        """Serve in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("node already started")
        self._thread = threading.Thread(
            target=self._run_in_thread, name=f"paxos-node-{self.node_id}"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # recorded: the application reads node.failure
            log.error("node.failed", node=self.node_id, error=f"{type(exc).__name__}: {exc}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release the socket and the log. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self.transport.wake()
            self._thread.join(timeout)
        elif not self._closed:
            self._close()

    def run(self) -> None:
        """Serve until :meth:`stop` (or KeyboardInterrupt) in the calling thread.

        Raises :class:`~broadcast.wal.WalError` if the log can no longer be written.
        """
        try:
            while not self._stop.is_set():
                self._turn()
        except BaseException as exc:
            self.failure = exc
            raise
        finally:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._http is not None:
            self._http.close()
        local = self._local
        for _, future in local.waiting.values():
            future.cancel()
        for _, future in local.held:
            future.cancel()
        self.transport.close()
        self._writer.shutdown(wait=True)  # a snapshot being written is finished, not torn
        self.wal.close()
        self.history.close()
        for limited in (
            self._dropped_frames,
            self._failed_frames,
            self._failed_sends,
            self._failed_applies,
            self._failed_reads,
            self._failed_scrapes,
            self._sessions_gone,
            self._denied,
            self._cut_offs,
            self._pauses,
        ):
            limited.flush()
        # What it refused or dropped over its life, by reason (e.g. "paused": fetches not
        # served to clients over their reply budget; "cut_off_clients").
        log.info(
            "node.stopped",
            node=self.node_id,
            drops=dict(self.drops),
            replies_dropped=self.transport.stats.reply_dropped,
        )

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ public API

    def broadcast(self, payload: bytes, timeout: float | None = None) -> BroadcastResult:
        """Broadcast ``payload`` and wait until it is committed and applied here.

        Returns its index in the total order and the local state machine's
        result. Raises :class:`~broadcast.errors.PayloadTooLarge` for a payload
        above the cluster's limit, ``TimeoutError`` after ``timeout`` seconds
        (the payload may still be committed later, exactly once).
        """
        return self.submit(payload).result(timeout)

    async def broadcast_async(self, payload: bytes) -> BroadcastResult:
        """``await``-able :meth:`broadcast` for asyncio applications."""
        import asyncio

        return await asyncio.wrap_future(self.submit(payload))

    def submit(self, payload: bytes) -> concurrent.futures.Future[BroadcastResult]:
        """Start a broadcast from any thread; the future resolves once committed here."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError("payload must be bytes")
        data = bytes(payload)
        limit = self.config.max_payload_bytes
        if len(data) > limit:
            raise PayloadTooLarge(len(data), limit)
        future: concurrent.futures.Future[BroadcastResult] = concurrent.futures.Future()
        self._inbox.put(lambda: self._local_broadcast(data, future))
        self.transport.wake()
        return future

    @property
    def last_index(self) -> int:
        """The last index recorded in this node's history of deliveries (0: none yet).

        After a restart it may be ahead of what the node has delivered again.
        """
        return self.history.last_index

    @property
    def first_index(self) -> int:
        """The earliest index this node still retains for subscribers."""
        return self.history.first_index

    def delivered(
        self, from_index: int = 1, max_count: int = 100_000, max_bytes: int = 64 * 1024 * 1024
    ) -> list[Command]:
        """Delivered commands from ``from_index`` on (at most ``max_count``, and about
        ``max_bytes`` of payloads), from this node's history; safe from any thread.

        Raises :class:`~broadcast.errors.Compacted` below :attr:`first_index`.
        """
        return self.history.read(from_index, max_count, max_bytes)

    def on_deliver(self, callback: Callable[[Delivery], None]) -> None:
        """Call ``callback(delivery)`` for every delivery, in order, from the loop thread."""
        self._callbacks.append(callback)

    @property
    def max_payload_bytes(self) -> int:
        """The cluster's payload limit."""
        return self.config.max_payload_bytes

    def members(self, nonce: int = 0) -> Members:
        """The newest membership applied here, with every member's address and key."""
        r = self.replica
        latest = r.latest
        where = self._endpoints()
        return Members(
            nonce,
            r.leader or 0,
            latest.epoch,
            r.current.epoch,
            latest.voters,
            latest.learners,
            latest.phase1_quorum,
            latest.phase2_quorum,
            tuple((i, *where[i]) for i in latest.members if i in where),
        )

    def _endpoints(self) -> dict[int, tuple[str, str]]:
        """Every node's (address, key) we know: the cluster file's, then the log's."""
        where = {i: (a, self.cluster.keys.get(i, "")) for i, a in self.cluster.nodes.items()}
        for _, members in self.replica.configs:
            for node, address, key in members.endpoints:
                where[node] = (address, key)
        return where

    def _connect_members(self) -> None:
        """Connect to (and let in) every member the log names that we do not know yet:
        the membership is stored in the cluster, not in our cluster file. Stop letting
        in, and sending to, a node the log removed, once no membership that still
        governs a slot names it (its votes count until then)."""
        r = self.replica
        self._members_seen = (r.current.epoch, r.latest.epoch)
        named = {n for _, members in r.configs for n in members.members}
        for node in self.transport.peer_ids:
            if node not in named and node <= r.latest.max_id:
                self.transport.remove_member(node)
                log.info("member.removed", node=self.node_id, member=node)
        for _, members in self.replica.configs:
            for node, address, key in members.endpoints:
                if node == self.node_id or self.transport.has_peer(node):
                    continue
                try:
                    self.transport.add_member(node, address, key)
                except (TransportError, ValueError) as exc:
                    # A bad address or key came through the log (an operator's typo): the
                    # member stays unreachable from here, nothing else is affected.
                    log.error("member.unreachable", node=self.node_id, member=node,
                              address=address[:300], error=str(exc)[:300])
                    continue
                log.info("member.connected", node=self.node_id, member=node, address=address)

    def hand_over(self, timeout: float = 2.0) -> bool:
        """A graceful stop of the leader: hand leadership to the voter furthest along and
        wait (at most ``timeout``) until another node leads, this node forwarded what it
        had queued to it, and the new leader committed after it (so that this node also
        acknowledged to its clients what they sent it). From any thread."""
        done = threading.Event()
        outcome: list[bool] = []

        def begin() -> None:
            r = self.replica
            if not r.is_leader:
                outcome.append(False)
                done.set()
                return
            ready, refused = r.transfer_leadership()  # to the voter furthest along
            self._take(ready)
            log.info("leader.transfer", node=self.node_id, to=r.transfer_to, refused=refused)
            if refused is not None:
                outcome.append(False)
                done.set()
            else:
                self._handover_done = done

        self._inbox.put(begin)
        self.transport.wake()
        done.wait(timeout)
        return bool(done.is_set() and not outcome)

    def _check_handover(self) -> None:
        r = self.replica
        if r.is_leader:
            self._handover_commit = r.commit
            return
        if r.leader in (None, self.node_id) or r.backlog()[0]:
            return  # the new leader is not known yet, or our queue not forwarded to it
        if r.commit <= self._handover_commit:
            return  # what we forwarded is not committed yet: our clients' acks would die
        assert self._handover_done is not None
        self._handover_done.set()
        self._handover_done = None

    def status(self, nonce: int = 0) -> Status:
        r = self.replica
        latest = self._latest_snapshot
        return Status(
            nonce,
            self.node_id,
            r.role.value,
            r.ballot,
            r.leader or 0,
            r.commit,
            r.delivered_index,
            self.fsync,
            r.leader_ok(),
            self.identity.cluster_id,
            r.session_count(),
            latest.slot if latest is not None else 0,
            latest.index if latest is not None else 0,
            r.floor,
            self.wal.disk_bytes() if not self._closed else 0,
            self.transport.connections_in_use(),
        )

    def _reading(self) -> Reading:
        """The gauges of a scrape, read in the loop (so that they agree)."""
        r = self.replica
        latest = self._latest_snapshot
        backlog = r.backlog()
        members = r.current
        stats = self.transport.stats
        return Reading(
            node=self.node_id,
            role=r.role.value,
            ballot=r.ballot,
            leader=r.leader or 0,
            commit=r.commit,
            known_commit=max(r.known_commit, r.commit),
            delivered=r.delivered_index,
            leader_ok=r.leader_ok(),
            sessions=r.session_count(),
            connections=self.transport.connections_in_use(),
            backlog_commands=backlog[0],
            backlog_bytes=backlog[1],
            held_fetches=len(self._held_fetches),
            owed_reply_bytes=sum(owed.bytes for owed in self._owed.values()),
            paused_clients=len(self._paused),
            local_waiting=len(self._local.waiting) + len(self._local.held),
            snapshot_slot=latest.slot if latest is not None else 0,
            snapshot_index=latest.index if latest is not None else 0,
            floor=r.floor,
            wal_bytes=self.wal.disk_bytes(),
            history_first=self.history.first_index,
            history_last=self.history.last_index,
            epoch=members.epoch,
            voters=len(members.voters),
            learners=len(members.learners),
            transport={
                "sent": stats.sent,
                "received": stats.received,
                "dropped_to_peers": stats.total_dropped,
                "replies_dropped": stats.reply_dropped,
                "malformed": stats.malformed,
                "foreign_cluster": stats.foreign_cluster,
                "unauthorised": stats.unauthorised,
            },
            drops=dict(self.drops),
        )

    def _loop_answers(self, timeout: float) -> bool:
        """Whether the loop runs a piece of work put in its inbox within ``timeout``
        (for /healthz, from the HTTP thread)."""
        if self._closed or self._stop.is_set():
            return False
        ran = threading.Event()
        self._inbox.put(ran.set)
        self.transport.wake()
        return ran.wait(timeout)

    def _read_in_loop(self, timeout: float) -> Reading | None:
        """A :class:`Reading` from the loop's thread (for the HTTP thread), or None if
        the loop did not answer within ``timeout`` (stuck, or not running)."""
        if self._closed or self._stop.is_set():
            return None
        answer: concurrent.futures.Future[Reading] = concurrent.futures.Future()

        def read() -> None:
            # In the loop: whatever reading the gauges raises (os.scandir of the log
            # directory out of files, say) is this scrape's failure, not the node's.
            if answer.done():
                return
            try:
                reading = self._reading()
            except Exception as exc:
                self._failed_scrapes.hit(
                    node=self.node_id, error=f"{type(exc).__name__}: {exc}"[:300]
                )
                answer.set_exception(exc)
            else:
                answer.set_result(reading)

        self._inbox.put(read)
        self.transport.wake()
        try:
            return answer.result(timeout)
        except concurrent.futures.TimeoutError:
            answer.cancel()
            return None
        except Exception:
            return None  # (logged by the loop, rate-limited)

    # ------------------------------------------------------------------ the loop

    def _turn(self) -> None:
        now = time.monotonic()
        timeout_ms = max(0, int((self._next_tick - now) * 1000) + 1)
        if self.driver.pending or not self._inbox.empty():
            timeout_ms = 0
        for identity, frame, principal in self.transport.poll(timeout_ms):
            try:
                self._on_frame(identity, frame, principal)
            except StepFailed as exc:
                # The replica's own bug, not the sender's: keep what it persisted and
                # delivered (its memory already holds it), send nothing of that step.
                self._take(exc.ready)
                self._frame_failed(identity, frame, exc.__cause__ or exc)
            except Exception as exc:
                self._frame_failed(identity, frame, exc)
        while True:
            try:
                work = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._safely(work)
        now = time.monotonic()
        if now >= self._next_tick:
            self._safely(lambda: self._take(self.replica.tick()))
            self._next_tick += self.tick_s
            if now - self._next_tick > 1.0:  # paused or overloaded: do not replay every tick
                self._next_tick = now + self.tick_s
            self._safely(lambda: self._retry_local(now))
            self._expire_fetches(now)
            if self._held_queries:
                self._serve_queries(now, expire=True)
            if self._due is not None and now >= self._next_due:
                self._next_due = now + _DUE_INTERVAL_S
                self._safely(lambda: self._propose_due(now))
            self._cut_off_paused(now)
        self._flush()
        if self._snapshots_enabled:
            self._snapshot_turn()
        r = self.replica
        role = (r.role, r.leader)
        if self.metrics is not None:
            self.metrics.end_turn(r.role.value, r.leader or 0, r.ballot, r.commit, now)
        if self._handover_done is not None:
            self._check_handover()
        if (r.current.epoch, r.latest.epoch) != self._members_seen:
            self._connect_members()
        if role != self._role:
            self._role = role
            log.info(
                "node.role",
                node=self.node_id,
                role=role[0].value,
                leader=role[1],
                ballot=list(self.replica.ballot),
            )

    def _take(self, ready: Ready) -> None:
        self.driver.take(ready)

    def _safely(self, work: Callable[[], None]) -> None:
        """Run work that calls into the replica (a tick, a local broadcast). If the
        replica raises (a bug), what it already changed is persisted all the same and
        the node goes on; the error is logged, rate-limited."""
        try:
            work()
        except StepFailed as exc:
            self._take(exc.ready)
            self._count("failed")
            cause = exc.__cause__ or exc
            self._failed_frames.hit(
                node=self.node_id, work="local", error=f"{type(cause).__name__}: {cause}"[:300]
            )

    def _flush(self) -> None:
        """The turn's Readies, in the contract's order (paxos.multi.driver)."""
        try:
            self.driver.flush()
        finally:
            self._values.clear()
            self._received_accepts.clear()

    def _append(self, records: Sequence[Record]) -> None:
        # A failure here (WalError) is not survivable: it ends run(). A node that
        # cannot persist must not promise or accept anything.
        self.wal.append([self._encode_record(r) for r in records])
        top = 0
        for record in records:
            if type(record) is AcceptRecord and record.slot > top:
                top = record.slot
        if top and self.metrics is not None and self.metrics.events is not None:
            accepts = [r for r in records if type(r) is AcceptRecord]
            self.metrics.count_accepts(
                min(r.slot for r in accepts), top, accepts[-1].ballot
            )
        # (a batch never straddles segments: all of it went to the current one)
        segment = self.wal.current_segment
        if top > self._segment_tops.get(segment, 0):
            self._segment_tops[segment] = top
        else:
            self._segment_tops.setdefault(segment, 0)

    def _apply(self, ready: Ready) -> None:
        if ready.installed is not None:
            # A peer's snapshot replaced our state: the state machine follows it before
            # the deliveries after it.
            self._restore_state_machine(ready.installed)
            self._since_snapshot = (0, 0)
            self._local_after_install()
            if self.metrics is not None:
                self.metrics.snapshots_installed += 1
                self.metrics.note(
                    {"kind": "install", "node": self.node_id, "slot": ready.installed.slot}
                )
            log.info(
                "snapshot.installed",
                node=self.node_id,
                slot=ready.installed.slot,
                index=ready.installed.index,
                bytes=ready.installed.size,
            )
        if ready.configs:
            for chosen_at, start, members in ready.configs:
                log.info(
                    "membership.changed",
                    node=self.node_id,
                    epoch=members.epoch,
                    voters=list(members.voters),
                    learners=list(members.learners),
                    phase2_quorum=members.phase2_quorum,
                    chosen_at=chosen_at,
                    from_slot=start,
                )
                if self.metrics is not None:
                    self.metrics.membership_changes += 1
                    self.metrics.note(
                        {"kind": "members", "node": self.node_id, "epoch": members.epoch,
                         "voters": list(members.voters), "learners": list(members.learners),
                         "from_slot": start}
                    )
            # (the turn connects to new members and drops removed ones: _turn)
        if ready.opened:
            self._sessions_opened(ready.opened)
        if ready.deliveries:
            self._deliver(ready.deliveries, ready.runs)
        if ready.ended:
            self._sessions_ended(ready.ended)

    def _value_bytes(self, value: Value) -> bytes:
        """A slot value's msgpack bytes, encoded (or cut from the received Accept) once per turn.

        Keyed by identity; the entry holds the value itself, so the id stays its own
        until the cache is cleared at the end of the turn.
        """
        key = id(value)
        hit = self._values.get(key)
        if hit is not None:
            return hit[1]
        data: bytes | None = None
        received = self._received_accepts.get(key)
        if received is not None:
            data = accept_value_bytes(received[1], received[0])
        if data is None:
            data = encode_value(value)
        self._values[key] = (value, data)
        return data

    def _encode_record(self, record: Record) -> bytes:
        if isinstance(record, AcceptRecord):
            return encode_accept_record(record, self._value_bytes(record.value))
        return encode(record)

    def _send(self, messages: Sequence[tuple[int, Message]]) -> None:
        per_peer: dict[int, list[bytes]] = {}
        encoded: dict[int, bytes | None] = {}  # one encoding per message object
        for dst, msg in messages:
            key = id(msg)
            if key in encoded:
                frame = encoded[key]
            else:
                try:
                    if isinstance(msg, Accept):
                        frame = encode_accept(msg, self._value_bytes(msg.value))
                    else:
                        frame = encode(msg)
                except CodecError as exc:
                    # Cannot happen with the replica's bounds; if it does, this one
                    # message is lost (Paxos survives lost messages), not the node.
                    frame = None
                    self._count("encode")
                    self._failed_sends.hit(
                        node=self.node_id, type=type(msg).__name__, reason=str(exc)[:200]
                    )
                encoded[key] = frame
            if frame is not None:
                per_peer.setdefault(dst, []).append(frame)
        if self.metrics is not None:
            self.metrics.count_sent(messages, encoded, time.monotonic())
        transport = self.transport
        for dst, frames in per_peer.items():
            if not transport.has_peer(dst):
                # A node the replica heard of (a message in its name, a member the log
                # added) that this runtime has no address for: dropped, like any loss.
                self._count("unknown_peer")
                continue
            # Dropped frames are fine: Paxos retransmits what matters.
            transport.send_many(dst, frames)

    def _deliver(self, deliveries: list[Delivery], runs: list[tuple[str, int, int, int]]) -> None:
        # One write per turn; a failure (HistoryError: the disk) ends run(), like the WAL's.
        history = self.history
        commands = list(map(_command_of, deliveries))
        if self.metrics is not None:
            self.metrics.count_delivered(len(commands), runs)
        history.append(deliveries[0].index, commands)
        history.trim()
        count, size = self._since_snapshot
        self._since_snapshot = (
            count + len(commands),
            size + sum(map(len, map(_payload_of, commands))),
        )
        sm = self.state_machine
        local = self._local
        results: dict[int, Any] = {}
        # Remote callers' results: (client, seq, index, encoded result).
        answered: list[tuple[str, int, int, bytes]] = []
        encode_result = self._encode_result
        if sm is not None or self._callbacks:
            callbacks = self._callbacks
            local_key = local.key
            for delivery in deliveries:
                result: Any = None
                if sm is not None:
                    try:
                        result = sm.apply(delivery)
                    except Exception as exc:
                        # Deterministic code fails alike on every replica: the failure
                        # is the command's result; the order goes on.
                        result = exc
                        self._failed_applies.hit(
                            node=self.node_id, index=delivery.index, error=repr(exc)[:200]
                        )
                for callback in callbacks:
                    try:
                        callback(delivery)
                    except Exception as exc:
                        self._failed_applies.hit(
                            node=self.node_id, index=delivery.index, callback=repr(exc)[:200]
                        )
                if delivery.command.client == local_key:
                    results[delivery.index] = result
                elif encode_result is not None and delivery.command.seq:
                    command = delivery.command
                    answered.append(
                        (command.client, command.seq, delivery.index, self._encoded(result))
                    )
        routes = self._routes
        acks = self._acks
        local_key = local.key
        # Acknowledge by runs (one per client per batch), not command by command.
        for client, first_seq, first_index, count in runs:
            if client == local_key:
                for k in range(count):
                    index = first_index + k
                    self._resolve_local(first_seq + k, index, results.get(index))
                continue
            identity = routes.get(client)
            if identity is not None:
                acks.setdefault(identity, {}).setdefault(client, []).append(
                    (first_seq, first_index, count)
                )
        self._send_acks()
        if answered:
            self._send_results(answered)
        if local.held:
            self._send_held()
        if self._held_fetches:
            self._serve_fetches(time.monotonic(), expire=False)
        if self._held_queries:
            self._serve_queries(time.monotonic(), expire=False)

    def _resolve_local(self, seq: int, index: int, result: Any) -> None:
        entry = self._local.waiting.pop(seq, None)
        if entry is None:
            return
        future = entry[1]
        if future.cancelled():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(BroadcastResult(index, result))

    # ------------------------------------------------------------------ sessions

    def _sessions_opened(self, opened: list[tuple[str, bytes, str]]) -> None:
        local = self._local
        for name, nonce, key in opened:
            if name == local.name and nonce == local.nonce and local.key is None:
                local.key = key
                local.next_seq = 1
                self._send_held()
            identity = self._pending_opens.pop((name, nonce), None)
            if identity is not None:
                self._reply(identity, self._opened(nonce, key))

    def _opened(self, nonce: bytes, key: str) -> SessionOpened:
        return SessionOpened(
            nonce,
            key,
            self.identity.cluster_id,
            self.config.max_payload_bytes,
            self.config.session_window,
        )

    def _sessions_ended(self, ended: list[tuple[str, int, str]]) -> None:
        local = self._local
        for key, last, reason in ended:
            # A client closing its session is routine; expiries and evictions are news,
            # but a client opening sessions in a loop evicts one per open: rate-limited.
            if reason == "closed":
                log.debug("session.ended", node=self.node_id, session=key, reason=reason)
            else:
                self._sessions_gone.hit(
                    node=self.node_id, session=key, last_seq=last, reason=reason
                )
            if key == local.key:
                self._local_session_ended(last)
            identity = self._routes.pop(key, None)
            if identity is not None:
                # The client may be waiting for some of it: tell it now.
                self._reply(identity, SessionEnded(key, True, last))

    # ------------------------------------------------------------------ frames

    def _on_frame(self, identity: bytes, frame: bytes, principal: str = "") -> None:
        try:
            msg = decode(frame)
        except CodecError as exc:
            self._drop(identity, "undecodable", f"undecodable frame: {exc}", len(frame))
            return
        if self.metrics is not None:
            self.metrics.count_received(type(msg), len(frame))
        if isinstance(msg, _MESSAGE_TYPES):
            # Only a node may speak Paxos, and only under its own id. With CURVE the
            # transport reports a member as n:<id> of its *key*, and a client key never
            # as a node: a forged Prepare, Accept, Accepted or CatchupReply from anyone
            # else ends here.
            if node_id_of(identity) != msg.src:  # type: ignore[attr-defined]
                self._drop(identity, "src", "message src does not match the sender", len(frame))
                return
            if type(msg) is Accept:
                # Its value goes to our log as it came: no second encoding.
                self._received_accepts[id(msg.value)] = (msg, frame)
            self._take(self.replica.step(msg))  # type: ignore[arg-type]
        elif node_id_of(identity) is not None:
            # Peers speak Paxos only; client requests come from client identities.
            self._drop(identity, "unexpected", f"{type(msg).__name__} from a node", len(frame))
        elif identity in self._cut_off:
            self._count("cut_off")  # it stopped reading what it asked for: never again
        elif isinstance(msg, Submit):
            if self._permits(identity, principal, BROADCAST):
                self._on_submit(identity, msg, self._grant(principal))
        elif isinstance(msg, Fetch):
            if self._permits(identity, principal, SUBSCRIBE):
                self._on_fetch(identity, msg)
        elif isinstance(msg, StatusRequest):
            if self._permits(identity, principal, STATUS):
                self._reply(identity, self.status(msg.nonce))
        elif isinstance(msg, FetchSnapshot):
            if self._permits(identity, principal, SUBSCRIBE):
                self._on_fetch_snapshot(identity, msg)
        elif isinstance(msg, Query):
            if self._permits(identity, principal, SUBSCRIBE):
                self._on_query(identity, msg)
        elif isinstance(msg, TakeSnapshot):
            if not self._permits(identity, principal, ADMIN):
                return
            if not self._snapshots_enabled or len(self._snapshot_waiters) >= _MAX_SNAPSHOT_WAITERS:
                self._reply(identity, self.status(msg.nonce))  # nothing to wait for
            else:
                self._snapshot_waiters.append(
                    (identity, msg.nonce, self.replica.delivered_index)
                )
                self._snapshot_now = True
        elif isinstance(msg, MembersRequest):
            if self._permits(identity, principal, STATUS):
                self._reply(identity, self.members(msg.nonce))
        elif isinstance(msg, ChangeMembers):
            if self._permits(identity, principal, ADMIN):
                self._on_change_members(identity, msg)
        elif isinstance(msg, TransferLeader):
            if self._permits(identity, principal, ADMIN):
                ready, reason = self.replica.transfer_leadership(msg.target)
                self._take(ready)
                log.info("leader.transfer", node=self.node_id, to=msg.target, refused=reason)
                self._reply(
                    identity, ChangeAnswer(msg.nonce, reason or "", self.replica.leader or 0)
                )
        elif isinstance(msg, OpenSession):
            if self._permits(identity, principal, BROADCAST) and self._may_use(
                identity, principal, msg.name
            ):
                self._on_open_session(identity, msg)
        elif isinstance(msg, CloseSession):
            if (
                self._permits(identity, principal, BROADCAST)
                and self._may_use(identity, principal, session_name(msg.key))
                and self.replica.session_status(msg.key)[0] == "live"
            ):
                self._take(self.replica.propose([close_command(msg.key)]))
        else:
            self._drop(identity, "unexpected", f"unexpected {type(msg).__name__}", len(frame))

    def _on_change_members(self, identity: bytes, msg: ChangeMembers) -> None:
        try:
            op = Op(msg.op)
        except ValueError:
            self._reply(identity, ChangeAnswer(msg.nonce, f"no operation {msg.op}", 0))
            return
        if op is Op.ADD_LEARNER and not self.insecure:
            # The new member's key travels in the log to every member: check it here. A
            # key already in use (a node's or a client's) would let its owner speak as
            # the new member everywhere, for good (review finding).
            try:
                raw_key(msg.key)
            except (ValueError, UnicodeError):
                self._reply(identity, ChangeAnswer(msg.nonce, "not a Z85 public key", 0))
                return
            used = {key for _, key in self._endpoints().values()}
            used.update(grant.key for grant in self._grants.values())
            if msg.key in used:
                self._reply(identity, ChangeAnswer(
                    msg.nonce, "does not apply: that key is already in use", 0
                ))
                return
        ready, reason = self.replica.reconfigure(op, msg.node, msg.address, msg.key)
        self._take(ready)
        if reason is None:
            log.info("membership.requested", node=self.node_id, op=op.name.lower(),
                     member=msg.node, address=msg.address[:300])
        self._reply(identity, ChangeAnswer(msg.nonce, reason or "", self.replica.leader or 0))

    # ------------------------------------------------------------------ authorisation

    def _grant(self, principal: str) -> Grant | None:
        """The grant of a client principal ``c:<name>``; None with --insecure."""
        if not principal:
            return None
        return self._grants.get(principal[len(CLIENT_PRINCIPAL) :])

    def _permits(self, identity: bytes, principal: str, permission: str) -> bool:
        """Whether the client's key may do ``permission``; if not, it is told (Denied)."""
        if not principal:
            return True  # --insecure: there are no keys, so no grants to check
        grant = self._grant(principal)
        if grant is not None and grant.may(permission):
            return True
        self._deny(identity, principal, permission)
        return False

    def _may_use(self, identity: bytes, principal: str, name: str) -> bool:
        """Whether the client's key may use sessions named ``name``: one client can never
        write into, read the acknowledgements of or ask about another client's session."""
        if not principal:
            return True
        grant = self._grant(principal)
        if grant is not None and grant.may_use(name):
            return True
        self._deny(identity, principal, f"session {name[:64]}")
        return False

    def _deny(self, identity: bytes, principal: str, what: str) -> None:
        self._count("denied")
        self._denied.hit(node=self.node_id, client=principal, denied=what)
        self._reply(identity, Denied(what))

    # ------------------------------------------------------------------ reply budget

    def _send_owed(self, identity: bytes, build: Callable[[int], object]) -> None:
        """Send a large reply (deliveries, a snapshot part) within the client's budget:
        ``build(ticket)`` makes it. A client over its budget is paused (the reply is not
        sent); one that does not read cannot make the node hold more than its budget."""
        # Unguessable (a CSPRNG): only a client that read the reply can show its ticket.
        ticket = secrets.randbits(62) + 1
        try:
            frame = encode(build(ticket))
        except CodecError as exc:
            self._count("encode")
            self._failed_sends.hit(node=self.node_id, type="reply", reason=str(exc)[:200])
            return
        owed = self._owed.get(identity)
        now = time.monotonic()
        if owed is None:
            if len(self._owed) >= _MAX_OWED:
                forgotten = next(iter(self._owed))  # bounded: the oldest is forgotten
                del self._owed[forgotten]
                self._paused.pop(forgotten, None)
            owed = self._owed[identity] = _Owed(now)
        owed.last = now
        size = len(frame)  # what the reply really costs, not an estimate of it
        if (owed.bytes and owed.bytes + size > self.reply_budget_bytes) or len(
            owed.tickets
        ) >= _MAX_TICKETS:
            if not owed.paused:
                owed.paused = now
                self._paused[identity] = now
            self._count("paused")
            self._pauses.hit(
                node=self.node_id,
                client=identity[:64].decode("ascii", "replace"),
                owed_bytes=owed.bytes,
                paused_total=self.drops["paused"],
            )
            return
        owed.tickets.append((ticket, size))
        owed.bytes += size
        if not self.transport.reply(identity, frame):
            # Not even queued (client gone, or its queue full): it cannot read it, so it
            # is not owed; else a client that reads all it gets could stay over budget.
            owed.forget(ticket)

    def _read_up_to(self, identity: bytes, ticket: int) -> None:
        """The client shows the ticket of the last reply it read (see _Owed.release)."""
        owed = self._owed.get(identity)
        if owed is not None and ticket:
            owed.release(ticket)
            owed.last = time.monotonic()
            if not owed.paused:
                self._paused.pop(identity, None)

    def _cut_off_paused(self, now: float) -> None:
        """Cut off the clients paused over their budget for ``reply_cutoff_s``: they asked
        for replies and do not read them. Forget, once a second, the ledgers of clients
        that asked nothing for that long (gone, most of them), so that their number stays
        that of the clients that are active."""
        limit = now - self.reply_cutoff_s
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            for identity in [i for i, o in self._owed.items() if o.last < limit and not o.paused]:
                del self._owed[identity]
        if not self._paused:
            return
        for identity in [i for i, since in self._paused.items() if since < limit]:
            del self._paused[identity]
            owed = self._owed.pop(identity, None)
            if owed is None:
                continue
            if len(self._cut_off) >= _MAX_CUT_OFF:
                del self._cut_off[next(iter(self._cut_off))]
            self._cut_off[identity] = None
            self._held_fetches = [e for e in self._held_fetches if e[1] != identity]
            self._held_queries.forget(identity)
            self._count("cut_off_clients")
            self._cut_offs.hit(
                node=self.node_id,
                client=identity[:64].decode("ascii", "replace"),
                owed_bytes=owed.bytes,
                paused_s=round(now - owed.paused, 1),
            )

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _drop(self, identity: bytes, reason: str, detail: str, size: int) -> None:
        self._count(reason)
        # Bounded logging: a flood of junk must not turn into a flood of log lines.
        self._dropped_frames.hit(
            node=self.node_id,
            sender=identity[:64].decode("ascii", "replace"),
            reason=detail[:200],
            bytes=size,
        )

    def _frame_failed(self, identity: bytes, frame: bytes, exc: BaseException) -> None:
        """Handling one frame raised: a bug, logged with what it was; the node goes on."""
        self._count("failed")
        kind = "?"
        with contextlib.suppress(CodecError):
            kind = type(decode(frame)).__name__
        self._failed_frames.hit(
            node=self.node_id,
            sender=identity[:64].decode("ascii", "replace"),
            type=kind,
            bytes=len(frame),
            error=f"{type(exc).__name__}: {exc}"[:300],
        )

    def _reply(self, identity: bytes, msg: object) -> bool:
        """Queue a reply; False if it could not be (see ``NodeTransport.reply``)."""
        try:
            frame = encode(msg)
        except CodecError as exc:
            self._count("encode")
            self._failed_sends.hit(node=self.node_id, type=type(msg).__name__, reason=str(exc))
            return False
        return self.transport.reply(identity, frame)

    def _on_open_session(self, identity: bytes, msg: OpenSession) -> None:
        if msg.cluster_id and msg.cluster_id != self.identity.cluster_id:
            self._drop(identity, "cluster", f"client wants cluster {msg.cluster_id}", 0)
            self._reply(identity, SubmitRefused(msg.name, 0, "cluster", 0))
            return
        if not 0 < len(msg.name) <= MAX_NAME_LEN:
            self._reply(identity, SubmitRefused(msg.name, 0, "bad_name", 0))
            return
        key = self.replica.session_key(msg.name, msg.nonce)
        if key is not None:
            self._reply(identity, self._opened(msg.nonce, key))
            return
        pending = self._pending_opens
        if (msg.name, msg.nonce) not in pending and len(pending) >= _MAX_PENDING_OPENS:
            del pending[next(iter(pending))]  # bounded: that client retries
        pending[(msg.name, msg.nonce)] = identity
        self._take(self.replica.propose([open_command(msg.name, msg.nonce)]))

    def _on_submit(self, identity: bytes, msg: Submit, grant: Grant | None = None) -> None:
        replica = self.replica
        routes = self._routes
        limit = self.config.max_payload_bytes
        leader = replica.leader or 0
        fresh: list[Command] = []
        retried: list[tuple[str, int, int, bytes]] = []
        known: dict[str, tuple[str, int | None]] = {}
        stopped: set[str] = set()
        for command in msg.commands:
            key, seq, payload = command
            if key in stopped:
                continue
            state = known.get(key)
            if state is None:
                if grant is not None and not grant.may_use(session_name(key)):
                    # Another client's session: it may neither write into it nor learn
                    # anything about it (not even whether it exists).
                    principal = f"{CLIENT_PRINCIPAL}{grant.name}"
                    self._deny(identity, principal, f"session {session_name(key)[:64]}")
                    stopped.add(key)
                    continue
                state = known[key] = replica.session_status(key)
                if state[0] == "ended":
                    # Its session is gone: none of its commands beyond its last seq
                    # will ever be delivered. Tell the client instead of queueing.
                    last = state[1]
                    self._reply(identity, SessionEnded(key, last is not None, last or 0))
                    stopped.add(key)
                    continue
                if state[0] == "unknown":
                    # Not a session as far as we have applied the log (maybe opened a
                    # moment ago elsewhere): such commands could only fill the log with
                    # what is never delivered. The client resends later or elsewhere.
                    self._reply(identity, SubmitRefused(key, seq, "no_session", leader))
                    stopped.add(key)
                    continue
                if routes.get(key) != identity:
                    routes.pop(key, None)
                    routes[key] = identity  # most recent last, so the oldest go first
                    if len(routes) > self.max_routes:
                        del routes[next(iter(routes))]
            if seq == 0:
                # Clients open and close sessions with their own messages; a system
                # command smuggled in a Submit is not theirs to make.
                self._drop(identity, "system", "system command in a Submit", len(payload))
                stopped.add(key)
                continue
            if len(payload) > limit:
                # Never enters the log; the client must not resend it (nor what follows
                # it in its session, which would wait for it forever).
                self._reply(identity, SubmitRefused(key, seq, "too_large", leader))
                stopped.add(key)
                continue
            last = state[1]
            if last is not None and seq <= last:
                # Delivered already (a retry): answer from the replicated session.
                index = replica.outcome(key, seq)
                if index:
                    self._ack(identity, key, seq, index)
                    if self._results is not None:
                        retried.append((key, seq, index, b""))
            else:
                fresh.append(command)
        if fresh:
            queued, queued_bytes = replica.backlog()
            if (
                queued + len(fresh) > self.config.queue_max
                or queued_bytes + sum(len(c.payload) for c in fresh) > self.config.queue_max_bytes
            ):
                # Backpressure: refuse instead of queueing without bound; the client retries.
                first = fresh[0]
                self._reply(identity, SubmitRefused(first.client, first.seq, "busy", leader))
            else:
                self._take(replica.propose(fresh))
        self._send_acks()
        if retried:
            # Never applied again: the result comes from the cache, or is unknown.
            self._send_results(retried, identity)

    def _ack(self, identity: bytes, client: str, seq: int, index: int) -> None:
        self._acks.setdefault(identity, {}).setdefault(client, []).append((seq, index, 1))

    def _send_acks(self) -> None:
        if not self._acks:
            return
        leader = self.replica.leader or 0
        for identity, per_client in self._acks.items():
            for client, acks in per_client.items():
                for i in range(0, len(acks), ACK_RUNS_MAX):  # bounded frames
                    part = tuple(acks[i : i + ACK_RUNS_MAX])
                    self._reply(identity, SubmitAck(client, part, leader))
        self._acks = {}

    # ------------------------------------------------------------------ answers

    def _encoded(self, result: Any) -> bytes:
        """``result`` as the state machine encodes it for remote callers; b"" (sent as
        "unknown") if that fails or is larger than a payload may be."""
        assert self._encode_result is not None
        try:
            data = self._encode_result(result)
        except Exception as exc:
            self._failed_applies.hit(node=self.node_id, encode_result=repr(exc)[:200])
            return b""
        if type(data) is not bytes or len(data) > self.config.max_payload_bytes:
            return b""
        return data

    def _send_results(
        self, answered: list[tuple[str, int, int, bytes]], identity: bytes | None = None
    ) -> None:
        """Cache fresh results (``identity`` None) and send each to the client it is
        routed to; retried ones (``identity`` given, result b"") come from the cache."""
        cache = self._results
        assert cache is not None
        out: dict[tuple[bytes, str], list[tuple[int, int, bool, bytes]]] = {}
        routes = self._routes
        for client, seq, index, data in answered:
            if identity is None:
                if data:
                    cache.put(client, seq, index, data)
                to = routes.get(client)
                if to is None:
                    continue
                known = bool(data)
            else:
                to = identity
                hit = cache.get(client, seq)
                known = hit is not None and hit[0] == index
                data = hit[1] if known and hit is not None else b""
            out.setdefault((to, client), []).append((seq, index, known, data))
        for (to, client), items in out.items():
            start = 0
            while start < len(items):  # bounded frames: count and bytes
                end, size = start, 0
                while end < len(items) and end - start < ACK_RUNS_MAX:
                    size += len(items[end][3])
                    end += 1
                    if size >= FETCH_MAX_BYTES:
                        break
                self._reply(to, SubmitResults(client, tuple(items[start:end])))
                start = end

    def _on_query(self, identity: bytes, msg: Query) -> None:
        if self._query is None:
            self._reply(identity, QueryRefused(msg.nonce, "unsupported", 0))
            return
        if self._answer_query(identity, msg, final=msg.wait_ms == 0):
            return
        if not self._held_queries.hold(time.monotonic(), identity, msg):
            self._reply(identity, QueryRefused(msg.nonce, "busy", self.replica.delivered_index))

    def _answer_query(self, identity: bytes, msg: Query, *, final: bool) -> bool:
        """Answer ``msg`` if it can be (True), else leave it to be held. ``final``: its
        time is up, so it is answered whatever the state machine has to say."""
        assert self._query is not None
        index = self.replica.delivered_index
        if index < msg.min_index:
            if final:
                self._reply(identity, QueryRefused(msg.nonce, "behind", index))
            return final
        try:
            answer = self._query(msg.payload, final)
        except Exception as exc:
            reason = f"error: {type(exc).__name__}: {exc}"[:64]
            self._reply(identity, QueryRefused(msg.nonce, reason, index))
            return True
        if answer is None:
            if not final:
                return False
            answer = b""
        if type(answer) is not bytes:  # the state machine's bug: refused, not a crash
            self._reply(identity, QueryRefused(msg.nonce, "error: answer is not bytes", index))
            return True
        if len(answer) > self.config.max_payload_bytes:
            self._reply(identity, QueryRefused(msg.nonce, "error: answer too large", index))
        else:
            self._reply(identity, QueryAnswer(msg.nonce, index, answer))
        return True

    def _serve_queries(self, now: float, *, expire: bool) -> None:
        """After a delivery (``expire`` False): every held query whose state machine now
        has an answer. On a tick: those whose time is up."""
        held = self._held_queries
        for h in held.take_all():
            waiting = expire and now < h.deadline
            if waiting or not self._answer_query(h.identity, h.query, final=expire):
                held.keep(h)

    def _propose_due(self, now: float) -> None:
        """Broadcast what the state machine's timers want proposed (lease expiries): on
        the leader only, so that one node proposes, not all."""
        assert self._due is not None
        leading = self.replica.role is Role.LEADER
        try:
            payloads = [p for p in self._due(now, leading) if type(p) is bytes]
        except Exception as exc:  # the state machine's bug: logged, the node goes on
            self._failed_applies.hit(node=self.node_id, due=repr(exc)[:200])
            return
        for payload in payloads:
            self._local_broadcast(payload, concurrent.futures.Future())

    def _on_fetch(self, identity: bytes, msg: Fetch) -> None:
        self._read_up_to(identity, msg.ticket)
        if msg.from_index < 1:
            self._drop(identity, "fetch", "fetch from index 0", 0)
            return
        if msg.from_index <= self.history.last_index or msg.wait_ms == 0:
            self._reply_fetch(identity, msg)
        else:
            deadline = time.monotonic() + min(msg.wait_ms, 30_000) / 1000.0
            # One held fetch per client: a new one replaces its earlier one, so a client
            # that keeps asking is owed one reply, not one per request.
            held = [entry for entry in self._held_fetches if entry[1] != identity]
            if len(held) < _MAX_HELD_FETCHES:
                held.append((deadline, identity, msg))
            self._held_fetches = held

    def _reply_fetch(self, identity: bytes, msg: Fetch) -> None:
        history = self.history
        count = max(1, min(msg.max_count, FETCH_MAX))
        try:
            # Bounded reply: at most one payload beyond the byte budget.
            commands = history.read(msg.from_index, count, FETCH_MAX_BYTES)
        except Compacted as exc:
            # Below the retention: say so, with where the client can start instead.
            self._reply(identity, FetchRefused(msg.from_index, exc.earliest))
            return
        except HistoryError as exc:
            # A damaged history file must not stop the node (the fetch may come from
            # _deliver): this client gets no answer and tries again, maybe elsewhere.
            self._count("history")
            self._failed_reads.hit(node=self.node_id, error=str(exc)[:300])
            return
        first, last = msg.from_index, history.last_index
        if not commands:
            # An empty answer to a long poll costs next to nothing: no ticket.
            self._reply(identity, Deliveries(first, (), last, 0))
            return
        batch = tuple(commands)
        self._send_owed(identity, lambda ticket: Deliveries(first, batch, last, ticket))

    def _serve_fetches(self, now: float, *, expire: bool) -> None:
        kept = []
        for deadline, identity, msg in self._held_fetches:
            if msg.from_index <= self.history.last_index or (expire and now >= deadline):
                self._reply_fetch(identity, msg)
            else:
                kept.append((deadline, identity, msg))
        self._held_fetches = kept

    def _expire_fetches(self, now: float) -> None:
        if self._held_fetches:
            self._serve_fetches(now, expire=True)

    # ------------------------------------------------------------------ local broadcasts

    def _local_broadcast(
        self, payload: bytes, future: concurrent.futures.Future[BroadcastResult]
    ) -> None:
        local = self._local
        local.held.append((payload, future))
        if local.key is None:
            self._open_local_session()
        else:
            self._send_held()

    def _open_local_session(self) -> None:
        local = self._local
        if local.nonce is None:
            local.nonce = os.urandom(16)
            local.last_try = time.monotonic()
        self._take(self.replica.propose([open_command(local.name, local.nonce)]))

    def _send_held(self) -> None:
        """Give held payloads seqs in the open session, as far as the window allows."""
        local = self._local
        if local.key is None or not local.held:
            return
        room = local.window - len(local.waiting)
        if room <= 0:
            return
        take, local.held = local.held[:room], local.held[room:]
        commands = []
        for payload, future in take:
            command = Command(local.key, local.next_seq, payload)
            local.next_seq += 1
            local.waiting[command.seq] = (command, future)
            commands.append(command)
        if len(local.waiting) == len(commands):
            local.last_try = time.monotonic()
        self._take(self.replica.propose(commands))

    def _local_session_ended(self, last: int) -> None:
        """Our session ended in the log at ``last``: what it had not delivered never will
        be, so those broadcasts go again, in order, in a new session."""
        local = self._local
        again = [local.waiting[seq] for seq in sorted(local.waiting) if seq > last]
        local.waiting.clear()
        local.held[:0] = [(command.payload, future) for command, future in again]
        local.key = None
        local.nonce = None
        if local.held:
            self._open_local_session()

    def _local_after_install(self) -> None:
        """A snapshot installed from a peer may cover local broadcasts: delivered inside
        it, they are never delivered here, so they are answered from the session table
        (result None: the state machine's result for them is not known here), or they
        would wait forever (review finding)."""
        local = self._local
        if local.key is None or not local.waiting:
            return
        key = local.key
        state, last = self.replica.session_status(key)
        if state in ("live", "ended") and last is not None:
            for seq in sorted(s for s in local.waiting if s <= last):
                self._resolve_local(seq, self.replica.outcome(key, seq) or 0, None)
            if state == "ended":
                self._local_session_ended(last)  # the rest go again in a new session
            return
        # Ended so long ago that nobody remembers where: the fate of each is unknown.
        error = SessionExpired(key, [], sorted(local.waiting))
        for _, future in local.waiting.values():
            if not future.done():
                future.set_exception(error)
        local.waiting.clear()
        local.key = None
        local.nonce = None
        if local.held:
            self._open_local_session()

    def _retry_local(self, now: float) -> None:
        """Resend every unacknowledged local command, in order, after ``retry_s``.

        A leader change can lose commands that were in flight; sessions make
        the resend harmless (a command already delivered is skipped).
        """
        local = self._local
        if now - local.last_try < self.retry_s:
            return
        if local.key is None:
            if local.nonce is not None:
                local.last_try = now
                self._open_local_session()
            return
        if not local.waiting:
            return
        local.last_try = now
        commands = [command for command, _ in sorted(local.waiting.values(), key=_seq_key)]
        self._take(self.replica.propose(commands))

    # ------------------------------------------------------------------ snapshots

    def snapshot_now(self) -> None:
        """Take a snapshot (and compact) at the end of the next turn (from any thread)."""
        self._snapshot_now = True
        self.transport.wake()

    def _snapshot_turn(self) -> None:
        """At the end of a turn (a delivery boundary): finish a snapshot written in the
        background, or start one if it is due."""
        if self._saving is not None:
            snapshot, future = self._saving
            if not future.done():
                return
            self._saving = None
            try:
                future.result()  # a failure to write it is a disk failure: it ends run()
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                # Out of file descriptors (a flood of connections, say): the snapshot may
                # not be durable, so the log is not compacted; nothing is lost. The next
                # snapshot comes after another snapshot_entries deliveries.
                log.warning("snapshot.deferred", node=self.node_id, reason=str(exc))
                return
            self._compact(snapshot)
        count, size = self._since_snapshot
        due = count >= self.snapshot_entries or size >= self.snapshot_bytes
        replica = self.replica
        latest = self._latest_snapshot
        durable = latest.slot if latest is not None else 0
        if not (due or self._snapshot_now) or replica.commit <= durable:
            if self._snapshot_now and replica.commit <= durable:
                self._snapshot_now = False
                self._answer_snapshot_waiters(self.replica.delivered_index)
            return
        self._snapshot_now = False
        self._since_snapshot = (0, 0)
        app = b""
        if self.state_machine is not None:
            app = self.state_machine.snapshot()  # type: ignore[attr-defined]
            if not isinstance(app, bytes | bytearray | memoryview):
                raise TypeError("state_machine.snapshot() must return bytes")
            app = bytes(app)
        snapshot = replica.take_snapshot(app)
        # The history must not end below the snapshot after a crash: a restart delivers
        # from the snapshot's index on, and the history cannot fill a gap behind it.
        self.history.sync()
        # Written in the background: delivery goes on meanwhile. Compaction waits for it.
        future = self._writer.submit(
            self.snapshots.save, snapshot.slot, snapshot.index, snapshot.blob
        )
        self._saving = (snapshot, future)

    def _compact(self, snapshot: Snapshot) -> None:
        """``snapshot`` is durable: compact the replica, then the log (the order and the
        rule are in paxos/multi/compaction.py)."""
        started = time.monotonic()
        self._note_snapshot(snapshot)
        if self.metrics is not None:
            self.metrics.snapshots_taken += 1
            self.metrics.note({"kind": "snapshot", "node": self.node_id, "slot": snapshot.slot})
        self._take(self.replica.compacted(snapshot))
        self._flush()  # the re-recorded promise and chosen prefix: synced before deleting
        replica = self.replica
        tops = sorted(self._segment_tops.items())
        keep = keep_from(tops, replica.floor, self.wal.current_segment)
        deleted = self.wal.compact(keep) if keep > self.wal.floor else 0
        for number in [n for n in self._segment_tops if n < keep]:
            del self._segment_tops[number]
        log.info(
            "snapshot.taken",
            node=self.node_id,
            slot=snapshot.slot,
            index=snapshot.index,
            bytes=snapshot.size,
            floor=replica.floor,
            segments_deleted=deleted,
            compact_ms=round((time.monotonic() - started) * 1000, 1),
        )
        self._answer_snapshot_waiters(snapshot.index)

    def _on_fetch_snapshot(self, identity: bytes, msg: FetchSnapshot) -> None:
        """A part of our latest durable snapshot, for a subscriber that rebuilds its state
        (bounded: one chunk per request; the client asks for the next)."""
        self._read_up_to(identity, msg.ticket)
        snapshot = self.replica.snapshot
        if snapshot is None:
            self._reply(identity, SnapshotPart(0, 0, 0, 0, 0, b""))
            return
        offset = min(msg.offset, snapshot.size)
        # Parts no larger than a fetch reply, so that the reply budget bounds them alike.
        chunk = min(self.config.snapshot_chunk_bytes, FETCH_MAX_BYTES)
        data = snapshot.blob[offset : offset + chunk]
        self._send_owed(
            identity,
            lambda ticket: SnapshotPart(
                snapshot.slot, snapshot.index, snapshot.size, snapshot.crc, offset, data, ticket
            ),
        )

    def _answer_snapshot_waiters(self, index: int) -> None:
        """Answer the requests that a durable snapshot at ``index`` covers (one taken
        before a request came does not answer it: the next one will)."""
        waiting = []
        for identity, nonce, wanted in self._snapshot_waiters:
            if wanted <= index:
                self._reply(identity, self.status(nonce))
            else:
                waiting.append((identity, nonce, wanted))
        self._snapshot_waiters = waiting

    def _save_installed(self, snapshot: Snapshot) -> None:
        """A snapshot installed from a peer: durable before anything that relies on it."""
        self.snapshots.save(snapshot.slot, snapshot.index, snapshot.blob)
        self._note_snapshot(snapshot)

    def _note_snapshot(self, snapshot: Snapshot) -> None:
        """The newest durable snapshot (the replica may still serve an older one to a
        peer that is receiving it)."""
        latest = self._latest_snapshot
        if latest is None or snapshot.slot > latest.slot:
            self._latest_snapshot = snapshot

    def _restore_state_machine(self, snapshot: Snapshot) -> None:
        sm = self.state_machine
        if sm is None:
            return
        restore = getattr(sm, "restore", None)
        if restore is None:
            raise ConfigError(
                "the data directory holds a snapshot, but the state machine has no restore()"
            )
        state = read_snapshot(snapshot.blob, self.config.max_sessions, self.config.session_window)
        restore(state.app)

    # ------------------------------------------------------------------ recovery

    def _decode_records(self, raw: Iterable[bytes]) -> list[Record]:
        records: list[Record] = []
        for number, data in enumerate(raw):
            try:
                records.append(decode_record(data))
            except CodecError as exc:
                raise WalCorruptionError(
                    str(self.data_dir / "wal"),
                    -1,
                    f"record #{number} passed its CRC but does not decode ({exc})",
                ) from None
        return records


class _Hooks:
    """The node as the driver's storage (the WAL), outbox (the peers) and applier."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def append(self, records: Sequence[Record]) -> None:
        self.node._append(records)

    def sync(self) -> None:
        node = self.node
        metrics = node.metrics
        if metrics is None:
            node.wal.sync()
            return
        started = time.perf_counter()
        node.wal.sync()
        metrics.fsync_seconds.observe(time.perf_counter() - started)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.node._save_installed(snapshot)

    def send(self, messages: Sequence[tuple[int, Message]]) -> None:
        self.node._send(messages)

    def apply(self, ready: Ready) -> None:
        self.node._apply(ready)


def _method(obj: object, name: str) -> Any:
    """``obj.name`` if it is callable, else None."""
    method = getattr(obj, name, None)
    return method if callable(method) else None


def _seq_key(entry: tuple[Command, object]) -> int:
    return entry[0].seq
