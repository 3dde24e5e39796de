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
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

import structlog

from broadcast.protocol import (
    FETCH_MAX,
    Deliveries,
    Fetch,
    SessionInfo,
    SessionQuery,
    Status,
    StatusRequest,
    Submit,
    SubmitAck,
    SubmitRefused,
)
from broadcast.spec import Cluster, ConfigError
from broadcast.transport import NodeTransport, TransportConfig, node_id_of
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
from paxos.multi.config import ReplicaConfig
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica
from paxos.records import AcceptRecord, Record
from paxos.types import Command, Delivery, Value

log = structlog.get_logger("broadcast.node")

_command_of = itemgetter(2)  # Delivery -> its Command, in C

_MESSAGE_TYPES: tuple[type, ...] = tuple(Message.__args__)


def spec_cluster_id(cluster: Cluster) -> bytes:
    """TEMPORARY placeholder for the cluster id a node records in its data directory.

    16 bytes derived from the cluster spec, so that nodes started with different specs
    refuse each other's messages. Replace it with the recorded id when that lands.
    """
    return hashlib.blake2b(cluster.spec().encode(), digest_size=16).digest()


class StateMachine(Protocol):
    """What a replicated application implements.

    ``apply`` is called once per committed command, in the total order, from
    the node's loop thread; it must be deterministic (same deliveries, same
    state on every node) and should be quick. After a restart the node
    re-learns the log and calls ``apply`` again from index 1, rebuilding the
    state from scratch.
    """

    def apply(self, delivery: Delivery) -> Any: ...


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """A committed broadcast: its 1-based ``index`` in the total order, and what the
    local state machine's ``apply`` returned for it (None without a state machine)."""

    index: int
    result: Any


class _LocalSender:
    """The node's own client session, for broadcasts made through :meth:`Node.broadcast`."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.next_seq = 1
        self.waiting: dict[int, tuple[Command, concurrent.futures.Future[BroadcastResult]]] = {}
        self.last_try = 0.0


class Node:
    """One cluster member: replica, transport, write-ahead log and delivery.

    Use :meth:`run` to serve in the calling thread (the ``paxos node`` command)
    or :meth:`start` / :meth:`stop` to run in a background thread inside an
    application, then :meth:`broadcast` from any thread (or
    ``await node.broadcast_async(...)`` from asyncio).

    Guarantees: every node delivers every committed payload exactly once, all
    in one total order, each sender's payloads in the order it sent them; a
    payload whose broadcast returned is committed and survives any minority of
    crashes (with ``fsync=True``).
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
    ) -> None:
        if node_id not in cluster.nodes:
            raise ConfigError(f"node id {node_id} is not in the cluster ({cluster.spec()})")
        if tick_ms < 1:
            raise ConfigError("tick_ms must be >= 1")
        self.node_id = node_id
        self.cluster = cluster
        self.data_dir = Path(data_dir)
        self.state_machine = state_machine
        self.fsync = fsync
        self.tick_s = tick_ms / 1000.0
        self.retry_s = retry_s
        self.config = replica_config or ReplicaConfig(nodes=cluster.ids)
        if self.config.nodes != cluster.ids:
            raise ConfigError("replica_config.nodes must match the cluster")

        self.wal, raw = WriteAheadLog.open(self.data_dir / "wal", fsync=fsync)
        try:
            records = self._decode_records(raw)
            self.replica = Replica(node_id, self.config, random.Random(os.urandom(16)), records)
            peers = {i: addr for i, addr in cluster.nodes.items() if i != node_id}
            self.transport = NodeTransport(
                node_id,
                cluster.nodes[node_id],
                peers,
                transport_config,
                cluster_id=spec_cluster_id(cluster),
            )
        except BaseException:
            self.wal.close()
            raise
        log.info(
            "node.recovered",
            node=node_id,
            records=len(raw),
            ballot=list(self.replica.ballot),
            fsync=fsync,
            address=cluster.nodes[node_id],
        )

        self.log: list[Command] = []  # delivered commands; log[i - 1] has index i
        self._pending = Ready()
        # Per turn: slot values' encodings, and the Accept frames they arrived in.
        self._values: dict[int, tuple[Value, bytes]] = {}
        self._received_accepts: dict[int, tuple[Accept, bytes]] = {}
        # client id -> routing identity of its latest request here. Every delivery of
        # that client is acknowledged to it: acknowledging something committed is
        # always true, and a client ignores acks for seqs it is not waiting for.
        self._routes: dict[str, bytes] = {}
        self._acks: dict[bytes, dict[str, list[tuple[int, int, int]]]] = {}
        self._held_fetches: list[tuple[float, bytes, Fetch]] = []
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._local = _LocalSender(f"node{node_id}-{uuid.uuid4().hex[:12]}")
        self._callbacks: list[Callable[[Delivery], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_tick = time.monotonic() + self.tick_s
        self._dropped_frames = 0
        self._closed = False
        self.max_routes = 100_000

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Node:
        """Serve in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("node already started")
        self._thread = threading.Thread(target=self.run, name=f"paxos-node-{self.node_id}")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release the socket and the log. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self.transport.wake()
            self._thread.join(timeout)
        elif not self._closed:
            self._close()

    def run(self) -> None:
        """Serve until :meth:`stop` (or KeyboardInterrupt) in the calling thread."""
        try:
            while not self._stop.is_set():
                self._turn()
        finally:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _, future in self._local.waiting.values():
            future.cancel()
        self.transport.close()
        self.wal.close()
        log.info("node.stopped", node=self.node_id)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ public API

    def broadcast(self, payload: bytes, timeout: float | None = None) -> BroadcastResult:
        """Broadcast ``payload`` and wait until it is committed and applied here.

        Returns its index in the total order and the local state machine's
        result. Raises ``TimeoutError`` after ``timeout`` seconds (the payload
        may still be committed later, exactly once).
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
        future: concurrent.futures.Future[BroadcastResult] = concurrent.futures.Future()
        data = bytes(payload)
        self._inbox.put(lambda: self._local_broadcast(data, future))
        self.transport.wake()
        return future

    def on_deliver(self, callback: Callable[[Delivery], None]) -> None:
        """Call ``callback(delivery)`` for every delivery, in order, from the loop thread."""
        self._callbacks.append(callback)

    def status(self) -> Status:
        r = self.replica
        return Status(
            0,
            self.node_id,
            r.role.value,
            r.ballot,
            r.leader or 0,
            r.commit,
            r.delivered_index,
            self.fsync,
        )

    # ------------------------------------------------------------------ the loop

    def _turn(self) -> None:
        now = time.monotonic()
        timeout_ms = max(0, int((self._next_tick - now) * 1000) + 1)
        if self._pending or not self._inbox.empty():
            timeout_ms = 0
        for identity, frame in self.transport.poll(timeout_ms):
            self._on_frame(identity, frame)
        while True:
            try:
                work = self._inbox.get_nowait()
            except queue.Empty:
                break
            work()
        now = time.monotonic()
        if now >= self._next_tick:
            self._take(self.replica.tick())
            self._next_tick += self.tick_s
            if now - self._next_tick > 1.0:  # paused or overloaded: do not replay every tick
                self._next_tick = now + self.tick_s
            self._retry_local(now)
            self._expire_fetches(now)
        self._flush()

    def _take(self, ready: Ready) -> None:
        if ready:
            self._pending.extend(ready)

    def _flush(self) -> None:
        ready = self._pending
        if not ready:
            return
        self._pending = Ready()
        if ready.eager:
            # The leader's Accepts vouch for nothing below: let the followers start
            # their fsync while we do ours.
            self._send(ready.eager)
        if ready.records:
            # The vow before the word: records are durable before any message leaves.
            self.wal.append([self._encode_record(r) for r in ready.records])
            self.wal.sync()
        if ready.messages:
            self._send(ready.messages)
        self._values.clear()
        self._received_accepts.clear()
        if ready.deliveries:
            self._deliver(ready.deliveries, ready.runs)

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

    def _send(self, messages: list[tuple[int, Message]]) -> None:
        per_peer: dict[int, list[bytes]] = {}
        encoded: dict[int, bytes] = {}  # one encoding per message object, however many peers
        for dst, msg in messages:
            key = id(msg)
            frame = encoded.get(key)
            if frame is None:
                if isinstance(msg, Accept):
                    frame = encode_accept(msg, self._value_bytes(msg.value))
                else:
                    frame = encode(msg)
                encoded[key] = frame
            per_peer.setdefault(dst, []).append(frame)
        for dst, frames in per_peer.items():
            # Dropped frames are fine: Paxos retransmits what matters.
            self.transport.send_many(dst, frames)

    def _deliver(self, deliveries: list[Delivery], runs: list[tuple[str, int, int, int]]) -> None:
        self.log.extend(map(_command_of, deliveries))
        sm = self.state_machine
        local = self._local
        results: dict[int, Any] = {}
        if sm is not None or self._callbacks:
            callbacks = self._callbacks
            for delivery in deliveries:
                result = sm.apply(delivery) if sm is not None else None
                for callback in callbacks:
                    callback(delivery)
                if delivery.command.client == local.client:
                    results[delivery.index] = result
        routes = self._routes
        acks = self._acks
        local_client = local.client
        # Acknowledge by runs (one per client per batch), not command by command.
        for client, first_seq, first_index, count in runs:
            if client == local_client:
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
        if self._held_fetches:
            self._serve_fetches(time.monotonic(), expire=False)

    def _resolve_local(self, seq: int, index: int, result: Any) -> None:
        entry = self._local.waiting.pop(seq, None)
        if entry is not None:
            entry[1].set_result(BroadcastResult(index, result))

    # ------------------------------------------------------------------ frames

    def _on_frame(self, identity: bytes, frame: bytes) -> None:
        try:
            msg = decode(frame)
        except CodecError as exc:
            self._drop(identity, f"undecodable frame: {exc}", len(frame))
            return
        if isinstance(msg, _MESSAGE_TYPES):
            # Only a node may speak Paxos, and only under its own id.
            if node_id_of(identity) != msg.src:  # type: ignore[attr-defined]
                if identity[:1] == b"\x00":
                    # ZeroMQ's own identity for a peer connection being handed over to
                    # its reconnected successor: late frames of a live peer, not junk.
                    log.debug("frame.dropped", node=self.node_id, reason="handover")
                    return
                self._drop(identity, "message src does not match the sender", len(frame))
                return
            if type(msg) is Accept:
                # Its value goes to our log as it came: no second encoding.
                self._received_accepts[id(msg.value)] = (msg, frame)
            self._take(self.replica.step(msg))  # type: ignore[arg-type]
        elif isinstance(msg, Submit):
            self._on_submit(identity, msg)
        elif isinstance(msg, Fetch):
            self._on_fetch(identity, msg)
        elif isinstance(msg, StatusRequest):
            status = self.status()
            self.transport.reply(identity, encode(_with_nonce(status, msg.nonce)))
        elif isinstance(msg, SessionQuery):
            last = self.replica.sessions.last_seq(msg.client)
            self.transport.reply(identity, encode(SessionInfo(msg.client, last)))
        else:
            self._drop(identity, f"unexpected {type(msg).__name__}", len(frame))

    def _drop(self, identity: bytes, reason: str, size: int) -> None:
        self._dropped_frames += 1
        # Bounded logging: a flood of junk must not turn into a flood of log lines.
        if self._dropped_frames <= 100 or self._dropped_frames % 1000 == 0:
            log.warning(
                "frame.dropped",
                node=self.node_id,
                sender=identity[:64].decode("ascii", "replace"),
                reason=reason[:200],
                bytes=size,
                dropped_total=self._dropped_frames,
            )

    def _on_submit(self, identity: bytes, msg: Submit) -> None:
        replica = self.replica
        last = replica.sessions.last
        routes = self._routes
        fresh: list[Command] = []
        for command in msg.commands:
            client, seq, _ = command
            if seq <= last.get(client, 0):
                # Delivered already (a retry): answer from the replicated session.
                self._ack(identity, client, seq, replica.outcome(client, seq) or 0)
            else:
                fresh.append(command)
            if routes.get(client) != identity:
                routes.pop(client, None)
                routes[client] = identity  # most recent last, so the oldest go first
                if len(routes) > self.max_routes:
                    del routes[next(iter(routes))]
        if fresh:
            if len(replica.queue) + len(fresh) > self.config.queue_max:
                # Backpressure: refuse instead of queueing without bound; the client retries.
                first = fresh[0]
                refusal = SubmitRefused(first.client, first.seq, "busy", replica.leader or 0)
                self.transport.reply(identity, encode(refusal))
            else:
                self._take(replica.propose(fresh))
        self._send_acks()

    def _ack(self, identity: bytes, client: str, seq: int, index: int) -> None:
        self._acks.setdefault(identity, {}).setdefault(client, []).append((seq, index, 1))

    def _send_acks(self) -> None:
        if not self._acks:
            return
        leader = self.replica.leader or 0
        for identity, per_client in self._acks.items():
            for client, acks in per_client.items():
                self.transport.reply(identity, encode(SubmitAck(client, tuple(acks), leader)))
        self._acks = {}

    def _on_fetch(self, identity: bytes, msg: Fetch) -> None:
        if msg.from_index < 1:
            self._drop(identity, "fetch from index 0", 0)
            return
        if msg.from_index <= len(self.log) or msg.wait_ms == 0:
            self._reply_fetch(identity, msg)
        else:
            deadline = time.monotonic() + min(msg.wait_ms, 30_000) / 1000.0
            if len(self._held_fetches) < 10_000:
                self._held_fetches.append((deadline, identity, msg))

    def _reply_fetch(self, identity: bytes, msg: Fetch) -> None:
        start = msg.from_index - 1
        count = max(1, min(msg.max_count, FETCH_MAX))
        commands = tuple(self.log[start : start + count])
        self.transport.reply(identity, encode(Deliveries(msg.from_index, commands, len(self.log))))

    def _serve_fetches(self, now: float, *, expire: bool) -> None:
        kept = []
        for deadline, identity, msg in self._held_fetches:
            if msg.from_index <= len(self.log) or (expire and now >= deadline):
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
        command = Command(local.client, local.next_seq, payload)
        local.next_seq += 1
        local.waiting[command.seq] = (command, future)
        if len(local.waiting) == 1:
            local.last_try = time.monotonic()
        self._take(self.replica.propose([command]))

    def _retry_local(self, now: float) -> None:
        """Resend every unacknowledged local command, in order, after ``retry_s``.

        A leader change can lose commands that were in flight; sessions make
        the resend harmless (a command already delivered is skipped).
        """
        local = self._local
        if not local.waiting or now - local.last_try < self.retry_s:
            return
        local.last_try = now
        commands = [command for command, _ in sorted(local.waiting.values())]
        self._take(self.replica.propose(commands))

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


def _with_nonce(status: Status, nonce: int) -> Status:
    return Status(
        nonce,
        status.node,
        status.role,
        status.ballot,
        status.leader,
        status.commit,
        status.delivered,
        status.fsync,
    )
