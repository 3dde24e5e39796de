"""The client library: broadcast into a cluster and follow its ordered stream from outside.

A :class:`Client` talks to whichever node answers. Broadcasts are exactly-once:
each payload gets ``(client id, seq)``, unacknowledged payloads are resent (in
order, to the leader or another node) until the cluster acknowledges them, and
the replicated sessions drop any repeat. Subscriptions resume after a node
failure at the next index, so they have neither gaps nor duplicates.

A client is driven by one thread at a time (it is not thread-safe); asyncio
code can use the ``*_async`` forms, which run the blocking calls in a worker
thread.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import NamedTuple

from broadcast.logs import get_logger
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
from broadcast.spec import Cluster, parse_cluster
from broadcast.transport import ClientTransport
from paxos.codec import MAX_CLIENT_ID_LEN, CodecError, decode, encode
from paxos.types import Command, Delivery

log = get_logger("broadcast.client")


class ClusterUnavailable(TimeoutError):
    """No node answered (or nothing was committed) within the deadline."""


class Committed(NamedTuple):
    """A payload this client broadcast, now committed at ``index`` (1-based) in the total order.

    ``index`` is 0 if the payload was committed so long ago that no node kept its index.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose
    client: str
    seq: int


class Client:
    """Broadcast payloads into a cluster, and subscribe to its ordered deliveries.

    ``cluster`` is a :class:`~broadcast.spec.Cluster` or a SPEC string
    (``1=127.0.0.1:7101,...`` or the path of a TOML file).

    ``client_id`` names the session. Reusing an id continues its session: the
    client first asks the cluster for the last sequence number it committed.
    """

    def __init__(
        self,
        cluster: Cluster | str,
        *,
        client_id: str | None = None,
        timeout: float = 30.0,
        retry_s: float = 0.25,
        window: int = 4096,
        batch: int = 256,
    ) -> None:
        self.cluster = parse_cluster(cluster) if isinstance(cluster, str) else cluster
        self.client_id = client_id or f"client-{uuid.uuid4().hex[:16]}"
        if not 0 < len(self.client_id) <= MAX_CLIENT_ID_LEN:
            raise ValueError(f"client id must have 1..{MAX_CLIENT_ID_LEN} characters")
        self.timeout = timeout
        self.retry_s = retry_s
        self.window = window
        self.batch = batch
        self.transport = ClientTransport(
            {i: self.cluster.endpoint(i) for i in self.cluster.ids}
        )
        self._rng = random.Random()
        self._target = self._rng.choice(self.cluster.ids)
        self._next_seq: int | None = None if client_id else 1
        self._nonce = itertools.count(1)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

        Returns one :class:`Committed` per payload, in the order given; each
        is also passed to ``on_commit`` as soon as it is known, in seq order.
        Raises :class:`ClusterUnavailable` if no progress is made for ``timeout``.
        """
        if self._next_seq is None:
            self._next_seq = self._recover_seq() + 1
        source = iter(payloads)
        exhausted = False
        unacked: dict[int, Command] = {}  # seq -> command, insertion (= seq) order
        done: dict[int, Committed] = {}
        first_seq = self._next_seq
        reported = first_seq
        unsent: list[Command] = []
        last_progress = time.monotonic()
        last_send = 0.0
        while True:
            while not exhausted and len(unacked) < self.window:
                try:
                    payload = next(source)
                except StopIteration:
                    exhausted = True
                    break
                command = Command(self.client_id, self._next_seq, bytes(payload))
                self._next_seq += 1
                unacked[command.seq] = command
                unsent.append(command)
            if exhausted and not unacked:
                break
            now = time.monotonic()
            targets: tuple[int, ...] = (self._target,)
            if now - last_send >= self.retry_s and unacked and not unsent:
                # No acknowledgement for a while: the target may be down or cut off.
                # Resend everything unacknowledged, in order, to every node: any live
                # one forwards to the leader (or queues until one is elected), and the
                # replicated sessions drop the repeats.
                targets = self.cluster.ids
                unsent = list(unacked.values())
            if unsent:
                frames = [
                    encode(Submit(tuple(unsent[i : i + self.batch])))
                    for i in range(0, len(unsent), self.batch)
                ]
                for target in targets:
                    for frame in frames:
                        self.transport.send(target, frame)
                unsent = []
                last_send = now
            for node, frame in self.transport.poll(50):
                msg = self._decode(node, frame)
                if isinstance(msg, SubmitAck) and msg.client == self.client_id:
                    client_id = self.client_id
                    pop = unacked.pop
                    for first_seq, first_index, count in msg.acks:
                        for seq in range(first_seq, first_seq + count):
                            if pop(seq, None) is not None:
                                # index 0: delivered so long ago the node forgot where.
                                index = first_index + (seq - first_seq) if first_index else 0
                                done[seq] = Committed(index, client_id, seq)
                    last_progress = time.monotonic()
                    last_send = last_progress
                    if msg.leader and msg.leader in self.cluster.nodes:
                        self._target = msg.leader
                elif (
                    isinstance(msg, SubmitRefused)
                    and msg.client == self.client_id
                    and msg.leader in self.cluster.nodes
                ):
                    self._target = msg.leader
            while reported in done and on_commit is not None:
                on_commit(done[reported])
                reported += 1
            if time.monotonic() - last_progress > self.timeout:
                raise ClusterUnavailable(
                    f"no broadcast committed for {self.timeout:.0f}s "
                    f"({len(unacked)} unacknowledged; cluster {self.cluster.spec()})"
                )
        return [done[seq] for seq in range(first_seq, self._next_seq)]

    def _after(self, node: int) -> int:
        ids = self.cluster.ids
        return ids[(ids.index(node) + 1) % len(ids)]

    def _recover_seq(self) -> int:
        """The last seq the cluster committed for this client id (0 if none).

        Asks every node and waits for a majority of answers: a committed
        command reached a majority of acceptors, and each node reports what
        it has delivered, so the maximum is the best lower bound available.
        """
        deadline = time.monotonic() + self.timeout
        answers: dict[int, int] = {}
        majority = len(self.cluster.ids) // 2 + 1
        query = encode(SessionQuery(self.client_id))
        last_send = 0.0
        while len(answers) < majority:
            now = time.monotonic()
            if now > deadline:
                raise ClusterUnavailable(f"no majority answered ({self.cluster.spec()})")
            if now - last_send > self.retry_s:
                for node in self.cluster.ids:
                    if node not in answers:
                        self.transport.send(node, query)
                last_send = now
            for node, frame in self.transport.poll(50):
                msg = self._decode(node, frame)
                if isinstance(msg, SessionInfo) and msg.client == self.client_id:
                    answers[node] = msg.last_seq
        return max(answers.values())

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
        """
        if from_index < 1:
            raise ValueError("from_index starts at 1")
        if node is not None and node not in self.cluster.nodes:
            raise ValueError(f"node {node} is not in the cluster")
        source = node if node is not None else self._target
        next_index = from_index
        wait_ms = 1000
        last_delivery = last_answer = time.monotonic()
        while True:
            self.transport.send(source, encode(Fetch(next_index, FETCH_MAX, wait_ms)))
            deadline = time.monotonic() + wait_ms / 1000 + 2.0
            answered = False
            while not answered and time.monotonic() < deadline:
                for sender, frame in self.transport.poll(100):
                    msg = self._decode(sender, frame)
                    if not isinstance(msg, Deliveries) or sender != source:
                        continue
                    if msg.first_index != next_index:
                        continue  # the answer to an earlier fetch: already served
                    answered = True
                    last_answer = time.monotonic()
                    for command in msg.commands:
                        yield Delivery(next_index, 0, command)
                        next_index += 1
                    if msg.commands:
                        last_delivery = time.monotonic()
            now = time.monotonic()
            if idle_timeout is not None and now - last_delivery > idle_timeout:
                return
            if unreachable_timeout is not None and now - last_answer > unreachable_timeout:
                raise ClusterUnavailable(
                    f"no node answered for {unreachable_timeout:.0f}s ({self.cluster.spec()})"
                )
            if not answered and node is None:
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

    # ------------------------------------------------------------------ status

    def status(self, node: int, timeout: float = 1.0) -> Status | None:
        """One node's view of the cluster, or None if it does not answer in time."""
        nonce = next(self._nonce)
        self.transport.send(node, encode(StatusRequest(nonce)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sender, frame in self.transport.poll(50):
                msg = self._decode(sender, frame)
                if isinstance(msg, Status) and msg.nonce == nonce and sender == node:
                    return msg
        return None

    def leader(self, timeout: float = 1.0) -> int | None:
        """The node that says it leads, if exactly one answers so within ``timeout``."""
        leaders = {
            s.node for s in (self.status(i, timeout) for i in self.cluster.ids)
            if s is not None and s.role == "leader"
        }
        return leaders.pop() if len(leaders) == 1 else None

    def _decode(self, node: int, frame: bytes) -> object:
        try:
            return decode(frame)
        except CodecError as exc:
            log.warning("client.bad_frame", node=node, reason=str(exc)[:200])
            return None
