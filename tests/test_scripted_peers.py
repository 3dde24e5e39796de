"""A real node process, its peers played by the test: what the node takes from the wire.

Node 1 of a three-node cluster runs as it ships (``paxos node``: transport, codec,
replica, write-ahead log, delivery); node 2 is the test, speaking Paxos to it through
a real :class:`~broadcast.transport.NodeTransport`; node 3 never runs. The test leads
at a ballot of its own and decides what the log holds, slot by slot, so these
scenarios depend on no election and no timing: the node's answers are the same on
every run.

The cluster speaks CURVE: the test holds node 2's key (written by ``cluster_file``, as
for every node) and the admin client's.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from procs import ProcessCluster, client_transport, wait_for

from broadcast.identity import cluster_id_bytes, derive_cluster_id
from broadcast.protocol import (
    FETCH_MAX,
    Deliveries,
    Fetch,
    OpenSession,
    SessionOpened,
    Status,
    StatusRequest,
)
from broadcast.spec import bind_address
from broadcast.transport import NodeTransport
from paxos.codec import decode, encode
from paxos.messages import Accept, Accepted, Commit
from paxos.multi.sessions import open_command
from paxos.types import Ballot, Command, Value

pytestmark = pytest.mark.integration

T = TypeVar("T")
NODE = 1  # the real node
ME = 2  # the test, as a member
NONCE = bytes(range(16))


class Peer:
    """Node ``ME`` of ``procs``'s cluster, played through a real transport, plus a client
    connection to node ``NODE`` for its status and its deliveries."""

    def __init__(self, procs: ProcessCluster) -> None:
        cluster = procs.cluster
        cid = cluster_id_bytes(cluster.cluster_id or derive_cluster_id(cluster))
        self.transport = NodeTransport(
            ME, bind_address(cluster.nodes[ME]), {NODE: cluster.nodes[NODE]}, cluster_id=cid,
            keyring=procs.keyring(ME),
        )
        self.client = client_transport(cluster, [NODE])
        self._nonces = itertools.count(1)

    def close(self) -> None:
        self.transport.close()
        self.client.close()

    def send(self, *messages: object) -> None:
        self.transport.send_many(NODE, [encode(m) for m in messages])

    def _answer(self, poll: Callable[[], list[tuple[T, bytes]]], match: Callable[[object], bool],
                resend: Callable[[], None], what: str) -> object:
        """Send (and resend: frames to a peer not connected yet are dropped) until ``poll``
        yields a reply that ``match``es."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            resend()
            until = time.monotonic() + 0.2
            while time.monotonic() < until:
                for _, frame in poll():
                    msg = decode(frame)
                    if match(msg):
                        return msg
        raise AssertionError(f"node {NODE} never answered: {what}")

    def _from_node(self) -> list[tuple[bytes, bytes]]:
        """What node 1 sent us as a member (its key says so): (identity, frame)."""
        got = self.transport.poll(50)
        assert all(principal == f"n:{NODE}" for _, _, principal in got), got
        return [(identity, frame) for identity, frame, _ in got]

    def accept(self, accept: Accept) -> None:
        """Propose as the leader of ``accept.ballot``, until node 1 accepts."""
        self._answer(
            self._from_node,
            lambda m: isinstance(m, Accepted) and (m.ballot, m.slot) == (accept.ballot,
                                                                          accept.slot),
            lambda: self.send(accept),
            f"Accepted for slot {accept.slot}",
        )

    def ask(self, request: object, match: Callable[[object], bool]) -> object:
        frame = encode(request)
        return self._answer(
            lambda: self.client.poll(50), match, lambda: self.client.send(NODE, frame),
            type(request).__name__,
        )

    def status(self) -> Status:
        """Node 1's status, as of a request sent now (an earlier request's late answer,
        from before the frames sent since, does not count)."""
        nonce = next(self._nonces)
        reply = self.ask(StatusRequest(nonce), lambda m: isinstance(m, Status) and m.nonce == nonce)
        assert isinstance(reply, Status)
        return reply

    def choose(self, ballot: Ballot, slots: dict[int, Value]) -> None:
        """Get ``slots`` accepted at ``ballot`` and announce them chosen; wait until
        node 1 has applied them."""
        for slot, value in slots.items():
            self.accept(Accept(ME, ballot, slot, value, 0))
        upto = max(slots)
        self.send(Commit(ME, ballot, upto))
        wait_for(f"node {NODE} to apply slots up to {upto}", lambda: self.status().commit >= upto)

    def session(self, name: str) -> str:
        """The key of the session that ``open(name, NONCE)`` opened at node 1."""
        reply = self.ask(
            OpenSession(name, NONCE, ""),
            lambda m: isinstance(m, SessionOpened) and m.nonce == NONCE,
        )
        assert isinstance(reply, SessionOpened)
        return reply.key

    def deliveries(self) -> list[Command]:
        reply = self.ask(Fetch(1, FETCH_MAX, 0), lambda m: isinstance(m, Deliveries))
        assert isinstance(reply, Deliveries)
        return list(reply.commands)


def _with_peer(tmp_path: Path, scenario: Callable[[Peer], None]) -> None:
    procs = ProcessCluster(tmp_path, start=[NODE])
    played = Peer(procs)
    try:
        scenario(played)
    finally:
        played.close()
        procs.stop()


def test_each_session_seq_is_delivered_once_and_in_order(tmp_path: Path) -> None:
    """The log may hold repeats (a client's resend, proposed again by a new leader) and
    commands whose predecessor is not delivered yet (a resend overtaking a lost one): the
    node delivers each (session, seq) once, in seq order, whatever the log holds."""

    def scenario(peer: Peer) -> None:
        ballot = Ballot(1, ME)
        peer.choose(ballot, {1: (open_command("app", NONCE),)})
        key = peer.session("app")

        def c(seq: int) -> Command:
            return Command(key, seq, b"payload %d" % seq)

        peer.choose(ballot, {2: (c(1), c(1), c(3), c(2), c(3)), 3: (c(2), c(4), c(1), c(6))})
        got = [(d.seq, d.payload) for d in peer.deliveries()]
        expected = [(seq, b"payload %d" % seq) for seq in (1, 2, 3, 4)]
        assert got == expected, f"the node delivered {got}, not each seq once in order"

    _with_peer(tmp_path, scenario)


def test_a_message_in_another_nodes_name_is_dropped(tmp_path: Path) -> None:
    """Only a node may speak Paxos, and only under its own id: a Paxos message whose
    ``src`` is not the node its connection belongs to (a client's, or node 2's claiming
    to be node 3) is dropped; it changes neither the node's promise nor its log."""

    def scenario(peer: Peer) -> None:
        ballot = Ballot(1, ME)
        peer.choose(ballot, {1: (open_command("app", NONCE),)})
        key = peer.session("app")
        forged = (Command(key, 1, b"forged"),)

        # From a client connection, in node 3's name; the status asked on the same
        # connection afterwards is answered after the forged frames were handled.
        for message in (Accept(3, Ballot(4, 3), 2, forged, 1), Commit(3, Ballot(4, 3), 2)):
            peer.client.send(NODE, encode(message))
        status = peer.status()
        assert (status.ballot, status.commit) == (ballot, 1), (
            f"a client's forged Accept moved the node to ballot {status.ballot}, "
            f"commit {status.commit}"
        )
        # From node 2's connection, in node 3's name; the Accepted for our own next
        # proposal (on the same connection) comes after the forged frames were handled.
        peer.send(Accept(3, Ballot(5, 3), 2, forged, 1), Commit(3, Ballot(5, 3), 2))
        higher = Ballot(6, ME)
        peer.accept(Accept(ME, higher, 3, (Command(key, 1, b"ours"),), 1))
        status = peer.status()
        assert (status.ballot, status.commit) == (higher, 1), (
            f"node 2's forged Accept in node 3's name was taken: ballot {status.ballot}, "
            f"commit {status.commit}"
        )
        assert peer.deliveries() == [], "the node delivered a forged command"

    _with_peer(tmp_path, scenario)
