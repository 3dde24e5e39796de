"""The client against nodes that stop, refuse or hold: subscriptions that move to another
node, backpressure ("busy") and the client's resends, long-poll fetches that expire.

All of it with CURVE on (the nodes' and the admin client's keys in ``tmp_path``)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
from procs import ProcessCluster, client_transport, secure_cluster, wait_for

from broadcast import Client, Node
from broadcast.protocol import Deliveries, Fetch, SubmitRefused
from broadcast.transport import ClientTransport
from paxos.codec import decode, encode
from paxos.multi.config import ReplicaConfig
from paxos.types import Command

pytestmark = pytest.mark.integration


def test_a_subscription_moves_to_another_node_without_gap_or_repeat(tmp_path: Path) -> None:
    """The node a subscription reads from stops in the middle of the stream: the client
    moves to another node and resumes at the next index (indexes are the same on every
    node), neither skipping one nor repeating one."""
    procs = ProcessCluster(tmp_path)
    try:
        leader = procs.leader()
        source = next(n for n in procs.cluster.ids if n != leader)
        with Client(procs.cluster, client_id="writer") as writer, Client(procs.cluster) as reader:
            committed = writer.broadcast_many(b"first %d" % i for i in range(10))
            # A subscription without a node starts at the client's current target.
            reader._target = source
            stream = reader.subscribe(1, idle_timeout=10)
            got = list(itertools.islice(stream, 5))  # the first fetch brought all ten
            procs.kill(source)
            # One more than is read: a subscription that skipped an index still has 20.
            committed += writer.broadcast_many(b"second %d" % i for i in range(11))
            got += itertools.islice(stream, 15)  # 6-10 as fetched, then from another node
    finally:
        procs.stop()
    indexes = [d.index for d in got]
    assert indexes == list(range(1, 21)), f"the subscription's indexes were {indexes}"
    expected = {c.index: Command(c.client, c.seq, b"") for c in committed}
    for d in got:
        want = expected[d.index]
        assert (d.command.client, d.command.seq) == (want.client, want.seq), (
            f"index {d.index} holds {d.command}, not {want}"
        )


class _WatchingClient(Client):
    """A client that notes every refusal it is sent: (reason, first refused seq)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.refusals: list[tuple[str, int]] = []

    def _decode(self, node: int, frame: bytes) -> object:
        msg = super()._decode(node, frame)
        if isinstance(msg, SubmitRefused):
            self.refusals.append((msg.reason, msg.first_seq))
        return msg


def test_a_node_refuses_beyond_its_queue_limit_and_the_client_resends_later(
    tmp_path: Path,
) -> None:
    """A node that cannot commit (its followers are down) queues at most ``queue_max``
    commands and refuses a Submit that would go beyond ("busy") instead of queueing
    without bound; the client keeps the refused payloads and resends them until the
    cluster can take them: each is then delivered once, in order."""
    cluster = secure_cluster(tmp_path, 3)
    # One slot in flight of one command, four queued at most.
    config = ReplicaConfig(nodes=cluster.ids, window=1, batch_max=1, queue_max=4)

    def start(i: int) -> Node:
        return Node(i, cluster, tmp_path / f"node{i}", fsync=False, replica_config=config).start()

    nodes = {i: start(i) for i in cluster.ids}
    client = _WatchingClient(cluster, client_id="app", batch=2, retry_s=0.1, timeout=60)
    box: dict[str, object] = {}
    try:
        assert client.broadcast(b"warm-up").seq == 1
        leader = wait_for("a leader", lambda: client.leader(timeout=0.3))
        for i in cluster.ids:
            if i != leader:
                nodes[i].stop()

        def broadcast() -> None:
            try:
                box["results"] = client.broadcast_many(b"p%d" % seq for seq in range(2, 8))
            except BaseException as exc:  # reported below
                box["error"] = exc

        worker = threading.Thread(target=broadcast, daemon=True)
        worker.start()
        # Submits of two: seqs 2-3 and 4-5 fit (one in flight, three queued, or four
        # queued if the leader stepped down), 6-7 would make five.
        # (A refusal of the warm-up, sent to every node while the cluster was electing,
        # may come late: only this run's seqs count.)
        refused = wait_for(
            "a busy refusal", lambda: [r for r in client.refusals if r[1] > 1] or None
        )
        assert refused[0] == ("busy", 6), client.refusals
        for i in cluster.ids:
            if i != leader:
                nodes[i] = start(i)
        worker.join(120)
        assert not worker.is_alive(), "the broadcast never returned"
        assert "error" not in box, box["error"]
        results = box["results"]
        assert isinstance(results, list)
        assert [c.seq for c in results] == list(range(2, 8))
        key = results[0].client
        wait_for("the leader to deliver all", lambda: nodes[leader].last_index >= 7)
        delivered = [(c.seq, c.payload) for c in nodes[leader].delivered() if c.client == key]
    finally:
        client.close()
        for node in nodes.values():
            node.stop()
    assert delivered == [(1, b"warm-up")] + [(seq, b"p%d" % seq) for seq in range(2, 8)]


def _reply(transport: ClientTransport, deadline_s: float = 20.0) -> Deliveries:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for _, frame in transport.poll(50):
            msg = decode(frame)
            if isinstance(msg, Deliveries):
                return msg
    raise AssertionError(f"no Deliveries within {deadline_s:.0f}s")


def test_a_long_poll_fetch_is_answered_when_its_wait_expires_or_when_a_delivery_comes(
    tmp_path: Path,
) -> None:
    cluster = secure_cluster(tmp_path, 1)
    with Node(1, cluster, tmp_path / "node1", fsync=False) as node, client_transport(
        cluster
    ) as transport:
        assert node.broadcast(b"one", timeout=30).index == 1
        # Nothing at index 2 yet: held until its wait expires, then answered empty.
        start = time.monotonic()
        transport.send(1, encode(Fetch(2, 10, 300)))
        reply = _reply(transport)
        assert (reply.first_index, reply.commands, reply.delivered) == (2, (), 1)
        assert time.monotonic() - start >= 0.3, "answered before its wait expired"
        # Without a wait: answered at once (empty); what is there is answered at once too.
        transport.send(1, encode(Fetch(2, 10, 0)))
        assert _reply(transport).commands == ()
        transport.send(1, encode(Fetch(1, 10, 60_000)))
        assert [c.payload for c in _reply(transport).commands] == [b"one"]
        # Held (a wait far longer than this test), then answered by the next delivery.
        transport.send(1, encode(Fetch(2, 10, 60_000)))
        wait_for("the fetch to be held", lambda: bool(node._held_fetches))
        node.submit(b"two")
        reply = _reply(transport)
        assert (reply.first_index, [c.payload for c in reply.commands]) == (2, [b"two"])
        # One held fetch per client: a newer one replaces the one before, which is never
        # answered (the client is owed one reply, not one per request).
        transport.send(1, encode(Fetch(3, 10, 60_000)))
        transport.send(1, encode(Fetch(3, 10, 200)))
        reply = _reply(transport)
        assert (reply.first_index, reply.commands) == (3, ())
        node.broadcast(b"three", timeout=30)
        assert transport.poll(500) == [], "a replaced fetch was answered"
