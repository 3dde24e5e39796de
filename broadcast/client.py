"""The client library: broadcast into a cluster and follow its ordered stream from outside.

A :class:`Client` talks to whichever node answers. Before its first broadcast it
opens a *session* through the log (the Raft thesis, section 6.3): the cluster
gives it a key no other client has, even one using the same name, so two copies
of one application never see each other's results. Broadcasts are exactly-once:
each payload gets ``(session key, seq)``, unacknowledged payloads are resent (in
order, to the leader or any node) until the cluster acknowledges them, and the
replicated session drops any repeat. Subscriptions resume after a node failure
at the next index, so they have neither gaps nor duplicates.

Sizes are bounded: a payload above the cluster's limit raises
:class:`~broadcast.errors.PayloadTooLarge` before it is sent; at most
``window`` payloads (and about ``window_bytes``) are in flight, counted in seqs
from the oldest unacknowledged one: the cluster remembers where the last
``window`` seqs of a session went, so a payload whose acknowledgement was lost
can always be asked about again.

Security: by default a client speaks CURVE. It needs a cluster file with the
nodes' public keys, and a key the cluster authorises (``[client] key_file`` in
that file, or ``key_file=``); what the key may do is the cluster's decision,
and a refusal raises :class:`~broadcast.errors.Forbidden`. ``insecure=True``
talks plaintext to nodes run with ``--insecure``.

A client is driven by one thread at a time (it is not thread-safe); asyncio
code can use the ``*_async`` forms, which run the blocking calls in a worker
thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from broadcast.errors import (
    Compacted,
    Forbidden,
    PayloadTooLarge,
    QueryFailed,
    SessionExpired,
    WrongCluster,
)
from broadcast.keys import load_keypair
from broadcast.logs import get_logger
from broadcast.protocol import (
    FETCH_MAX,
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
from broadcast.spec import DEFAULT_MAX_PAYLOAD_BYTES, Cluster, ConfigError, parse_cluster
from broadcast.transport import ClientTransport, TransportError
from paxos.codec import CodecError, decode, encode
from paxos.multi.membership import Op
from paxos.multi.sessions import MAX_NAME_LEN
from paxos.multi.snapshot import read_snapshot
from paxos.types import Command, Delivery

log = get_logger("broadcast.client")

#: Resends back off from ``retry_s`` up to this.
_MAX_RETRY_S = 2.0


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """An application state and where it stands: after the first ``index`` deliveries
    (``slot``: the last slot applied), as read from ``node``."""

    index: int
    slot: int
    state: bytes
    node: int


class ClusterUnavailable(TimeoutError):
    """No node answered (or nothing was committed) within the deadline."""


class Committed(NamedTuple):
    """A payload this client broadcast, now committed at ``index`` (1-based) in the
    total order; ``client`` is the session key it was sent under."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose
    client: str
    seq: int


class Answered(NamedTuple):
    """A :meth:`Client.call` committed at ``index``: what the cluster's state machine
    returned for it (its ``encode_result`` bytes), or None if the node that answered no
    longer held the result (the command was applied once all the same)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose
    result: bytes | None


#: Results of this client's calls kept until a call picks them up.
_MAX_KEPT_RESULTS = 1024


class Client:
    """Broadcast payloads into a cluster, and subscribe to its ordered deliveries.

    ``cluster`` is a :class:`~broadcast.spec.Cluster` or a SPEC string
    (``1=127.0.0.1:7101,...`` or the path of a TOML file). ``cluster_id`` (default:
    the SPEC file's, if any) makes nodes of another cluster refuse this client.

    ``client_id`` names the client's sessions (default: a random name). It is a
    label, not an identity: every client opens a session of its own, with a key
    ``"<client_id>#<n>"`` the cluster makes unique (:attr:`session`).
    """

    def __init__(
        self,
        cluster: Cluster | str,
        *,
        client_id: str | None = None,
        timeout: float = 30.0,
        retry_s: float = 0.25,
        window: int = 4096,
        window_bytes: int = 64 * 1024 * 1024,
        batch: int = 256,
        cluster_id: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
    ) -> None:
        self.cluster = parse_cluster(cluster) if isinstance(cluster, str) else cluster
        self.client_id = client_id or f"client-{uuid.uuid4().hex[:16]}"
        if not 0 < len(self.client_id) <= MAX_NAME_LEN:
            raise ValueError(f"client id must have 1..{MAX_NAME_LEN} characters")
        if window < 1 or window_bytes < 1 or batch < 1:
            raise ValueError("window, window_bytes and batch must be >= 1")
        self.timeout = timeout
        self.retry_s = retry_s
        self.window = window
        self.window_bytes = window_bytes
        self.batch = batch
        self.cluster_id = cluster_id if cluster_id is not None else self.cluster.cluster_id
        #: The cluster's payload limit: the default until a node tells (at session open).
        self.max_payload_bytes = DEFAULT_MAX_PAYLOAD_BYTES
        #: The key of this client's session, once opened.
        self.session: str | None = None
        keypair = None
        if not insecure:
            if not self.cluster.secure:
                raise ConfigError(
                    "the cluster names no CURVE keys: give its cluster file (paxos cluster up "
                    "writes one), or talk --insecure to nodes that run --insecure"
                )
            path = key_file if key_file is not None else self.cluster.client_key
            if path is None:
                raise ConfigError(
                    "no client key: the cluster file has no [client] key_file; give one "
                    "(--key, or key_file=)"
                )
            keypair = load_keypair(Path(path))
        self.transport = ClientTransport(
            {i: self.cluster.endpoint(i) for i in self.cluster.ids},
            keypair=keypair,
            server_keys={i: k.encode() for i, k in self.cluster.keys.items()},
        )
        #: Per node: the ticket of the last reply read from it (see protocol.Fetch).
        self._tickets: dict[int, int] = {}
        self._rng = random.Random()
        self._target = self._rng.choice(self.cluster.ids)
        self._next_seq = 1
        self._nonce = itertools.count(1)
        # (session, seq) -> (index, known, result): SubmitResults not yet picked up.
        self._results: dict[tuple[str, int], tuple[int, bool, bytes]] = {}

    def close(self) -> None:
        """End the session (best effort: an unclosed session expires on its own) and
        release the sockets."""
        if self.session is not None and not self.transport.closed:
            self.transport.send(self._target, encode(CloseSession(self.session)))
            # Give the close a moment to leave (sockets close with LINGER 0).
            self.transport.poll(20)
            self.session = None
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions

    def open_session(self) -> str:
        """Open this client's session (done by the first broadcast); returns its key."""
        nonce = os.urandom(16)
        request = encode(OpenSession(self.client_id, nonce, self.cluster_id or ""))
        deadline = time.monotonic() + self.timeout
        last_send = 0.0
        target = self._target
        while True:
            now = time.monotonic()
            if now > deadline:
                raise ClusterUnavailable(
                    f"no node opened a session within {self.timeout:.0f}s "
                    f"({self.cluster.spec()}){self._unreachable_hint()}"
                )
            if now - last_send >= self.retry_s:
                # Same nonce every time: however many nodes apply it, one session.
                targets = (target,) if last_send == 0.0 else self.cluster.ids
                for node in targets:
                    self.transport.send(node, request)
                last_send = now
            for node, frame in self.transport.poll(50):
                msg = self._decode(node, frame)
                if isinstance(msg, SessionOpened) and msg.nonce == nonce:
                    if self.cluster_id and msg.cluster_id != self.cluster_id:
                        raise WrongCluster(
                            f"node {node} belongs to cluster {msg.cluster_id}, "
                            f"not {self.cluster_id}"
                        )
                    self.session = msg.key
                    self.max_payload_bytes = msg.max_payload_bytes
                    self.window = max(1, min(self.window, msg.window))
                    self._next_seq = 1
                    self._target = node
                    return msg.key
                if isinstance(msg, SubmitRefused) and msg.reason == "cluster":
                    raise WrongCluster(
                        f"node {node} does not belong to cluster {self.cluster_id}"
                    )

    # ------------------------------------------------------------------ broadcast

    def broadcast(self, payload: bytes) -> Committed:
        """Broadcast one payload; returns once it is committed (exactly once)."""
        return self.broadcast_many([payload])[0]

    async def broadcast_async(self, payload: bytes) -> Committed:
        return await asyncio.to_thread(self.broadcast, payload)

    def broadcast_many(
        self,
        payloads: Iterable[bytes],
        on_commit: Callable[[Committed], None] | None = None,
    ) -> list[Committed]:
        """Broadcast payloads in order, pipelined (up to ``window`` in flight).

        Returns one :class:`Committed` per payload, in the order given; each is
        also passed to ``on_commit`` as soon as it is known, in order. Raises
        :class:`~broadcast.errors.PayloadTooLarge` for a payload above the
        cluster's limit (the payloads before it are committed, none after it is
        sent), :class:`ClusterUnavailable` if no progress is made for ``timeout``,
        and :class:`~broadcast.errors.SessionExpired` if the session ended while
        the fate of some broadcasts cannot be known.
        """
        if self.session is None:
            self.open_session()
        source = iter(payloads)
        exhausted = False
        # Payloads in order; position i is the i-th payload of this call.
        results: list[Committed | None] = []
        # seq -> (position, command), insertion (= seq) order.
        unacked: dict[int, tuple[int, Command]] = {}
        unacked_bytes = 0
        reported = 0
        unsent: list[Command] = []
        too_large: PayloadTooLarge | None = None
        last_progress = time.monotonic()
        last_send = 0.0
        retry_s = self.retry_s
        while True:
            while (
                not exhausted
                and too_large is None
                # The window spans seqs, not just the unacknowledged count: a node keeps
                # the outcome (the index) of a session's last ``window`` seqs only, so a
                # straggler whose ack was lost must be asked about before it falls out.
                and (not unacked or self._next_seq - next(iter(unacked)) < self.window)
                and unacked_bytes < self.window_bytes
            ):
                try:
                    payload = bytes(next(source))
                except StopIteration:
                    exhausted = True
                    break
                if len(payload) > self.max_payload_bytes:
                    # Refused before it gets a seq: the session goes on without a gap.
                    too_large = PayloadTooLarge(len(payload), self.max_payload_bytes)
                    break
                assert self.session is not None
                command = Command(self.session, self._next_seq, payload)
                self._next_seq += 1
                unacked[command.seq] = (len(results), command)
                unacked_bytes += len(payload)
                results.append(None)
                unsent.append(command)
            if not unacked and (exhausted or too_large is not None):
                break
            now = time.monotonic()
            targets: tuple[int, ...] = (self._target,)
            if now - last_send >= retry_s and unacked and not unsent:
                # No acknowledgement for a while: the target may be down or cut off.
                # Resend everything unacknowledged, in order, to every node: any live
                # one forwards to the leader (or queues until one is elected), and the
                # replicated session drops the repeats. Back off while nothing moves.
                if retry_s > self.retry_s:
                    self.refresh_members()  # (the members we know may be gone)
                targets = self.cluster.ids
                unsent = [command for _, command in unacked.values()]
                retry_s = min(_MAX_RETRY_S, retry_s * 2)
            if unsent:
                for frame in self._submit_frames(unsent):
                    for target in targets:
                        self.transport.send(target, frame)
                unsent = []
                last_send = now
            for node, frame in self.transport.poll(50):
                msg = self._decode(node, frame)
                if isinstance(msg, SubmitAck) and msg.client == self.session:
                    fresh = False
                    for first_seq, first_index, count in msg.acks:
                        if not first_index:
                            continue  # "delivered, index forgotten": never for seqs we await
                        for seq in range(first_seq, first_seq + count):
                            entry = unacked.pop(seq, None)
                            if entry is not None:
                                position, command = entry
                                unacked_bytes -= len(command.payload)
                                index = first_index + (seq - first_seq)
                                results[position] = Committed(index, command.client, seq)
                                fresh = True
                    if fresh:
                        last_progress = last_send = time.monotonic()
                        retry_s = self.retry_s
                    if msg.leader and msg.leader in self.cluster.nodes:
                        self._target = msg.leader
                elif isinstance(msg, SubmitRefused) and msg.client == self.session:
                    if msg.reason == "too_large":
                        # Only if our limit was wrong; nothing after it can be delivered.
                        raise PayloadTooLarge(-1, self.max_payload_bytes)
                    if msg.leader in self.cluster.nodes:
                        self._target = msg.leader
                elif isinstance(msg, SessionEnded) and msg.key == self.session:
                    unsent = self._session_ended(msg, unacked)
                    last_progress = time.monotonic()
                elif isinstance(msg, SubmitResults):
                    self._keep_results(msg)
            while reported < len(results) and results[reported] is not None:
                if on_commit is not None:
                    committed = results[reported]
                    assert committed is not None
                    on_commit(committed)
                reported += 1
            if time.monotonic() - last_progress > self.timeout:
                raise ClusterUnavailable(
                    f"no broadcast committed for {self.timeout:.0f}s "
                    f"({len(unacked)} unacknowledged; cluster {self.cluster.spec()})"
                )
        if too_large is not None:
            raise too_large
        return [r for r in results if r is not None]

    def _keep_results(self, msg: SubmitResults) -> None:
        kept = self._results
        for seq, index, known, data in msg.results:
            key = (msg.client, seq)
            if not known and key in kept:
                continue  # a node without the result: never instead of one that has it
            kept[key] = (index, known, data)
        while len(kept) > _MAX_KEPT_RESULTS:  # bounded: the oldest go
            del kept[next(iter(kept))]

    def call(self, payload: bytes) -> Answered:
        """Broadcast ``payload`` (exactly once) and return what the cluster's state
        machine returned for it, for a cluster whose nodes answer remote callers (see
        :mod:`broadcast.answers`; the coordination service does). Raises like
        :meth:`broadcast`, and :class:`ClusterUnavailable` if no result comes."""
        committed = self.broadcast(payload)
        key = (committed.client, committed.seq)
        command = Command(committed.client, committed.seq, payload)
        now = time.monotonic()
        deadline = now + self.timeout
        resend_at = now + self.retry_s
        targets: tuple[int, ...] = (self._target,)
        while True:
            hit = self._results.pop(key, None)
            if hit is not None:
                return Answered(committed.index, hit[2] if hit[1] else None)
            now = time.monotonic()
            if now > deadline:
                raise ClusterUnavailable(
                    f"committed at {committed.index}, but no result came within "
                    f"{self.timeout:.0f}s ({self.cluster.spec()})"
                )
            if now >= resend_at:
                if committed.client != self.session:
                    return Answered(committed.index, None)  # its session is gone
                # The result was lost (or its node died): the repeat is never applied
                # again, a node answers it from its results.
                frame = encode(Submit((command,)))
                for node in targets:
                    self.transport.send(node, frame)
                targets = self.cluster.ids
                resend_at = now + self.retry_s
            for node, frame in self.transport.poll(50):
                msg = self._decode(node, frame)
                if isinstance(msg, SubmitResults):
                    self._keep_results(msg)

    async def call_async(self, payload: bytes) -> Answered:
        return await asyncio.to_thread(self.call, payload)

    def query(
        self,
        payload: bytes,
        *,
        min_index: int = 0,
        wait_ms: int = 0,
        node: int | None = None,
        timeout: float | None = None,
    ) -> QueryAnswer:
        """Ask a node's state machine a read-only question; its answer, read at some
        index >= ``min_index`` (a stale read of one replica). ``wait_ms`` > 0 lets the
        node hold it until the state machine has something to say (a watch). Asks
        ``node``, or the current target and then the others while they are behind or
        silent. Raises :class:`~broadcast.errors.QueryFailed` if the state machine
        cannot answer, :class:`ClusterUnavailable` if no node does within ``timeout``
        (counted beyond the ``wait_ms`` asked for)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait_ms / 1000.0 + timeout
        target = node if node is not None else self._target
        patience = wait_ms / 1000.0 + max(self.retry_s, 1.0)
        last_reason = "no answer"
        while True:
            nonce = next(self._nonce)
            self.transport.send(target, encode(Query(nonce, payload, min_index, wait_ms)))
            give_up = min(deadline, time.monotonic() + patience)
            answered = False
            while not answered and time.monotonic() < give_up:
                for sender, frame in self.transport.poll(50):
                    msg = self._decode(sender, frame)
                    if isinstance(msg, SubmitResults):
                        self._keep_results(msg)
                    elif isinstance(msg, QueryAnswer) and msg.nonce == nonce:
                        if node is None:
                            self._target = sender
                        return msg
                    elif isinstance(msg, QueryRefused) and msg.nonce == nonce:
                        if msg.reason == "unsupported" or msg.reason.startswith("error"):
                            raise QueryFailed(msg.reason)
                        last_reason = f"node {sender}: {msg.reason} at {msg.index}"
                        answered = True
            if time.monotonic() >= deadline:
                raise ClusterUnavailable(
                    f"no node answered the query within {timeout:.0f}s ({last_reason})"
                )
            # Refused (behind, busy) or silent: back off a little before asking again,
            # so that a cluster that is behind everywhere is not asked in a tight loop.
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            if node is None:
                others = [i for i in self.cluster.ids if i != target]
                target = self._rng.choice(others) if others else target

    def _submit_frames(self, commands: list[Command]) -> Iterator[bytes]:
        """Submit frames of at most ``batch`` commands and about 1 MiB of payloads."""
        start = 0
        while start < len(commands):
            end, size = start, 0
            while end < len(commands) and end - start < self.batch:
                size += len(commands[end].payload)
                end += 1
                if size >= 1024 * 1024:
                    break
            yield encode(Submit(tuple(commands[start:end])))
            start = end

    def _session_ended(
        self, msg: SessionEnded, unacked: dict[int, tuple[int, Command]]
    ) -> list[Command]:
        """Our session ended. What it had not delivered never will be: resend that in a
        new session. Anything whose fate is unknown is an error for the caller."""
        delivered = [seq for seq in unacked if msg.known and seq <= msg.last_seq]
        unknown = list(unacked) if not msg.known else []
        log.info("client.session_ended", session=msg.key, unacked=len(unacked))
        if delivered or unknown:
            self.session = None
            raise SessionExpired(msg.key, delivered, unknown)
        self.open_session()
        assert self.session is not None
        again = [(position, command) for position, command in unacked.values()]
        unacked.clear()
        resend = []
        for position, command in again:
            renewed = Command(self.session, self._next_seq, command.payload)
            self._next_seq += 1
            unacked[renewed.seq] = (position, renewed)
            resend.append(renewed)
        return resend

    # ------------------------------------------------------------------ subscribe

    def subscribe(
        self,
        from_index: int = 1,
        *,
        node: int | None = None,
        idle_timeout: float | None = None,
        unreachable_timeout: float | None = None,
    ) -> Iterator[Delivery]:
        """Yield every delivery from ``from_index`` on, in total order, forever.

        Reads from ``node`` if given (waiting for it if it is down), otherwise
        from any node, moving to another one when it stops answering. Indexes
        are identical on every node, so switching never skips or repeats.
        ``slot`` is 0 in these deliveries (the node does not say). With
        ``idle_timeout``, stops after that many seconds without a delivery; with
        ``unreachable_timeout``, raises :class:`ClusterUnavailable` after that
        many seconds in which no node answered.

        Nodes keep a bounded history (``paxos node --retain``): an index older than
        that raises :class:`~broadcast.errors.Compacted`, whose ``earliest`` is the
        first index still held (without ``node``, once every node that answered in a
        round of all of them refused; ``earliest`` is then the lowest they named).
        """
        if from_index < 1:
            raise ValueError("from_index starts at 1")
        if node is not None and node not in self.cluster.nodes:
            raise ValueError(f"node {node} is not in the cluster")
        source = node if node is not None else self._target
        next_index = from_index
        wait_ms = 1000
        last_delivery = last_answer = time.monotonic()
        # Since the last Deliveries: nodes asked, and the earliest index each refusal named.
        asked: set[int] = set()
        refused: dict[int, int] = {}
        while True:
            ticket = self._tickets.get(source, 0)
            self.transport.send(source, encode(Fetch(next_index, FETCH_MAX, wait_ms, ticket)))
            asked.add(source)
            deadline = time.monotonic() + wait_ms / 1000 + 2.0
            answered = False
            while not answered and time.monotonic() < deadline:
                for sender, frame in self.transport.poll(100):
                    msg = self._decode(sender, frame)
                    if sender != source:
                        continue
                    if isinstance(msg, FetchRefused) and msg.from_index == next_index:
                        answered = True
                        last_answer = time.monotonic()
                        refused[source] = msg.earliest
                        break
                    if not isinstance(msg, Deliveries):
                        continue
                    if msg.first_index != next_index:
                        continue  # the answer to an earlier fetch: already served
                    answered = True
                    last_answer = time.monotonic()
                    asked.clear()
                    refused.clear()
                    for command in msg.commands:
                        yield Delivery(next_index, 0, command)
                        next_index += 1
                    if msg.commands:
                        last_delivery = time.monotonic()
            if refused and (node is not None or len(asked) == len(self.cluster.ids)):
                # Nobody who answered holds next_index any more: more fetches cannot help.
                raise Compacted(min(refused.values()), next_index)
            now = time.monotonic()
            if idle_timeout is not None and now - last_delivery > idle_timeout:
                return
            if unreachable_timeout is not None and now - last_answer > unreachable_timeout:
                raise ClusterUnavailable(
                    f"no node answered for {unreachable_timeout:.0f}s "
                    f"({self.cluster.spec()}){self._unreachable_hint()}"
                )
            if (not answered or source in refused) and node is None:
                source = self._after(source)

    async def subscribe_async(
        self,
        from_index: int = 1,
        *,
        node: int | None = None,
        idle_timeout: float | None = None,
        unreachable_timeout: float | None = None,
    ) -> AsyncIterator[Delivery]:
        """:meth:`subscribe` for asyncio: ``async for delivery in client.subscribe_async()``.

        The blocking reads run in a worker thread, so the event loop stays free.
        """
        stream = self.subscribe(
            from_index,
            node=node,
            idle_timeout=idle_timeout,
            unreachable_timeout=unreachable_timeout,
        )
        while True:
            delivery = await asyncio.to_thread(next, stream, None)
            if delivery is None:
                return
            yield delivery

    def _after(self, node: int) -> int:
        ids = self.cluster.ids
        return ids[(ids.index(node) + 1) % len(ids)]

    # ------------------------------------------------------------------ status

    def status(self, node: int, timeout: float = 1.0) -> Status | None:
        """One node's view of the cluster, or None if it does not answer in time."""
        got = self._ask(node, StatusRequest, Status, timeout)
        return got if isinstance(got, Status) else None

    def snapshot(
        self,
        node: int | None = None,
        *,
        timeout: float = 60.0,
        max_bytes: int = 4 * 1024**3,
    ) -> StateSnapshot | None:
        """The latest durable snapshot of ``node`` (or of any node that has one): the
        application state after the first ``index`` deliveries, as its state machine's
        ``snapshot()`` returned it. None if no node has a snapshot yet.

        With :meth:`subscribe`, this is how a subscriber that fell below every node's
        retention (:class:`~broadcast.errors.Compacted`) rebuilds its state: restore
        ``state``, then follow from ``index + 1``. The snapshot is read in chunks and
        checked against its checksum; one that changes on the way (the node took a
        newer one) is read again from the start.
        """
        sources = [node] if node is not None else [self._target, *(
            n for n in self.cluster.ids if n != self._target
        )]
        deadline = time.monotonic() + timeout
        for source in sources:
            got = self._read_snapshot(source, deadline, max_bytes)
            if got is not None:
                return got
        return None

    def _read_snapshot(self, node: int, deadline: float, max_bytes: int) -> StateSnapshot | None:
        data = bytearray()
        meta: tuple[int, int, int, int] | None = None  # slot, index, size, crc
        while time.monotonic() < deadline:
            ticket = self._tickets.get(node, 0)
            self.transport.send(node, encode(FetchSnapshot(len(data), ticket)))
            part: SnapshotPart | None = None
            answer_by = min(deadline, time.monotonic() + 5.0)
            while part is None and time.monotonic() < answer_by:
                for sender, frame in self.transport.poll(50):
                    msg = self._decode(sender, frame)
                    if (
                        isinstance(msg, SnapshotPart)
                        and sender == node
                        and (msg.offset == len(data) or msg.size == 0)
                    ):
                        part = msg
            if part is None:
                return None  # this node does not answer
            if part.size == 0:
                return None  # it has no snapshot yet
            if part.size > max_bytes:
                raise ValueError(f"node {node}'s snapshot ({part.size} bytes) exceeds max_bytes")
            if meta != (part.slot, part.index, part.size, part.crc):
                if meta is not None or part.offset != 0:
                    data.clear()  # a newer snapshot replaced it: from the start
                    meta = None
                    continue
                meta = (part.slot, part.index, part.size, part.crc)
            data += part.data
            if len(data) >= part.size:
                blob = bytes(data)
                if len(blob) != part.size or zlib.crc32(blob) != part.crc:
                    data.clear()
                    meta = None
                    continue  # corrupt on the way: again
                state = read_snapshot(blob, max_sessions=1, window=1)
                return StateSnapshot(state.index, state.slot, state.app, node)
        return None

    def take_snapshot(self, node: int, timeout: float = 60.0) -> Status | None:
        """Ask ``node`` to snapshot and compact now; its Status once the snapshot is
        durable, or None if it does not answer in time."""
        got = self._ask(node, TakeSnapshot, Status, timeout)
        return got if isinstance(got, Status) else None

    # ------------------------------------------------------------------ membership

    def refresh_members(self, timeout: float = 0.5) -> None:
        """Learn the members the cluster added since this client started (from any
        node that answers) and connect to them: a client outlives its cluster file's
        list of nodes."""
        members = self.members(timeout=timeout)
        if members is None:
            return
        nodes, keys = dict(self.cluster.nodes), dict(self.cluster.keys)
        for node, address, key in members.endpoints:
            if node in nodes:
                continue
            if self.transport.secure and not key:
                continue
            try:
                self.transport.add_node(
                    node, f"tcp://{address}", key.encode() if key else None
                )
            except (TransportError, ValueError):
                continue
            nodes[node] = address
            if key:
                keys[node] = key
        if len(nodes) != len(self.cluster.nodes):
            self.cluster = dataclasses.replace(self.cluster, nodes=nodes, keys=keys)

    def members(self, node: int | None = None, timeout: float = 2.0) -> Members | None:
        """The membership as ``node`` (default: every node; the newest answer wins, and
        of those one that names a leader: a removed node no longer hears who leads)
        applied it; None if nobody answers in time."""
        nodes = (node,) if node is not None else self.cluster.ids
        best: Members | None = None
        for n in nodes:
            got = self._ask(n, MembersRequest, Members, timeout)
            if isinstance(got, Members) and (
                best is None or _newer(got) > _newer(best)
            ):
                best = got
        return best

    def change_members(
        self, op: Op, node: int, address: str = "", key: str = "", timeout: float = 10.0
    ) -> None:
        """Ask the leader for a membership change and wait until the cluster applied it
        (a learner to promote may first have to catch up: asked again meanwhile). Raises
        :class:`~broadcast.errors.ClusterUnavailable` after ``timeout``, ValueError if
        the change cannot apply."""

        def build(nonce: int) -> ChangeMembers:
            return ChangeMembers(nonce, int(op), node, address, key)

        self._until_leader_did(build, lambda m: _applied(op, node, m), timeout)

    def transfer_leader(self, target: int, timeout: float = 10.0) -> None:
        """Ask the leader to hand over to ``target``; returns once ``target`` leads."""
        self._until_leader_did(
            lambda nonce: TransferLeader(nonce, target), lambda m: m.leader == target, timeout
        )

    def _until_leader_did(
        self,
        build: Callable[[int], object],
        done: Callable[[Members], bool],
        timeout: float,
    ) -> None:
        deadline = time.monotonic() + timeout
        reason = "no leader answered"
        asked_at = 0.0
        while time.monotonic() < deadline:
            members = self.members(timeout=0.5)
            if members is not None and done(members):
                return
            leader = members.leader if members is not None else 0
            if leader in self.cluster.nodes and time.monotonic() - asked_at > 1.0:
                answer = self._ask(leader, build, ChangeAnswer, 1.0)
                if isinstance(answer, ChangeAnswer):
                    asked_at = time.monotonic()
                    reason = answer.reason or "asked; not applied yet"
                    if "does not apply" in answer.reason or "not a voter" in answer.reason:
                        raise ValueError(answer.reason)
            time.sleep(0.05)
        raise ClusterUnavailable(f"not done within {timeout:.0f}s: {reason}")

    def _ask(
        self, node: int, build: Callable[[int], object], kind: type, timeout: float
    ) -> object | None:
        """Send ``build(nonce)`` to ``node``; its answer of type ``kind`` (with that nonce,
        from that node) or None."""
        nonce = next(self._nonce)
        self.transport.send(node, encode(build(nonce)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sender, frame in self.transport.poll(50):
                msg = self._decode(sender, frame)
                if isinstance(msg, kind) and getattr(msg, "nonce", None) == nonce and (
                    sender == node
                ):
                    return msg
        return None

    def leader(self, timeout: float = 1.0) -> int | None:
        """The node that says it leads, if exactly one answers so within ``timeout``."""
        leaders = {
            s.node for s in (self.status(i, timeout) for i in self.cluster.ids)
            if s is not None and s.role == "leader"
        }
        return leaders.pop() if len(leaders) == 1 else None

    def _unreachable_hint(self) -> str:
        """Why no node may answer: a node refuses a key it does not list without a word."""
        if self.transport.secure:
            return (
                "; if the nodes run, check that this client's key is listed in their "
                "cluster file's [clients] (a node does not answer an unknown key)"
            )
        return "; if the nodes run with CURVE keys, a client needs their cluster file"

    def _decode(self, node: int, frame: bytes) -> object:
        try:
            msg = decode(frame)
        except CodecError as exc:
            log.warning("client.bad_frame", node=node, reason=str(exc)[:200])
            return None
        if isinstance(msg, Deliveries | SnapshotPart) and msg.ticket:
            # Read: the next request to this node shows it, so the node keeps serving us.
            self._tickets[node] = msg.ticket
        elif isinstance(msg, Denied):
            raise Forbidden(msg.what)
        return msg


def _applied(op: Op, node: int, m: Members) -> bool:
    if op is Op.ADD_LEARNER:
        return node in m.learners or node in m.voters
    if op is Op.PROMOTE:
        return node in m.voters
    if op is Op.REMOVE:
        return node not in m.voters and node not in m.learners
    return m.phase2_quorum == node or (node == 0 and m.phase2_quorum == len(m.voters) // 2 + 1)


def _newer(m: Members) -> tuple[int, int, bool]:
    return m.epoch, m.governing, m.leader != 0
