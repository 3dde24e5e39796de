"""Who may connect to a node: the ZAP handler, the key allow-list, the connection limit.

ZeroMQ authenticates every incoming connection of a node's ROUTER by asking a
ZAP handler (RFC 27) in the same context. :class:`Gatekeeper` is that handler.
It runs in the node's loop thread (``NodeTransport.poll`` serves its socket),
so it shares no state with another thread:

* **CURVE** (the default): a connection is let in only if its long-term public
  key is a cluster member's or an authorised client's (:class:`Keyring`). The
  ZAP reply names the *principal*, ``n:<id>`` or ``c:<client name>``; ZeroMQ
  attaches it to every message of that connection as the ``User-Id``
  property, and the node takes the sender's identity from it, never from the
  routing identity the sender picked.
* **NULL** (``--insecure``): everyone is let in, with an empty principal.

Either way it enforces the limit on concurrent connections: the ROUTER's
monitor reports every accepted and every closed TCP connection and every
handshake's outcome, and while ``max_connections`` connections are in use (past
their handshake, or let in and finishing it; members' included) a client's
handshake waits for its verdict: it is let in as soon as a place is free, or
closed by ZeroMQ when its ``HANDSHAKE_IVL`` runs out (the client reconnects and
waits again). A member is always let in at once: the cluster needs its peers
more than any client. Connections still in their handshake do not count, so
clients waiting for a place, or connections that never say anything, cannot
keep the places of clients that could be let in. (A verdict of "300, temporary
failure" would not close the connection either: ZeroMQ keeps it open, idle,
until the same timeout, and it would count as in use meanwhile.)
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from broadcast.keys import Keypair, raw_key
from broadcast.logs import RateLimited, get_logger
from broadcast.spec import Cluster, ConfigError, Grant

__all__ = ["CLIENT_PRINCIPAL", "NODE_PRINCIPAL", "Gatekeeper", "Keyring"]

log = get_logger(__name__)

_Socket = zmq.Socket[bytes]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: The ZAP domain of a node's ROUTER (ZeroMQ asks the handler only when one is set).
ZAP_DOMAIN = b"paxos"
NODE_PRINCIPAL = "n:"
CLIENT_PRINCIPAL = "c:"
#: At most this many ZAP requests and monitor events are handled per poll.
_MAX_PER_POLL = 1024
#: Handshakes waiting for a place at most; beyond, a client is refused ("300": ZeroMQ
#: keeps its connection idle until its handshake times out, then it reconnects).
_MAX_WAITING = 65_536
#: A waiting handshake is let in only while this much of its HANDSHAKE_IVL is left
#: (else ZeroMQ may close it before the verdict is read).
_WAIT_FRACTION = 0.8
#: Monitor events queued for the loop at most (ZeroMQ drops events beyond it, and a
#: lost event would skew the count of connections in use).
_MONITOR_HWM = 100_000
#: The events the count needs: connections opened and closed, handshakes ended.
_HANDSHAKE_ENDED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass(frozen=True, slots=True)
class Keyring:
    """A node's own keypair and the public keys it lets in (members and clients)."""

    keypair: Keypair
    peers: dict[int, bytes]
    """Node id -> Z85 public key, for every member (this node included)."""
    clients: dict[str, Grant]
    """Client name -> its grant."""

    @classmethod
    def of(cls, cluster: Cluster, node_id: int, keypair: Keypair) -> Keyring:
        """The keyring of ``node_id`` in a secure ``cluster``; ConfigError if ``keypair``
        is not the key the cluster file names for it."""
        mine = cluster.keys.get(node_id)
        if mine is None or mine.encode() != keypair.public:
            raise ConfigError(
                f"node {node_id}'s key file holds the public key "
                f"{keypair.public.decode()}, but the cluster file names "
                f"{mine or 'none'} for node {node_id}"
            )
        return cls(
            keypair,
            {i: k.encode() for i, k in cluster.keys.items()},
            dict(cluster.clients),
        )

    def principals(self) -> dict[bytes, str]:
        """Raw 32-byte public key -> principal, for the ZAP handler."""
        out = {raw_key(k): f"{NODE_PRINCIPAL}{i}" for i, k in self.peers.items()}
        out.update({raw_key(g.key): f"{CLIENT_PRINCIPAL}{g.name}" for g in self.clients.values()})
        return out


@dataclass(slots=True)
class GateStats:
    """Counters of the gate, for tests and metrics."""

    admitted: int = 0
    denied_key: int = 0
    """Handshakes refused: the key is on no list (or the mechanism is not ours)."""
    denied_full: int = 0
    """Client handshakes that found ``max_connections`` in use (they wait for a place)."""
    waiting: int = 0
    """Client handshakes waiting for a place right now."""
    connections: int = 0
    """TCP connections open right now (accepted and not yet closed)."""
    handshaking: int = 0
    """Of those, connections whose handshake has not ended yet."""


class Gatekeeper:
    """The ZAP handler and connection counter of one node's ROUTER (see the module doc)."""

    def __init__(
        self,
        ctx: zmq.Context[_Socket],
        router: _Socket,
        keyring: Keyring | None,
        max_connections: int,
        node_id: int,
        handshake_ms: int = 5_000,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.keyring = keyring
        self.max_connections = max_connections
        self._wait_s = handshake_ms / 1000 * _WAIT_FRACTION
        self._handshake_s = handshake_ms / 1000
        #: Connections in use (see _count_in_use), as of the last batch, plus those let
        #: in since.
        self.in_use = 0
        self.node_id = node_id
        self.stats = GateStats()
        self._principals = keyring.principals() if keyring is not None else {}
        self._open: dict[int, float] = {}  # file descriptor of an open connection -> accepted
        # Open connections whose handshake has not ended (no fd in those events, so
        # counts), and of those, the ones let in: they count as in use already.
        self._handshaking = 0
        self._let_in = 0
        # Client handshakes waiting for a place: (since when, the head of their reply,
        # principal), oldest first. A ROUTER, not a REP, so that a verdict can wait.
        self._waiting: deque[tuple[float, list[bytes], str]] = deque()
        self.zap = ctx.socket(zmq.ROUTER)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)
        address = f"inproc://gate-monitor-{id(self):x}"
        router.monitor(address, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_ENDED)
        self.monitor = ctx.socket(zmq.PAIR)
        self.monitor.setsockopt(zmq.LINGER, 0)
        self.monitor.setsockopt(zmq.RCVHWM, _MONITOR_HWM)
        self.monitor.connect(address)
        self._log_denied = RateLimited(log, "gate.denied", interval_s=5.0)
        # Set on the ROUTER before it binds: ZeroMQ asks the handler for every connection.
        router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        if keyring is not None:
            router.curve_server = True
            router.curve_publickey = keyring.keypair.public
            router.curve_secretkey = keyring.keypair.secret

    def admit_member(self, node_id: int, key: bytes) -> bool:
        """Let in the member ``node_id`` (added through the log) by its Z85 ``key``.
        False (nothing changes) if that key already lets in someone else: a key names
        one principal, or its owner would speak as another (review finding)."""
        if self.keyring is None:
            return True
        principal = f"{NODE_PRINCIPAL}{node_id}"
        raw = raw_key(key)
        if self._principals.get(raw, principal) != principal:
            return False
        self.keyring.peers[node_id] = key
        self._principals[raw] = principal
        return True

    def revoke_member(self, node_id: int) -> None:
        """Stop letting in the member ``node_id`` (removed from the membership)."""
        if self.keyring is None:
            return
        key = self.keyring.peers.pop(node_id, None)
        if key is not None:
            self._principals.pop(raw_key(key), None)

    def on_monitor(self) -> None:
        """Count connections opened and closed (events of the ROUTER's monitor)."""
        for _ in range(_MAX_PER_POLL):
            try:
                parts = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            event = parse_monitor_message(parts)
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._open[event["value"]] = time.monotonic()
                self._handshaking += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._open.pop(event["value"], None)
            elif event["event"] & _HANDSHAKE_ENDED:
                # Exactly one per accepted connection; a success ends one let in.
                self._handshaking = max(0, self._handshaking - 1)
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._let_in = max(0, self._let_in - 1)
        self._let_in = min(self._let_in, self._handshaking)
        self._count_in_use()
        self.stats.connections = len(self._open)
        self.stats.handshaking = self._handshaking
        self._let_waiting_in()

    def _count_in_use(self) -> None:
        """Count the connections in use (``in_use``): past their handshake, or let in and
        finishing it. Once per batch of events or handshakes, not per handshake: it looks
        at every open connection."""
        # Not every connection reports the end of its handshake: libzmq sends no event
        # for one whose first bytes are not a ZMTP 3 greeting (junk, an old ZMTP), so the
        # count of handshakes in progress could only grow, and the limit vanish (second
        # review). A handshake ends within HANDSHAKE_IVL, so at most the open connections
        # accepted since then are still in one.
        since = time.monotonic() - self._handshake_s
        young = sum(1 for accepted in self._open.values() if accepted > since)
        if self._handshaking > young:
            self._handshaking = young
            self._let_in = min(self._let_in, young)
        self.in_use = max(0, len(self._open) - self._handshaking) + self._let_in

    def on_zap(self) -> None:
        """Answer the handshakes asking for a verdict (a client's waits while the node is
        full)."""
        self._count_in_use()
        for _ in range(_MAX_PER_POLL):
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            reply = self._verdict(request)
            if reply is not None:
                self.zap.send_multipart(reply)
        self._let_waiting_in()

    def _verdict(self, request: list[bytes]) -> list[bytes] | None:
        # [the pipe's routing id, delimiter, version, request id, domain, address,
        # routing id of the connection, mechanism, credentials...]
        head = request[:2]
        if len(request) < 8:
            return [*head, b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism, *credentials = request[2:]
        head += [version, request_id]
        principal = self._principal(mechanism, credentials)
        if principal is None:
            self.stats.denied_key += 1
            self._deny("unknown key" if mechanism == b"CURVE" else "wrong mechanism", address)
            # 400: ZeroMQ closes the connection at once (a 300 would leave it open and
            # idle until its handshake times out, holding a place: strangers could keep
            # clients out). Our own members and clients retry a refused key themselves
            # (transport._watch_refusals), so a rotated key gets in once it is listed.
            return [*head, b"400", b"unknown key", b"", b""]
        # A member always gets in; a client while there is room, else it waits for one.
        if not principal.startswith(NODE_PRINCIPAL) and self.in_use >= self.max_connections:
            self.stats.denied_full += 1
            self._deny("too many connections", address, principal=principal)
            if len(self._waiting) >= _MAX_WAITING:
                return [*head, b"300", b"too many connections", b"", b""]
            self._waiting.append((time.monotonic(), head, principal))
            self.stats.waiting = len(self._waiting)
            return None
        return self._admit(head, principal)

    def _admit(self, head: list[bytes], principal: str) -> list[bytes]:
        self.stats.admitted += 1
        self._let_in += 1
        self.in_use += 1
        return [*head, b"200", b"OK", principal.encode(), b""]

    def _let_waiting_in(self) -> None:
        """Let waiting clients in, oldest first, while there is room; forget those whose
        handshake ZeroMQ has closed meanwhile (or is about to)."""
        waiting = self._waiting
        if not waiting:
            return
        oldest = time.monotonic() - self._wait_s
        while waiting and (waiting[0][0] < oldest or self.in_use < self.max_connections):
            since, head, principal = waiting.popleft()
            if since >= oldest:
                self.zap.send_multipart(self._admit(head, principal))
        self.stats.waiting = len(waiting)

    def _principal(self, mechanism: bytes, credentials: list[bytes]) -> str | None:
        if self.keyring is None:
            # --insecure: anyone may connect; the routing identity is all there is.
            return "" if mechanism == b"NULL" else None
        if mechanism != b"CURVE" or len(credentials) != 1:
            return None
        return self._principals.get(credentials[0])

    def _deny(self, reason: str, address: bytes, principal: str = "") -> None:
        self._log_denied.hit(
            node=self.node_id,
            reason=reason,
            peer=address[:64].decode("ascii", "replace"),
            principal=principal,
            connections=len(self._open),
            in_use=self.in_use,
        )

    def close(self) -> None:
        self._log_denied.flush()
        self.zap.close(0)
        self.monitor.close(0)
