"""ZeroMQ transport of the runtime: moves opaque byte frames between nodes and clients.

The transport knows nothing about Paxos or the codec: it sends and receives ``bytes`` frames and
says who sent them. The node decodes (``paxos.codec.decode``) and handles ``CodecError`` itself.

Topology (one ``NodeTransport`` per node, one ``ClientTransport`` per client)::

    node A                             node B
    DEALER (identity b"n:A/<i>") --->  ROUTER bound to B's address <--- client DEALER b"c:<uuid>"
    ROUTER bound to A's address <----  DEALER (identity b"n:B/<i>")     (replies come back
                                                                        through B's ROUTER)

* Every node binds one ROUTER that receives from peers *and* clients; the ROUTER prefixes each
  message with the sender's routing identity, so ``poll()`` yields ``(identity, frame)`` pairs.
  A node's identity is ``n:<id>`` (``poll()`` strips the ``/<incarnation>`` its DEALERs add,
  see ``_wire_identity``); anything else is a client.
* Every node has one DEALER per peer, connected to that peer's ROUTER. Node-to-node traffic only
  ever flows DEALER -> ROUTER, so each direction of a node pair is its own TCP connection with its
  own bounded queue (a slow peer fills only its own queue). Nodes never ``reply()`` to nodes.
* Clients have one DEALER per node (so they can address a specific node), all with one identity;
  nodes answer with ``reply(identity, frame)`` through their ROUTER.

Wire format. Every node-to-node message is an envelope, even for a single frame::

    0x00 | cluster id (16 bytes) | u32 little-endian length | frame | length | frame ...

in one ZeroMQ message part; a frame of 64 KiB or more travels alone as ``[0x00 | cluster id |
length] [frame]`` (two parts of one message, so the frame is not copied). ``poll()`` drops,
counts and logs a message from a node identity that is not such an envelope or carries another
cluster id. Client requests and replies are one raw frame each (no envelope); a client frame
starting with 0x00 is dropped as malformed (no codec frame starts with it).

Threading: a transport is driven by ONE thread (the node's loop thread): ``send*``, ``reply``,
``poll`` and ``close`` must all be called from it. Only ``wake()`` may be called from any thread;
it makes a blocked (or the next) ``poll()`` return promptly so the loop thread can pick up work
handed to it. The contract: enqueue the work first, then call ``wake()``; the loop checks its
queue after every ``poll()``.

Loss model: sends never block. A node's frame to a peer is dropped (and counted in
``stats.dropped``) when the peer is not connected (``IMMEDIATE``) or its queue is at the
high-water mark; Paxos retransmits, and the node can read the ``send``/``send_many`` return
values to apply backpressure to proposers. A client's frames to a node that is not connected
(yet) are queued instead, up to the high-water mark: its first request must not be lost to the
TCP handshake, and a stale request delivered later is harmless.

Authentication (``broadcast.auth``). By default every socket speaks CURVE: a node's ROUTER
is a CURVE server with the node's long-term key, and lets in only the cluster's members and
authorised clients (its ZAP handler, served by ``poll()``). ``poll()`` reports each frame's
*principal*: ``"n:<id>"`` or ``"c:<client name>"``, from the key that authenticated the
connection; a node's frames are reported as coming from ``n:<id>`` of its *key*, whatever
routing identity it picked. An envelope is accepted only from a member, a raw client frame
only from a client. ``--insecure`` (no keyring) uses ZeroMQ's NULL mechanism: no encryption,
no authentication, an empty principal, and the routing identity decides as before.

Liveness: no ZMTP heartbeats and no ROUTER_HANDOVER anywhere (libzmq 4.3 can abort the process
with either; see ``_configure`` and ``NodeTransport.__init__``). A dead connection is noticed by
TCP keepalive (``TransportConfig.tcp_keepalive_*``); liveness of nodes and clients is the
application's business (Paxos heartbeats, client retries).
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import zmq

from broadcast.auth import CLIENT_PRINCIPAL, NODE_PRINCIPAL, Gatekeeper, Keyring
from broadcast.keys import Keypair, raw_key
from broadcast.logs import RateLimited, get_logger

__all__ = [
    "ClientTransport",
    "NodeTransport",
    "TransportConfig",
    "TransportError",
    "TransportStats",
    "client_identity",
    "endpoint",
    "node_id_of",
    "node_identity",
]

log = get_logger(__name__)

_Socket = zmq.Socket[bytes]

_ZERO_COPY_BYTES = 64 * 1024

#: First byte of every node-to-node message (an envelope). No codec frame starts with it
#: (every frame is a msgpack array, 0x9X or 0xdc/0xdd), so no client frame may either.
ENVELOPE = b"\x00"
#: Length of a cluster id; every envelope carries its sender's.
CLUSTER_ID_BYTES = 16
#: Client connections a node admits at once by default (TransportConfig.max_connections).
DEFAULT_MAX_CONNECTIONS = 4096
#: Frames under 64 KiB are packed into envelopes of at most this many bytes ...
ENVELOPE_BYTES = 1 << 20
#: ... and at most this many frames: a receiver refuses an envelope with more (or a
#: larger one), so one message can never cost it more than a bounded amount of work.
ENVELOPE_MAX_FRAMES = 4096
_LEN = struct.Struct("<I")
#: ENVELOPE and the cluster id.
_HEADER_BYTES = len(ENVELOPE) + CLUSTER_ID_BYTES
#: The first part of a two-part envelope: the header and the length of the one frame.
_MAX_HEADER_BYTES = _HEADER_BYTES + _LEN.size

NODE_PREFIX = b"n:"
CLIENT_PREFIX = b"c:"
_INCARNATION = b"/"
#: How many incarnation identities ``poll()`` remembers the plain identity of.
_CANONICAL_CACHE = 1024


class TransportError(Exception):
    """A transport could not be set up or used (e.g. address in use, transport closed)."""

    def __init__(self, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Socket options. Defaults suit a LAN/loopback cluster; tests shrink the timers.

    **Memory bound.** ZeroMQ bounds its queues in messages (high-water marks), not in bytes,
    so the bound in bytes is *high-water mark x largest message*, per connection and
    direction: each connection has its own pipe on each side. ZeroMQ refuses (by dropping the
    connection) an incoming message with a part larger than ``max_msg_bytes``, so the largest
    message is ``max_msg_bytes + 21`` bytes (a node's frame of 64 KiB or more travels alone,
    after a 21-byte envelope header part, see ``pack_envelopes``). Per connection:

    * node -> peer (a DEALER's send queue, and the peer ROUTER's receive pipe for it):
      ``sndhwm`` (resp. ``rcvhwm``) messages; a message is an envelope of at most
      ``ENVELOPE_BYTES`` (1 MiB) while frames are under 64 KiB, or one larger frame;
    * client -> node (the node ROUTER's receive pipe for that client): ``rcvhwm`` frames;
    * node -> client (``reply``, the ROUTER's send pipe to that client): ``reply_hwm``
      frames (replies are bounded too: a node's largest is about 1 MiB of deliveries).

    With the defaults: 128 x 1 MiB = 128 MiB per connection and direction for envelopes of
    small frames, and at worst 128 x (64 MiB + 21 B), about 8 GiB, if every message holds a
    maximal frame (``max_queued_bytes``). Lower ``max_msg_bytes`` (and the codec's frame
    limit with it) to tighten the worst case. On top of this come the kernel's TCP buffers
    (bounded by the kernel) and ZeroMQ's 8 KiB batching buffers, and what the node's loop
    took out of these queues and works on: one ``poll()`` batch, at most
    ``max_batch_bytes`` plus one message. Client connections are bounded by
    ``max_connections``.
    """

    sndhwm: int = 128
    """Max messages queued per outgoing connection before sends are dropped (bounded memory)."""
    reply_hwm: int = 8
    """Max replies queued per client connection. Large replies (deliveries, snapshot parts)
    are also bounded in bytes by the node's reply budget; this bounds the small ones."""
    reply_sndbuf: int = 256 * 1024
    """The kernel's send buffer for replies, per client connection (SO_SNDBUF): what a
    client that stops reading can hold in the node's kernel."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections a node's ROUTER lets clients in up to: while this many are in use (past
    their handshake, members' own included: they always get in), a client's handshake
    waits for a place, up to ``handshake_ms``, then it reconnects (``broadcast.auth``)."""
    handshake_ms: int = 2_000
    """A connection that has not finished its handshake after this long is closed."""
    rcvhwm: int = 128
    """Max messages queued per incoming connection; beyond it zmq stops reading TCP."""
    max_msg_bytes: int = 64 * 1024 * 1024
    """Larger incoming message parts make zmq drop the connection (the sender reconnects)."""
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2_000
    tcp_keepalive_idle_s: int = 2
    """TCP keepalive (not ZMTP heartbeats, see ``_configure``): a connection silent for this
    long is probed ..."""
    tcp_keepalive_intvl_s: int = 1
    """... every this many seconds ..."""
    tcp_keepalive_cnt: int = 3
    """... and closed after this many unanswered probes: a peer whose host is gone or cut off
    is noticed after about idle + intvl x cnt = 5 s of silence (the kernel does it)."""
    max_batch: int = 4_096
    """Max messages read by one ``poll()`` call, so one busy sender cannot starve the loop."""
    max_batch_bytes: int = 16 * 1024 * 1024
    """A node's ``poll()`` stops reading once it has read this many bytes (the message
    that crosses it included): the caller holds every frame of a batch until it is done
    with them, so without it one batch could hold ``max_batch`` of the largest messages."""

    def __post_init__(self) -> None:
        # A high-water mark of 0 means "no limit" to ZeroMQ: never allow it.
        if min(self.sndhwm, self.rcvhwm, self.reply_hwm) < 1:
            raise ValueError("sndhwm and rcvhwm must be >= 1 (0 would mean unbounded)")
        if self.max_msg_bytes < ENVELOPE_BYTES:
            raise ValueError(f"max_msg_bytes must be >= ENVELOPE_BYTES ({ENVELOPE_BYTES})")
        if min(self.tcp_keepalive_idle_s, self.tcp_keepalive_intvl_s, self.tcp_keepalive_cnt) < 1:
            raise ValueError("TCP keepalive idle, interval and count must be >= 1")
        if self.max_batch < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_batch and max_batch_bytes must be >= 1")
        if self.max_connections < 1 or self.reply_sndbuf < 4096 or self.handshake_ms < 1:
            raise ValueError("need max_connections >= 1, reply_sndbuf >= 4096, handshake_ms >= 1")

    @property
    def max_queued_bytes(self) -> int:
        """The worst-case bytes ZeroMQ queues per connection and direction (see above)."""
        return max(self.sndhwm, self.rcvhwm) * (self.max_msg_bytes + _MAX_HEADER_BYTES)


@dataclass(slots=True)
class TransportStats:
    """Counters, read by the node for backpressure and by tests/metrics."""

    sent: int = 0
    """Frames accepted by zmq for sending (queued; not a delivery guarantee)."""
    received: int = 0
    """Well-formed frames returned by ``poll()``."""
    dropped: dict[int, int] = field(default_factory=dict)
    """Frames refused per peer (node id): peer not connected or its queue at the high-water mark."""
    reply_dropped: int = 0
    """Replies to a client that is unknown/gone or whose queue is full."""
    malformed: int = 0
    """Incoming messages dropped as malformed: the wrong number of parts; from a node identity,
    anything but a well-formed envelope (or an identity that is not ``n:<id>``); from a client,
    a frame starting with the envelope byte."""
    foreign_cluster: int = 0
    """Envelopes from a node of another cluster (another cluster id), dropped."""
    unauthorised: int = 0
    """Messages of the wrong kind for their authenticated sender, dropped: an envelope from
    a client key, or a raw client frame from a member's key."""

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


def node_identity(node_id: int) -> bytes:
    """A node's identity as ``poll()`` reports it, e.g. ``b"n:3"`` (on the wire, its DEALERs
    add an incarnation: see ``_wire_identity``)."""
    return b"%s%d" % (NODE_PREFIX, node_id)


def client_identity() -> bytes:
    """A fresh, unique client routing identity, e.g. ``b"c:9f1c..."``."""
    return CLIENT_PREFIX + uuid.uuid4().hex.encode()


def _wire_identity(node_id: int) -> bytes:
    """The routing identity a node's DEALERs really use: ``n:<id>/<incarnation>``.

    The incarnation (random per ``NodeTransport``) keeps a restarted node's connections
    from colliding with a connection of its previous incarnation that a peer's ROUTER still
    holds: because the old FIN was lost (host gone, partition), or simply not processed yet
    (a ROUTER frees an identity only once it has read the old connection's last frames, so a
    quick restart races with it). Without ROUTER_HANDOVER a colliding connection would never
    be read (see ``NodeTransport.__init__``). Receivers report the plain ``n:<id>``.
    """
    return node_identity(node_id) + _INCARNATION + uuid.uuid4().hex[:16].encode()


def _canonical_node_identity(identity: bytes) -> bytes | None:
    """``n:<id>`` for ``n:<id>`` or ``n:<id>/<incarnation>``; None for anything else."""
    head, sep, tail = identity.partition(_INCARNATION)
    if node_id_of(head) is None or (sep and not 0 < len(tail) <= 32):
        return None
    return head


def node_id_of(identity: bytes) -> int | None:
    """The node id encoded in a routing identity, or None if it is not a node identity."""
    if not identity.startswith(NODE_PREFIX):
        return None
    digits = identity[len(NODE_PREFIX) :]
    if not digits.isdigit() or len(digits) > 18:
        return None
    return int(digits)


def endpoint(address: str) -> str:
    """Normalise ``"host:port"`` (or a bare ``"port"``, meaning 127.0.0.1) to a zmq endpoint.

    Full endpoints (``tcp://...``, ``ipc://...``, ``inproc://...``) are returned unchanged.
    """
    if "://" in address:
        return address
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", address
    if not host or not port.isdigit():
        raise TransportError(f"invalid address {address!r}: expected host:port", address=address)
    return f"tcp://{host}:{port}"


def _printable(identity: bytes) -> str:
    """A routing identity for a log line (they may be binary, and a client chooses its own)."""
    return identity[:64].decode("ascii", "backslashreplace")


def _log_sampled(event: str, count: int, warn: bool = False, **fields: object) -> None:
    # Drops can happen thousands of times a second under overload: log the 1st, 2nd, 4th, 8th, ...
    # occurrence only, so logging never becomes the bottleneck. The counters are exact.
    if count & (count - 1) == 0:
        (log.warning if warn else log.info)(event, count=count, **fields)


def _configure(sock: _Socket, config: TransportConfig) -> None:
    # LINGER 0: close() never waits for unsent frames; anything lost is retransmitted by Paxos.
    sock.setsockopt(zmq.LINGER, 0)
    # Bounded queues (in messages, see TransportConfig) on both sides: memory stays bounded
    # whatever the peers do. 0 would mean unbounded; TransportConfig refuses it.
    sock.setsockopt(zmq.SNDHWM, config.sndhwm)
    sock.setsockopt(zmq.RCVHWM, config.rcvhwm)
    # Oversized messages are rejected by zmq before they reach Python.
    sock.setsockopt(zmq.MAXMSGSIZE, config.max_msg_bytes)
    # No ZMTP heartbeats (HEARTBEAT_IVL/TIMEOUT/TTL), on purpose: libzmq 4.3 aborts the whole
    # process (``Assertion failed: !_io_error``, stream_engine_base.cpp) when a connection
    # whose receive pipe is full fails: the engine, waiting for the pipe to drain, marks the
    # I/O error and stops polling, and the next heartbeat timer calls out_event(), which
    # asserts there was none. A client that floods a node and exits is enough (the node's
    # own heartbeat ping draws the RST); see tests/zmq_abort_repro.py. Dead connections are
    # noticed by TCP keepalive instead, which the kernel runs without waking libzmq: a
    # connection silent for idle seconds gets probes, and is reset after cnt unanswered
    # ones. That covers the direction that matters most, a ROUTER's incoming connection
    # from a peer whose host vanished (a ROUTER never sends to nodes, so the connection is
    # idle from our side). A DEALER with data in flight to a vanished host is covered by
    # TCP retransmission instead (it gives up after tcp_retries2, ~15 min; meanwhile sends
    # fill the queue and are dropped, and a host that comes back answers with an RST, so
    # the DEALER reconnects at once).
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, config.tcp_keepalive_idle_s)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, config.tcp_keepalive_intvl_s)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, config.tcp_keepalive_cnt)


def _connect_dealer(
    ctx: zmq.Context[_Socket],
    identity: bytes,
    address: str,
    config: TransportConfig,
    *,
    immediate: bool = True,
    keypair: Keypair | None = None,
    server_key: bytes | None = None,
) -> _Socket:
    ep = endpoint(address)
    sock = ctx.socket(zmq.DEALER)
    _configure(sock, config)
    sock.setsockopt(zmq.IDENTITY, identity)
    if keypair is not None:
        # CURVE client: our long-term key proves who we are; the server's key, known in
        # advance from the cluster file, proves we talk to the right node.
        if server_key is None:
            sock.close(0)
            raise TransportError(f"no public key for {ep}", address=ep)
        sock.curve_publickey = keypair.public
        sock.curve_secretkey = keypair.secret
        sock.curve_serverkey = server_key
    # IMMEDIATE (nodes): never queue frames for a peer that is not connected; the send fails
    # at once (counted as a drop) instead of piling up stale Paxos messages to replay on
    # reconnect. Clients queue instead: their first request must not be lost to the race
    # with the TCP handshake, and a stale request is harmless (sessions drop repeats).
    sock.setsockopt(zmq.IMMEDIATE, 1 if immediate else 0)
    sock.setsockopt(zmq.RECONNECT_IVL, config.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, config.reconnect_ivl_max_ms)
    try:
        sock.connect(ep)
    except zmq.ZMQError as exc:
        sock.close(0)
        raise TransportError(f"cannot connect to {ep}: {exc}", address=ep) from exc
    return sock


def pack_envelopes(cluster_id: bytes, frames: Sequence[bytes]) -> list[tuple[list[bytes], int]]:
    """Pack frames, in order, into as few ZeroMQ messages as possible.

    One send (and one wake-up of ZeroMQ's I/O thread) per message instead of per frame.
    Returns ``(the parts of one message, how many frames it holds)`` per message. Frames
    under 64 KiB share one-part envelopes of at most ``ENVELOPE_BYTES``; a larger frame
    travels alone as the second part of a two-part envelope, so that it is sent without
    being copied (ZeroMQ delivers all parts of a message or none). Raises ValueError for an
    empty frame (an envelope cannot carry one) or a cluster id of the wrong length.
    """
    if len(cluster_id) != CLUSTER_ID_BYTES:
        raise ValueError(f"a cluster id has {CLUSTER_ID_BYTES} bytes, not {len(cluster_id)}")
    head = ENVELOPE + cluster_id
    pack = _LEN.pack
    out: list[tuple[list[bytes], int]] = []
    parts: list[bytes] = [head]  # head, then length and frame for each frame
    size = _HEADER_BYTES
    for frame in frames:
        length = len(frame)
        if not length:
            raise ValueError("cannot send an empty frame")
        alone = length >= _ZERO_COPY_BYTES
        full = size + 4 + length > ENVELOPE_BYTES or len(parts) > 2 * ENVELOPE_MAX_FRAMES
        if (alone or full) and len(parts) > 1:
            out.append(([b"".join(parts)], (len(parts) - 1) // 2))
            parts, size = [head], _HEADER_BYTES
        if alone:
            out.append(([head + pack(length), frame], 1))
            continue
        parts.append(pack(length))
        parts.append(frame)
        size += 4 + length
    if len(parts) > 1:
        out.append(([b"".join(parts)], (len(parts) - 1) // 2))
    return out


def unpack_envelope(parts: Sequence[bytes]) -> tuple[bytes, list[bytes]] | None:
    """The sender's cluster id and the frames of an envelope (the parts of a message after
    the routing identity), or None if it is not a well-formed envelope (the caller drops it).
    """
    if len(parts) == 2:  # [header | length, frame]
        head, frame = parts
        if (
            len(head) != _MAX_HEADER_BYTES
            or not head.startswith(ENVELOPE)
            or not frame
            or _LEN.unpack_from(head, _HEADER_BYTES)[0] != len(frame)
        ):
            return None
        return head[1:_HEADER_BYTES], [frame]
    if len(parts) != 1:
        return None
    data = parts[0]
    end = len(data)
    if not _HEADER_BYTES < end <= _HEADER_BYTES + ENVELOPE_BYTES or not data.startswith(ENVELOPE):
        return None  # not an envelope, one without frames, or one larger than any sender makes
    frames: list[bytes] = []
    view = memoryview(data)
    pos = _HEADER_BYTES
    unpack = _LEN.unpack_from
    while pos < end:
        if pos + 4 > end:
            return None
        (length,) = unpack(data, pos)
        pos += 4
        if length == 0 or pos + length > end:
            return None
        frames.append(bytes(view[pos : pos + length]))
        pos += length
        if len(frames) > ENVELOPE_MAX_FRAMES:
            return None  # no sender packs more: refused before it costs more work
    return data[1:_HEADER_BYTES], frames


def _send_messages(sock: _Socket, messages: Sequence[Sequence[bytes]]) -> int:
    """Queue messages (each a sequence of parts) without blocking; returns how many were
    queued (a prefix of ``messages``)."""
    sent = 0
    try:
        for parts in messages:
            # Zero-copy only pays off for large parts (measured: 8 MiB 12 ms -> 0.03 ms per
            # send; small frames are ~8% faster copied).
            last = len(parts) - 1
            for i, part in enumerate(parts):
                flags = zmq.NOBLOCK if i == last else zmq.NOBLOCK | zmq.SNDMORE
                sock.send(part, flags, copy=len(part) < _ZERO_COPY_BYTES)
            sent += 1
    except zmq.Again:
        # Queue full or peer not connected. The rest would fail too; stop making syscalls.
        # (ZeroMQ checks the high-water mark at a message's first part, and drops a message
        # whose later part fails, so a message is queued whole or not at all.)
        pass
    return sent


class _Waker:
    """Thread-safe wake-up for a poller loop: an inproc PAIR pair, at most one byte in flight."""

    def __init__(self, ctx: zmq.Context[_Socket]) -> None:
        address = f"inproc://wake-{uuid.uuid4().hex}"
        self.socket = ctx.socket(zmq.PAIR)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(address)
        self._sender = ctx.socket(zmq.PAIR)
        self._sender.setsockopt(zmq.LINGER, 0)
        self._sender.connect(address)
        # zmq sockets are not thread-safe: the lock serialises every use of _sender, and makes
        # "pending" agree with what is in the pipe (set with the send, cleared with the drain).
        self._lock = threading.Lock()
        self._pending = False
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed or self._pending:
                return  # coalesce: one pending byte already wakes the loop
            self._pending = True
            try:
                self._sender.send(b"", zmq.NOBLOCK)
            except zmq.Again:  # cannot happen with <= 1 byte queued; never block anyway
                self._pending = False

    def drain(self) -> None:
        with self._lock:
            while True:
                try:
                    self.socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
            self._pending = False

    def close(self) -> None:
        with self._lock:  # a concurrent wake() sees _closed and never touches a closed socket
            self._closed = True
            self._sender.close(0)
        self.socket.close(0)


class _Endpoint:
    """What nodes and clients share: own zmq context, poller, waker, stats, close()."""

    def __init__(self, config: TransportConfig) -> None:
        self.config = config
        self.stats = TransportStats()
        self._closed = False
        # An own context per transport: close() terminates it, so when close() returns the
        # listening port is really released and a restarted node can bind it again at once.
        self._ctx: zmq.Context[_Socket] = zmq.Context(io_threads=1)
        self._poller = zmq.Poller()
        self._waker = _Waker(self._ctx)
        self._poller.register(self._waker.socket, zmq.POLLIN)
        # Input from the network can repeat without bound: at most one line per interval.
        self._log_malformed = RateLimited(log, "transport.malformed_dropped")
        # Outgoing CURVE connections refused for their key: monitor -> (DEALER, endpoint),
        # and the DEALERs to connect again (when).
        self._refusals: dict[_Socket, tuple[_Socket, str]] = {}
        self._reconnect: dict[_Socket, tuple[float, str]] = {}
        self._log_refused = RateLimited(log, "transport.refused", interval_s=5.0)

    def _watch_refusals(self, sock: _Socket, address: str) -> None:
        """Reconnect ``sock`` when its peer refuses our key. ZeroMQ never retries a
        connection refused at its handshake (a ZAP 400): a node or client whose new key
        reached the cluster file after its first try would stay locked out until it
        restarted. It is tried again every ``reconnect_ivl_max_ms``."""
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        self._refusals[monitor] = (sock, endpoint(address))
        self._poller.register(monitor, zmq.POLLIN)

    def _on_refused(self, monitor: _Socket) -> None:
        sock, ep = self._refusals[monitor]
        while True:
            try:
                monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
        delay = self.config.reconnect_ivl_max_ms / 1000
        self._reconnect[sock] = (time.monotonic() + delay, ep)
        self._log_refused.hit(endpoint=ep, reason="our key was refused", retry_s=delay)

    def _reconnect_refused(self) -> float | None:
        """Connect again the DEALERs whose time has come; when the next one is due."""
        if not self._reconnect:
            return None
        now = time.monotonic()
        for sock, (due, ep) in list(self._reconnect.items()):
            if now >= due:
                del self._reconnect[sock]
                with contextlib.suppress(zmq.ZMQError):
                    sock.disconnect(ep)
                sock.connect(ep)
        return min((due for due, _ in self._reconnect.values()), default=None)

    def wake(self) -> None:
        """Make a blocked (or the next) ``poll()`` return promptly. Safe from any thread."""
        self._waker.wake()

    def close(self) -> None:
        """Close all sockets immediately (unsent frames are discarded). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._waker.close()
        for monitor in self._refusals:
            monitor.close(0)
        gate = getattr(self, "gate", None)
        if gate is not None:
            gate.close()
        self._ctx.destroy(linger=0)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("transport is closed")

    def _count_drop(self, peer_id: int, count: int) -> None:
        total = self.stats.dropped.get(peer_id, 0) + count
        self.stats.dropped[peer_id] = total
        _log_sampled("transport.send_dropped", total, peer=peer_id)

    def _count_malformed(self, sender: bytes | int, reason: str, parts: int) -> None:
        self.stats.malformed += 1
        self._log_malformed.hit(
            sender=_printable(sender) if isinstance(sender, bytes) else sender,
            reason=reason,
            parts=parts,
            malformed_total=self.stats.malformed,
        )

    def _wait(self, timeout_ms: int | None) -> list[tuple[_Socket, int]]:
        self._check_open()
        if timeout_ms is not None and timeout_ms < 0:
            timeout_ms = None  # negative = wait forever, like zmq
        due = self._reconnect_refused()
        if due is not None:
            until = max(0, int((due - time.monotonic()) * 1000) + 1)
            timeout_ms = until if timeout_ms is None else min(timeout_ms, until)
        ready: list[tuple[_Socket, int]] = self._poller.poll(timeout_ms)
        if self._refusals:
            refused = [sock for sock, _ in ready if sock in self._refusals]
            for monitor in refused:
                self._on_refused(monitor)
            if refused:
                ready = [(sock, ev) for sock, ev in ready if sock not in self._refusals]
        return ready

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NodeTransport(_Endpoint):
    """A node's transport: a ROUTER bound to ``bind_addr`` plus one DEALER per peer.

    ``bind_addr`` is ``"host:port"``, a bare ``"port"`` (127.0.0.1) or a zmq endpoint; port 0
    binds an ephemeral port, see ``address``. Raises ``TransportError`` naming the address if it
    cannot be bound (e.g. port in use).

    ``cluster_id`` (``CLUSTER_ID_BYTES`` bytes) names the cluster: every frame to a peer
    travels in an envelope that carries it, and ``poll()`` drops (and counts in
    ``stats.foreign_cluster``) envelopes that carry another, so that a node configured with
    another cluster's address is refused instead of mixing two clusters' Paxos messages.
    """

    def __init__(
        self,
        node_id: int,
        bind_addr: str,
        peers: Mapping[int, str] | None = None,
        config: TransportConfig | None = None,
        *,
        cluster_id: bytes,
        keyring: Keyring | None = None,
    ) -> None:
        if type(cluster_id) is not bytes or len(cluster_id) != CLUSTER_ID_BYTES:
            raise ValueError(f"cluster_id must be {CLUSTER_ID_BYTES} bytes")
        super().__init__(config or TransportConfig())
        self.keyring = keyring
        """None: ``--insecure`` (plaintext, anyone may connect)."""
        self.cluster_id = cluster_id
        """Carried by every envelope we send; envelopes carrying another are dropped."""
        self._log_foreign = RateLimited(log, "transport.foreign_cluster_dropped")
        self.node_id = node_id
        self.identity = node_identity(node_id)
        """What receivers report as the sender of our frames (``n:<id>``)."""
        self._wire_identity = _wire_identity(node_id)
        self._canonical: dict[bytes, bytes | None] = {}
        self._peers: dict[int, _Socket] = {}
        try:
            self._router = self._ctx.socket(zmq.ROUTER)
            _configure(self._router, self.config)
            # The ROUTER sends only replies to clients: their own, smaller bound.
            self._router.setsockopt(zmq.SNDHWM, self.config.reply_hwm)
            # MANDATORY: a reply to an unknown/gone client raises instead of vanishing silently,
            # so it is counted (stats.reply_dropped).
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # A client that stops reading holds at most this much of our kernel's memory.
            self._router.setsockopt(zmq.SNDBUF, self.config.reply_sndbuf)
            # A connection that never finishes its handshake is closed, so that silent
            # connections cannot hold the client connection slots for long.
            self._router.setsockopt(zmq.HANDSHAKE_IVL, self.config.handshake_ms)
            # The ZAP handler: CURVE keys (or NULL with --insecure) and the connection limit.
            self.gate = Gatekeeper(
                self._ctx,
                self._router,
                keyring,
                self.config.max_connections,
                node_id,
                self.config.handshake_ms,
            )
            self._poller.register(self.gate.zap, zmq.POLLIN)
            self._poller.register(self.gate.monitor, zmq.POLLIN)
            # No ROUTER_HANDOVER (the option that lets a new connection take over a routing
            # identity in use): with it, the connection taken over keeps an engine without a
            # pipe, and when that connection then sends and fails, libzmq 4.3 aborts as
            # described in _configure (reproduced with ZMTP heartbeats on). Without it, a
            # connection whose identity is in use is accepted but never read: libzmq consumes
            # its identity message, finds the identity taken and parks the connection among
            # its "anonymous pipes", where it stays even after the first connection is gone
            # (it is looked at again only on a read activation, which never comes for a pipe
            # left non-empty). Its frames are lost until that connection ends.
            # A restarted node never collides with its old incarnation's connection (node
            # DEALERs add an incarnation to their identity, see _wire_identity); a client
            # reconnecting while our end of its previous connection is still open does,
            # until TCP keepalive or the client ends one of the two.
            ep = endpoint(bind_addr)
            try:
                self._router.bind(ep)
            except zmq.ZMQError as exc:
                reason = "address already in use" if exc.errno == zmq.EADDRINUSE else str(exc)
                raise TransportError(f"cannot bind {ep}: {reason}", address=ep) from exc
            self.address: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            """The endpoint actually bound (with the real port if port 0 was asked for)."""
            self._poller.register(self._router, zmq.POLLIN)
            for peer_id, address in (peers or {}).items():
                self.add_peer(peer_id, address)
        except BaseException:
            self.close()  # never leak a context (and its IO thread) on a failed construction
            raise

    def add_peer(self, peer_id: int, address: str) -> None:
        """Connect a DEALER to the peer at ``address``. Connecting is asynchronous and retried."""
        self._check_open()
        if peer_id == self.node_id:
            # A replica handles its own messages internally; it never sends to itself.
            raise ValueError(f"node {peer_id} cannot be its own peer")
        if peer_id in self._peers:
            raise ValueError(f"peer {peer_id} already added")
        keyring = self.keyring
        self._peers[peer_id] = _connect_dealer(
            self._ctx,
            self._wire_identity,
            address,
            self.config,
            keypair=keyring.keypair if keyring is not None else None,
            server_key=keyring.peers.get(peer_id) if keyring is not None else None,
        )
        if keyring is not None:
            self._watch_refusals(self._peers[peer_id], address)

    @property
    def peer_ids(self) -> list[int]:
        return sorted(self._peers)

    def has_peer(self, peer_id: int) -> bool:
        return peer_id in self._peers

    def add_member(self, peer_id: int, address: str, key: str) -> None:
        """A member added through the log: let it in by its key (CURVE) and connect to
        it. Its key is checked like a cluster file's (40 characters of Z85)."""
        if self.keyring is not None:
            try:
                raw_key(key)
            except (ValueError, UnicodeError):
                raise TransportError(f"node {peer_id}: {key!r} is not a Z85 public key") from None
            if not self.gate.admit_member(peer_id, key.encode()):
                raise TransportError(f"node {peer_id}: its key already lets in another")
        self.add_peer(peer_id, address)

    def remove_member(self, peer_id: int) -> None:
        """A member removed through the log: no longer let in, no longer sent to."""
        self.gate.revoke_member(peer_id)
        sock = self._peers.pop(peer_id, None)
        if sock is not None:
            sock.close(0)

    def send(self, peer_id: int, frame: bytes) -> bool:
        """Queue one frame to a peer without blocking. False if dropped (counted)."""
        return self.send_many(peer_id, (frame,)) == 1

    def send_many(self, peer_id: int, frames: Sequence[bytes]) -> int:
        """Queue frames to a peer without blocking; returns how many were queued.

        Frames that could not be queued (peer not connected / queue full) are dropped and counted
        in ``stats.dropped[peer_id]``; a return value < ``len(frames)`` means: back off.
        """
        self._check_open()
        sock = self._peers.get(peer_id)
        if sock is None:
            raise TransportError(f"unknown peer {peer_id}")
        envelopes = pack_envelopes(self.cluster_id, frames)
        queued = _send_messages(sock, [parts for parts, _ in envelopes])
        sent = sum(count for _, count in envelopes[:queued])
        self.stats.sent += sent
        if sent < len(frames):
            self._count_drop(peer_id, len(frames) - sent)
        return sent

    def reply(self, identity: bytes, frame: bytes) -> bool:
        """Send a frame back to a client (by routing identity from ``poll()``) without blocking.

        False if the client is unknown/disconnected or its queue is full (counted). A reply is
        one raw frame (no envelope): at most ``config.reply_hwm`` replies wait per client, each
        at most the client's ``max_msg_bytes`` (a larger one makes the client's ZeroMQ drop
        the connection), so ``reply_hwm x`` the largest reply bounds the bytes queued per
        client (the node's replies are about 1 MiB at most).
        """
        self._check_open()
        try:
            self._router.send_multipart(
                (identity, frame), zmq.NOBLOCK, copy=len(frame) < _ZERO_COPY_BYTES
            )
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
        else:
            self.stats.sent += 1
            return True
        self.stats.reply_dropped += 1
        _log_sampled("transport.reply_dropped", self.stats.reply_dropped)
        return False

    def connections_in_use(self) -> int:
        """Connections to this node in use (its peers' and clients'), as its gate counts
        them for the connection limit."""
        return self.gate.in_use

    def poll(self, timeout_ms: int | None) -> list[tuple[bytes, bytes, str]]:
        """Wait up to ``timeout_ms`` (None/negative: forever) for frames or a ``wake()``.

        Returns the frames available right now (from up to ``config.max_batch`` messages
        and about ``config.max_batch_bytes`` bytes: the rest waits for the next call) as
        ``(sender_identity, frame, principal)``; an empty list on timeout or wake-up. A
        node's identity is ``n:<id>``: with CURVE, the id of the key that authenticated the
        connection. ``principal`` is ``"n:<id>"`` or ``"c:<client name>"`` with CURVE, ``""``
        with ``--insecure``. Messages that are malformed, of the wrong kind for their sender
        or from another cluster are dropped, counted and logged (rate-limited), never raised.
        Handshakes waiting for the ZAP handler are answered here too.
        """
        out: list[tuple[bytes, bytes, str]] = []
        gate = self.gate
        for sock, _ in self._wait(timeout_ms):
            if sock is self._router:
                if self.keyring is None:
                    self._drain_insecure(out)
                else:
                    self._drain_authenticated(out)
            elif sock is gate.monitor:
                gate.on_monitor()
            elif sock is gate.zap:
                gate.on_monitor()  # count connections accepted before judging a handshake
                gate.on_zap()
            else:
                self._waker.drain()
        return out

    def _drain_insecure(self, out: list[tuple[bytes, bytes, str]]) -> None:
        recv = self._router.recv_multipart
        before = len(out)
        # Bound the number of reads (malformed ones included), so a flood cannot pin the loop,
        # and the bytes read, so that it cannot make one batch hold gigabytes.
        budget = self.config.max_batch_bytes
        for _ in range(self.config.max_batch):
            if budget <= 0:
                break
            try:
                parts = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            budget -= sum(map(len, parts))
            identity = parts[0]
            if not identity.startswith(NODE_PREFIX):
                self._client_frame(out, identity, parts, "")
                continue
            peer = self._node_identity(identity)
            if peer is None:
                self._count_malformed(identity, "node identity is not n:<id>", len(parts))
                continue
            self._envelope(out, identity, peer, parts)
        self.stats.received += len(out) - before

    def _drain_authenticated(self, out: list[tuple[bytes, bytes, str]]) -> None:
        recv = self._router.recv_multipart
        before = len(out)
        budget = self.config.max_batch_bytes  # as in _drain_insecure
        for _ in range(self.config.max_batch):
            if budget <= 0:
                break
            try:
                frames = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            # Who sent it: the principal the ZAP handler gave its connection (its key).
            principal = str(frames[-1].get("User-Id"))
            parts = [frame.bytes for frame in frames]
            budget -= sum(map(len, parts))
            identity = parts[0]
            if principal.startswith(NODE_PRINCIPAL):
                # A member, whatever routing identity it chose: its id is its key's.
                self._envelope(out, identity, principal.encode(), parts)
            elif principal.startswith(CLIENT_PRINCIPAL) and not identity.startswith(NODE_PREFIX):
                self._client_frame(out, identity, parts, principal)
            else:
                self.stats.unauthorised += 1
                self._count_malformed(identity, f"not allowed for {principal!r}", len(parts))
        self.stats.received += len(out) - before

    def _client_frame(
        self, out: list[tuple[bytes, bytes, str]], identity: bytes, parts: list[bytes], who: str
    ) -> None:
        # A client: one raw frame, which cannot start like an envelope.
        if len(parts) == 2 and not parts[1].startswith(ENVELOPE):
            out.append((identity, parts[1], who))
            return
        reason = "starts like an envelope" if len(parts) == 2 else "wrong number of parts"
        self._count_malformed(identity, reason, len(parts))

    def _envelope(
        self, out: list[tuple[bytes, bytes, str]], identity: bytes, peer: bytes, parts: list[bytes]
    ) -> None:
        opened = unpack_envelope(parts[1:])
        if opened is None:
            self._count_malformed(identity, "node message is not an envelope", len(parts))
        elif opened[0] != self.cluster_id:
            self._count_foreign(identity, opened[0])
        else:
            principal = peer.decode() if self.keyring is not None else ""
            out.extend([(peer, frame, principal) for frame in opened[1]])

    def _count_foreign(self, identity: bytes, cluster_id: bytes) -> None:
        self.stats.foreign_cluster += 1
        self._log_foreign.hit(
            node=self.node_id,
            sender=_printable(identity),
            cluster_id=cluster_id.hex(),
            our_cluster_id=self.cluster_id.hex(),
            foreign_total=self.stats.foreign_cluster,
        )

    def _node_identity(self, identity: bytes) -> bytes | None:
        """``n:<id>`` for a node's wire identity, None if it is not a valid one."""
        try:
            return self._canonical[identity]
        except KeyError:
            pass
        if len(self._canonical) >= _CANONICAL_CACHE:
            self._canonical.clear()  # bounded; live peers' identities come back on next use
        canonical = _canonical_node_identity(identity)
        self._canonical[identity] = canonical
        return canonical


class ClientTransport(_Endpoint):
    """A client's transport: one DEALER per node, all with the same identity.

    With ``keypair`` (and every node's public key in ``server_keys``) each connection is
    CURVE: encrypted, and the node admits it only if the cluster authorises the key.

    ``poll()`` returns ``(node_id, frame)`` pairs. Sends to a node that is not connected (yet) are
    dropped and reported like a node's; the client library retries.
    """

    def __init__(
        self,
        nodes: Mapping[int, str],
        identity: bytes | None = None,
        config: TransportConfig | None = None,
        *,
        keypair: Keypair | None = None,
        server_keys: Mapping[int, bytes] | None = None,
    ) -> None:
        super().__init__(config or TransportConfig())
        self.identity = identity if identity is not None else client_identity()
        #: Whether the connections are CURVE (a key was given).
        self.secure = keypair is not None
        self._keypair = keypair
        self._nodes: dict[int, _Socket] = {}
        self._node_of: dict[_Socket, int] = {}
        try:
            for node_id, address in nodes.items():
                self.add_node(node_id, address, (server_keys or {}).get(node_id))
        except BaseException:
            self.close()
            raise

    def add_node(self, node_id: int, address: str, server_key: bytes | None = None) -> None:
        """Connect to one more node (a member the cluster added since we started)."""
        self._check_open()
        if node_id in self._nodes:
            return
        sock = _connect_dealer(
            self._ctx,
            self.identity,
            address,
            self.config,
            immediate=False,
            keypair=self._keypair,
            server_key=server_key,
        )
        self._nodes[node_id] = sock
        self._node_of[sock] = node_id
        self._poller.register(sock, zmq.POLLIN)
        if self._keypair is not None:
            self._watch_refusals(sock, address)

    @property
    def node_ids(self) -> list[int]:
        return sorted(self._nodes)

    def send(self, node_id: int, frame: bytes) -> bool:
        """Queue one frame to a node without blocking. False if dropped (counted).

        The frame travels raw (no envelope), so it must not start with ``ENVELOPE`` (no codec
        frame does): the node would drop it as malformed.
        """
        self._check_open()
        sock = self._nodes.get(node_id)
        if sock is None:
            raise TransportError(f"unknown node {node_id}")
        if _send_messages(sock, ((frame,),)) == 1:
            self.stats.sent += 1
            return True
        self._count_drop(node_id, 1)
        return False

    def poll(self, timeout_ms: int | None) -> list[tuple[int, bytes]]:
        """Like ``NodeTransport.poll``, but yields ``(node_id, frame)``."""
        out: list[tuple[int, bytes]] = []
        for sock, _ in self._wait(timeout_ms):
            node_id = self._node_of.get(sock)
            if node_id is None:
                self._waker.drain()
                continue
            for _ in range(self.config.max_batch):
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(parts) != 1:  # the ROUTER strips our identity: exactly one frame remains
                    self._count_malformed(node_id, "wrong number of parts", len(parts))
                    continue
                out.append((node_id, parts[0]))
        self.stats.received += len(out)
        return out
