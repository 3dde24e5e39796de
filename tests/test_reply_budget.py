"""The reply budget, in one process: a node owes a client at most ``reply_budget_bytes`` of
deliveries it has not proved it read (tickets), pauses a client over it, and cuts it off.

One embedded CURVE node (a majority of one) with a history of 64 KiB payloads, and raw
client transports that speak the protocol by hand, so that a test decides exactly which
tickets a client shows. The real-process memory bounds are in tests/test_client_limits.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import grant_toml, wait_for

from broadcast import Node, local_cluster
from broadcast.errors import Forbidden
from broadcast.keys import load_keypair
from broadcast.local import cluster_file, free_base_port
from broadcast.protocol import Deliveries, Fetch
from broadcast.spec import Cluster
from broadcast.transport import ClientTransport
from paxos.codec import decode, encode

PAYLOAD = 64 * 1024
COUNT = 64  # 4 MiB of history: many budgets' worth
BUDGET = 256 * 1024


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, Cluster]]:
    cluster = cluster_file(tmp_path, local_cluster(1, free_base_port(1)))
    n = Node(
        1,
        cluster,
        tmp_path / "node1",
        fsync=False,
        reply_budget_bytes=BUDGET,
        reply_cutoff_s=1.0,
    ).start()
    try:
        for i in range(COUNT):
            n.submit(bytes([i]) * PAYLOAD)
        wait_for("the history", lambda: n.last_index >= COUNT)
        yield n, cluster
    finally:
        n.stop()


def _raw(cluster: Cluster) -> ClientTransport:
    assert cluster.client_key is not None
    return ClientTransport(
        {1: cluster.endpoint(1)},
        keypair=load_keypair(cluster.client_key),
        server_keys={i: k.encode() for i, k in cluster.keys.items()},
    )


def _deliveries(transport: ClientTransport, wait_ms: int = 300) -> list[Deliveries]:
    got = []
    for _, frame in transport.poll(wait_ms):
        msg = decode(frame)
        if isinstance(msg, Deliveries):
            got.append(msg)
    return got


def test_a_client_that_shows_no_ticket_gets_at_most_its_budget_then_is_cut_off(
    node: tuple[Node, Cluster],
) -> None:
    n, cluster = node
    with _raw(cluster) as reader:
        # Ask for everything again and again, never showing a ticket: it does not read.
        for _ in range(40):
            reader.send(1, encode(Fetch(1, 4096, 0, 0)))
        wait_for("the node to pause it", lambda: n.drops.get("paused", 0) >= 30)
        got: list[Deliveries] = []
        wait_for("its replies", lambda: got.extend(_deliveries(reader)) or len(got) >= 1)
        got += _deliveries(reader)
        sent = sum(len(c.payload) for m in got for c in m.commands)
        # At most the budget, plus the one reply that may exceed it when nothing is owed.
        assert 0 < sent <= BUDGET + 256 * 1024, sent
        wait_for("the cut-off", lambda: n.drops.get("cut_off_clients", 0) == 1)
        # Cut off: even a request with a valid ticket is not served any more.
        reader.send(1, encode(Fetch(1, 4096, 0, got[-1].ticket)))
        assert _deliveries(reader, 1000) == []
        wait_for("the dropped request", lambda: n.drops.get("cut_off", 0) >= 1)


def test_a_client_that_shows_its_tickets_reads_the_whole_history(
    node: tuple[Node, Cluster],
) -> None:
    n, cluster = node
    with _raw(cluster) as reader:
        index, ticket, seen = 1, 0, 0
        while index <= COUNT:
            reader.send(1, encode(Fetch(index, 4096, 0, ticket)))
            got = wait_for("a reply", lambda: _deliveries(reader, 200) or None, 30)
            for msg in got:
                if msg.first_index == index:
                    index += len(msg.commands)
                    seen += len(msg.commands)
                ticket = msg.ticket or ticket
        assert seen == COUNT
        assert n.drops.get("paused", 0) == 0


def test_the_client_library_shows_its_tickets(node: tuple[Node, Cluster]) -> None:
    n, cluster = node
    from broadcast import Client

    with Client(cluster) as client:
        stream = client.subscribe(1, node=1)
        indexes = [next(stream).index for _ in range(COUNT)]
    assert indexes == list(range(1, COUNT + 1))
    assert n.drops.get("paused", 0) == 0


def test_a_reply_to_a_denied_client_says_so(tmp_path: Path) -> None:
    """A key without ``subscribe`` asking to read gets Denied (Forbidden in the client)."""
    from broadcast import Client
    from broadcast.keys import Keypair, save_keypair

    plain = local_cluster(1, free_base_port(1))
    cluster = cluster_file(tmp_path, plain)
    assert cluster.path is not None
    writer = Keypair.generate()
    save_keypair(tmp_path / "writer.key", writer)
    with cluster.path.open("a") as f:
        f.write(grant_toml("writer", writer, ["w*"], ["broadcast"]))
    cluster = cluster_file(tmp_path, plain)  # read back, with the new grant
    n = Node(1, cluster, tmp_path / "node1", fsync=False).start()
    try:
        with Client(cluster, key_file=tmp_path / "writer.key", client_id="w1") as client:
            assert client.broadcast(b"x").index == 1
            with pytest.raises(Forbidden, match="subscribe"):
                next(client.subscribe(1, node=1))
        with (
            Client(cluster, key_file=tmp_path / "writer.key", client_id="x1") as client,
            pytest.raises(Forbidden, match="session x1"),
        ):
            client.broadcast(b"y")
    finally:
        n.stop()


def test_a_client_that_lost_a_reply_is_served_again_at_once(node: tuple[Node, Cluster]) -> None:
    """A reply lost on the way (a connection reset) is never read, so its ticket is never
    shown: the client shows again the last ticket it read, and that forgives what came
    after it (review finding: it used to be paused, then cut off for good)."""
    n, cluster = node
    with _raw(cluster) as reader:
        reader.send(1, encode(Fetch(1, 1, 0, 0)))
        (first,) = wait_for("the first reply", lambda: _deliveries(reader, 200) or None, 30)
        read = first.ticket
        for index in range(2, 2 + 3 * BUDGET // PAYLOAD):
            # Released by this fetch; its reply is "lost": the client never sees it ...
            reader.send(1, encode(Fetch(index, 1, 0, read)))
            wait_for("a reply", lambda: _deliveries(reader, 200) or None, 30)
            # ... so it shows the same ticket again, and the reply comes again.
            reader.send(1, encode(Fetch(index, 1, 0, read)))
            (again,) = wait_for("the reply again", lambda: _deliveries(reader, 200) or None, 30)
            read = again.ticket
        assert n.drops.get("paused", 0) == 0


def test_showing_the_same_ticket_again_and_again_forgives_once(
    node: tuple[Node, Cluster],
) -> None:
    """A client that reads one reply and then shows its ticket forever, reading nothing
    more, is forgiven once, then paused and cut off like any reader that does not read
    (second review: each repeat used to forgive everything)."""
    n, cluster = node
    with _raw(cluster) as reader:
        reader.send(1, encode(Fetch(1, 1, 0, 0)))
        (first,) = wait_for("the first reply", lambda: _deliveries(reader, 200) or None, 30)
        reader.send(1, encode(Fetch(2, 4096, 0, first.ticket)))  # releases it
        for _ in range(40):
            reader.send(1, encode(Fetch(2, 4096, 0, first.ticket)))
        wait_for("the node to pause it", lambda: n.drops.get("paused", 0) >= 30)
        wait_for("the cut-off", lambda: n.drops.get("cut_off_clients", 0) == 1)
