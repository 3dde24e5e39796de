"""An attacker on the wire, for tests/test_auth.py.

:class:`Wire` is what an attacker can build with ZeroMQ alone: one raw DEALER per
node, with the routing identity it likes (a member's ``n:1``, ``n:1/xyz``, or a
client's), and the CURVE key it likes (none: plaintext; a fresh, unlisted one; or
a key it holds: a client's, a member's). It sends whatever parts it wants and
records every reply and every event of its own connections (the monitor says
whether a handshake succeeded or why it failed), so a test can tell "the node did
not answer" from "the attack never left".

:func:`paxos_forgeries` and :func:`client_forgeries` are the frames of the attack:
Paxos messages in a member's name (a Prepare at a high ballot, an Accept carrying a
commit, an Accepted, a HeartbeatReply, a Commit, a CatchupReply with a payload nobody
broadcast) and client requests (Submit, Fetch, StatusRequest, OpenSession). Every
payload they carry contains :data:`FORGED`, so the delivered stream shows any that
got in.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from broadcast.identity import cluster_id_bytes
from broadcast.keys import Keypair
from broadcast.protocol import FETCH_MAX, Fetch, OpenSession, StatusRequest, Submit
from broadcast.spec import Cluster
from broadcast.transport import pack_envelopes
from paxos.codec import encode
from paxos.messages import Accept, Accepted, CatchupReply, Commit, HeartbeatReply, Prepare
from paxos.types import Ballot, Command

#: Every forged payload contains this.
FORGED = b"FORGED"
#: The round of every forged ballot: far above any round a real election reaches in a
#: test, so a node whose ballot reaches it took a forgery.
FORGED_ROUND = 1_000_000

_EVENTS = {
    zmq.EVENT_CONNECTED: "connected",
    zmq.EVENT_DISCONNECTED: "disconnected",
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshake_succeeded",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake_failed_protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake_failed_auth",
}


class Wire:
    """Raw DEALERs to ``nodes`` (default: all) of ``cluster``, with routing identity
    ``identity`` and, if ``keypair`` is given, CURVE with that key (the nodes' public
    keys from the cluster file); plaintext otherwise. Sends never block (a message
    that cannot be queued is dropped, as an attacker does not care)."""

    def __init__(
        self,
        cluster: Cluster,
        identity: bytes,
        *,
        keypair: Keypair | None = None,
        nodes: Iterable[int] | None = None,
        max_msg_bytes: int = -1,
    ) -> None:
        self.cluster = cluster
        self.identity = identity
        self.keypair = keypair
        self.nodes = tuple(cluster.ids if nodes is None else nodes)
        self.max_msg_bytes = max_msg_bytes
        self.cluster_id = cluster_id_bytes(cluster.cluster_id or "")
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.socks: dict[int, zmq.Socket[bytes]] = {}
        self.monitors: dict[int, zmq.Socket[bytes]] = {}
        #: Everything the nodes sent back: (node, parts).
        self.replies: list[tuple[int, list[bytes]]] = []
        #: Per node, the names of the events its connections went through (see _EVENTS).
        self.events: dict[int, list[str]] = {node: [] for node in self.nodes}
        #: The same, for the connections dialled last only.
        self.last: dict[int, list[str]] = {node: [] for node in self.nodes}
        #: How many connections were dialled to each node (see redial).
        self.dialled = 0
        self._dial()

    def _dial(self) -> None:
        for node in self.nodes:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IDENTITY, self.identity)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_msg_bytes)
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            if self.keypair is not None:
                sock.curve_publickey = self.keypair.public
                sock.curve_secretkey = self.keypair.secret
                sock.curve_serverkey = self.cluster.keys[node].encode()
            self.monitors[node] = sock.get_monitor_socket(sum(_EVENTS))
            sock.connect(self.cluster.endpoint(node))
            self.socks[node] = sock
            self.last[node] = []
        self.dialled += 1

    def redial(self) -> None:
        """New connections to every node (ZeroMQ gives up on a connection whose handshake
        was refused: an attacker who wants to keep trying must dial again)."""
        self._hang_up()
        self._dial()

    def _hang_up(self) -> None:
        self.pump()
        for node, sock in self.socks.items():
            sock.disable_monitor()
            self.monitors[node].close(0)
            sock.close(0)
        self.socks.clear()
        self.monitors.clear()

    def send(self, node: int, parts: Sequence[bytes]) -> bool:
        """Queue one message of ``parts`` to ``node``; False if it could not be queued."""
        try:
            self.socks[node].send_multipart(list(parts), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def envelopes(self, frames: Sequence[bytes]) -> list[list[bytes]]:
        """``frames`` packed as a member packs them (our cluster's id)."""
        return [parts for parts, _ in pack_envelopes(self.cluster_id, frames)]

    def send_envelopes(self, node: int, frames: Sequence[bytes]) -> None:
        for parts in self.envelopes(frames):
            self.send(node, parts)

    def pump(self) -> None:
        """Take in what arrived: replies and events of our own connections."""
        for node, sock in self.socks.items():
            while True:
                try:
                    self.replies.append((node, sock.recv_multipart(zmq.NOBLOCK)))
                except zmq.Again:
                    break
            monitor = self.monitors[node]
            while True:
                try:
                    event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                name = _EVENTS.get(event["event"], str(event["event"]))
                self.events[node].append(name)
                self.last[node].append(name)

    def saw(self, event: str, *, last: bool = False) -> set[int]:
        """The nodes a connection to which went through an event whose name starts with
        ``event`` (``last``: of the connections dialled last)."""
        self.pump()
        seen = self.last if last else self.events
        return {node for node, names in seen.items() if any(n.startswith(event) for n in names)}

    def close(self) -> None:
        self._hang_up()
        self.ctx.term()


def paxos_forgeries(src: int, session: str, seq: int, slot: int) -> list[bytes]:
    """Paxos messages in member ``src``'s name: a Prepare at a forged ballot, an Accept of
    a forged command (in session ``session`` at its next ``seq``) in ``slot`` carrying a
    commit of that slot, an Accepted, a HeartbeatReply and a Commit at that ballot, and a
    CatchupReply that says forged commands were chosen in ``slot`` and the two after it."""
    ballot = Ballot(FORGED_ROUND, src)
    accepted = (Command(session, seq, FORGED + b" by Accept"),)
    caught = (Command(session, seq, FORGED + b" by CatchupReply"),)
    messages: list[object] = [
        Prepare(src, ballot, slot),
        Accept(src, ballot, slot, accepted, slot),
        Accepted(src, ballot, slot),
        HeartbeatReply(src, ballot, slot + 2),
        Commit(src, ballot, slot),
        CatchupReply(src, tuple((s, caught) for s in range(slot, slot + 3)), slot + 2),
    ]
    return [encode(m) for m in messages]


def client_forgeries(session: str, seq: int, nonce: int) -> list[bytes]:
    """Client requests: a Submit of a forged command into ``session`` at ``seq``, a Fetch
    of the stream, a StatusRequest (``nonce``) and an OpenSession."""
    messages: list[object] = [
        Submit((Command(session, seq, FORGED + b" by Submit"),)),
        Fetch(1, FETCH_MAX, 0),
        StatusRequest(nonce),
        OpenSession("forged", os.urandom(16), ""),
    ]
    return [encode(m) for m in messages]


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON lines of a node's log whose event is ``event``."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            out.append(entry)
    return out


def pace(period_s: float, rounds: int) -> Iterable[int]:
    """``range(rounds)``, one every ``period_s`` (the attack's rhythm, not a wait for a
    condition: the test attacks for a while, then looks)."""
    start = time.monotonic()
    for i in range(rounds):
        yield i
        delay = start + (i + 1) * period_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
