"""Tests of the ZeroMQ transport (broadcast/transport.py) on 127.0.0.1.

Connections are asynchronous and sends to unconnected peers are dropped (IMMEDIATE), so every test
waits on a condition with a deadline, retrying sends where a drop is legitimate; nothing sleeps
for a fixed time (the waits pause 2 ms between looks, so as not to spin a core).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import structlog
import zmq
from zmq.utils.monitor import recv_monitor_message

from broadcast.transport import (
    ENVELOPE,
    ENVELOPE_BYTES,
    ClientTransport,
    NodeTransport,
    TransportConfig,
    TransportError,
    endpoint,
    node_id_of,
    node_identity,
    pack_envelopes,
    unpack_envelope,
)

DEADLINE_S = 15.0  # generous: a loaded 2-core CI box; healthy runs take milliseconds
# Short reconnect timers so reconnect tests converge quickly.
FAST = TransportConfig(reconnect_ivl_ms=20, reconnect_ivl_max_ms=100)
PING = b"ping"
CLUSTER = bytes(range(16))
OTHER_CLUSTER = bytes(range(16, 32))
T = TypeVar("T")
#: What NodeTransport.poll() reports per frame: (routing identity, frame, principal).
Polled = tuple[bytes, bytes, str]
#: The principal of every frame here: these transports have no keyring (ZeroMQ's NULL
#: mechanism, as with --insecure), so no frame has an authenticated sender.
INSECURE = ""


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)  # a condition that does not block must not spin a core


def gather(new: list[T], into: list[T]) -> list[T]:
    into.extend(new)
    return into


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def connect(a: NodeTransport, b: NodeTransport) -> None:
    """Wait until a's frames reach b (a ping is resent until one arrives), and until every
    ping a's socket took has arrived: none is left in flight to show up in a later poll
    (a send is refused until the connection is up, so a counts the ones that went)."""
    got: list[Polled] = []
    sent = 0

    def arrived() -> bool:
        nonlocal sent
        if not got:
            sent += a.send(b.node_id, PING)
        got.extend(f for f in b.poll(10) if f == (a.identity, PING, INSECURE))
        return 0 < len(got) == sent

    wait_until(arrived, f"node {a.node_id} -> node {b.node_id} connection")


def collect(t: NodeTransport, count: int) -> list[Polled]:
    """Poll t until ``count`` non-ping frames have arrived; returns them in arrival order
    as ``poll()`` reports them: ``(identity, frame, principal)``."""
    got: list[Polled] = []

    def enough() -> bool:
        got.extend(f for f in t.poll(10) if f[1] != PING)
        return len(got) >= count

    wait_until(enough, f"{count} frames at node {t.node_id}")
    return got


@pytest.fixture
def make_node() -> Iterator[Callable[..., NodeTransport]]:
    created: list[NodeTransport] = []

    def make(
        node_id: int,
        addr: str = "127.0.0.1:0",
        config: TransportConfig = FAST,
        cluster_id: bytes = CLUSTER,
    ) -> NodeTransport:
        t = NodeTransport(node_id, addr, config=config, cluster_id=cluster_id)
        created.append(t)
        return t

    yield make
    for t in created:
        t.close()


def mesh(nodes: list[NodeTransport]) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b:
                a.add_peer(b.node_id, b.address)
    for a in nodes:
        for b in nodes:
            if a is not b:
                connect(a, b)


def test_three_nodes_exchange_frames_both_ways(make_node: Callable[..., NodeTransport]) -> None:
    nodes = [make_node(i) for i in (1, 2, 3)]
    mesh(nodes)
    for a in nodes:
        for b in nodes:
            if a is not b:
                frames = [b"%d->%d #%d" % (a.node_id, b.node_id, k) for k in range(50)]
                assert a.send(b.node_id, frames[0])
                assert a.send_many(b.node_id, frames[1:]) == len(frames) - 1
    for b in nodes:
        got = collect(b, 2 * 50)
        for a in nodes:
            if a is not b:
                from_a = [frame for ident, frame, _ in got if ident == a.identity]
                # FIFO per sender: one DEALER -> ROUTER connection per ordered pair.
                assert from_a == [b"%d->%d #%d" % (a.node_id, b.node_id, k) for k in range(50)]
        assert b.stats.malformed == 0
        assert {principal for _, _, principal in got} == {INSECURE}
        assert node_id_of(got[0][0]) in {n.node_id for n in nodes if n is not b}


def test_client_request_and_reply(make_node: Callable[..., NodeTransport]) -> None:
    n1, n2 = make_node(1), make_node(2)
    with ClientTransport({1: n1.address, 2: n2.address}, config=FAST) as client:
        assert client.identity.startswith(b"c:")
        for node in (n1, n2):
            got: list[Polled] = []

            def arrived(node: NodeTransport = node, got: list[Polled] = got) -> bool:
                client.send(node.node_id, b"req")  # retried: dropped until connected
                got.extend(node.poll(10))
                return bool(got)

            wait_until(arrived, f"client -> node {node.node_id}")
            ident, frame, principal = got[0]
            assert (ident, frame, principal) == (client.identity, b"req", INSECURE)
            assert node.reply(ident, b"rep from %d" % node.node_id)
        replies: list[tuple[int, bytes]] = []
        wait_until(lambda: len(gather(client.poll(10), replies)) >= 2, "replies")
        assert sorted(replies) == [(1, b"rep from 1"), (2, b"rep from 2")]
        # A reply to an unknown client is dropped and counted, never raised.
        assert not n1.reply(b"c:nobody", b"x")
        assert n1.stats.reply_dropped == 1
        with pytest.raises(TransportError):
            client.send(3, b"x")


def test_large_frame_passes(make_node: Callable[..., NodeTransport]) -> None:
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    big = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB
    assert a.send(2, big)
    assert collect(b, 1) == [(a.identity, big, INSECURE)]


def test_oversized_frame_is_dropped_by_zmq_and_link_recovers(
    make_node: Callable[..., NodeTransport],
) -> None:
    small = dataclasses.replace(FAST, max_msg_bytes=1024 * 1024)
    a, b = make_node(1), make_node(2, config=small)
    mesh([a, b])
    assert a.send(2, b"x" * (2 * 1024 * 1024))  # zmq on b drops it and the connection; a reconnects
    got: list[Polled] = []

    def after() -> bool:
        a.send(2, b"after")
        got.extend(b.poll(10))
        return (a.identity, b"after", INSECURE) in got

    wait_until(after, "frames after an oversized one")
    assert all(len(frame) <= 1024 * 1024 for _, frame, _ in got)


def test_late_peer_receives_after_reconnect(make_node: Callable[..., NodeTransport]) -> None:
    port = free_port()
    a = make_node(1)
    a.add_peer(2, f"127.0.0.1:{port}")
    assert not a.send(2, b"too early")  # IMMEDIATE: nobody there, dropped at once and counted
    assert a.stats.dropped == {2: 1}
    b = make_node(2, f"127.0.0.1:{port}")
    got: list[Polled] = []

    def arrived() -> bool:
        a.send(2, b"hello")
        got.extend(b.poll(10))
        return (a.identity, b"hello", INSECURE) in got

    wait_until(arrived, "late peer to receive")
    assert all(frame != b"too early" for _, frame, _ in got)


def test_restarted_peer_receives_again(make_node: Callable[..., NodeTransport]) -> None:
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    address = b.address
    b.close()
    b2 = make_node(2, address)  # same port: close() really released it
    b2.add_peer(1, a.address)
    connect(a, b2)
    connect(b2, a)  # the new incarnation's DEALER (same identity) is routed at a


def test_restarted_peer_is_heard_while_its_old_connection_is_still_open(
    make_node: Callable[..., NodeTransport],
) -> None:
    # The old incarnation's connection stays open at a (as when its FIN never arrived): with
    # one identity per node and no ROUTER_HANDOVER, a would never read the new connection.
    a, old = make_node(1), make_node(2)
    mesh([a, old])
    new = make_node(2)
    new.add_peer(1, a.address)
    connect(new, a)
    connect(old, a)  # both are heard as node 2 until the old one's connection is gone
    assert new.identity == old.identity == node_identity(2)


def test_sockets_use_tcp_keepalive_and_no_zmtp_heartbeats(
    make_node: Callable[..., NodeTransport],
) -> None:
    config = dataclasses.replace(
        FAST, tcp_keepalive_idle_s=7, tcp_keepalive_intvl_s=2, tcp_keepalive_cnt=4
    )
    a, b = make_node(1, config=config), make_node(2, config=config)
    mesh([a, b])
    with ClientTransport({1: a.address}, config=config) as client:
        sockets = [a._router, a._peers[2], *client._nodes.values()]
        for sock in sockets:
            assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 0
            assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
            assert sock.getsockopt(zmq.TCP_KEEPALIVE_IDLE) == 7
            assert sock.getsockopt(zmq.TCP_KEEPALIVE_INTVL) == 2
            assert sock.getsockopt(zmq.TCP_KEEPALIVE_CNT) == 4
            # A node's ROUTER sends only replies to clients: they have their own bound.
            hwm = config.reply_hwm if sock is a._router else config.sndhwm
            assert sock.getsockopt(zmq.SNDHWM) == hwm
            assert sock.getsockopt(zmq.RCVHWM) == config.rcvhwm
    port = int(b.address.rsplit(":", 1)[1])
    if not _kernel_tcp_table():
        pytest.skip("no /proc/net/tcp to check the kernel's keepalive timers")

    def both_ends_keepalive() -> bool:
        # /proc/net/tcp: "tr" 2 = the keepalive timer is armed (an idle connection with
        # SO_KEEPALIVE); both the accepted and the connecting end of a -> b must have it.
        ends = [row for row in _kernel_tcp_table() if port in (row[0], row[1])]
        return len(ends) == 2 and all(row[2] == 2 for row in ends)

    wait_until(both_ends_keepalive, "keepalive timers on the a -> b connection")


def _kernel_tcp_table(established: bool = True) -> list[tuple[int, int, int]]:
    """(local port, remote port, timer) of every (established) IPv4 TCP connection."""
    try:
        with open("/proc/net/tcp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    rows = []
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" or (established and fields[3] != "01"):  # LISTEN; ESTABLISHED
            continue
        local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        rows.append((local, remote, int(fields[5].split(":")[0], 16)))
    return rows


def test_node_identities_carry_an_incarnation_that_receivers_strip() -> None:
    from broadcast.transport import _canonical_node_identity, _wire_identity

    wire = _wire_identity(3)
    assert wire.startswith(b"n:3/") and wire != _wire_identity(3)
    assert _canonical_node_identity(wire) == b"n:3"
    assert _canonical_node_identity(b"n:3") == b"n:3"
    for other in (b"n:3/", b"n:x/1", b"c:3/1", b"n:3/" + b"1" * 33):
        assert _canonical_node_identity(other) is None


def test_hwm_overflow_does_not_block_and_is_counted(
    make_node: Callable[..., NodeTransport],
) -> None:
    # b deliberately stops reading for a while; with no ZMTP heartbeats that never looks dead.
    tiny = TransportConfig(sndhwm=2, rcvhwm=2)
    a, b = make_node(1, config=tiny), make_node(2, config=tiny)
    mesh([a, b])
    dropped_before = a.stats.dropped.get(2, 0)  # pings dropped while connecting
    frame = b"z" * (256 * 1024)
    counts = {True: 0, False: 0}  # sends accepted, refused
    deadline = time.monotonic() + DEADLINE_S

    def fill() -> None:  # b does not poll: queues and TCP buffers fill up
        while counts[False] < 10 and time.monotonic() < deadline:
            counts[a.send(2, frame)] += 1

    # The sends run in a thread of their own (the transport is only ever used by one
    # thread at a time: this one waits): a send that blocked would keep it alive past
    # the deadline. How fast a refused send returns is in bench/speed_checks.py.
    filler = threading.Thread(target=fill, daemon=True)
    filler.start()
    filler.join(2 * DEADLINE_S)
    assert not filler.is_alive(), "a send blocked at the high-water mark"
    accepted, refused = counts[True], counts[False]
    assert refused >= 10, "sends never hit the high-water mark"
    assert a.stats.dropped[2] == dropped_before + refused
    batch_sent = a.send_many(2, [frame] * 5)
    assert a.stats.dropped[2] == dropped_before + refused + 5 - batch_sent
    accepted += batch_sent
    # Nothing accepted on a live connection is lost: b gets exactly the accepted frames.
    got = collect(b, accepted)
    assert len(got) == accepted and all(f == frame for _, f, _ in got)


def test_malformed_multipart_is_dropped_and_transport_keeps_working(
    make_node: Callable[..., NodeTransport],
) -> None:
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.IDENTITY, b"raw")
    try:
        raw.connect(b.address)  # no IMMEDIATE: queued until connected, in order
        raw.send_multipart([b"one", b"two"])
        raw.send_multipart([b"a", b"b", b"c"])
        raw.send(b"fine")
        got = collect(b, 1)
        assert got == [(b"raw", b"fine", INSECURE)]
        assert b.stats.malformed == 2
        assert a.send(2, b"still works")
        assert collect(b, 1) == [(a.identity, b"still works", INSECURE)]
    finally:
        ctx.destroy(linger=0)


def test_client_drops_malformed_reply() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    try:
        router.bind("tcp://127.0.0.1:0")
        address = router.getsockopt_string(zmq.LAST_ENDPOINT)
        with ClientTransport({7: address}, identity=b"c:me", config=FAST) as client:
            wait_until(lambda: client.send(7, b"hi"), "client connection")
            assert router.recv_multipart() == [b"c:me", b"hi"]
            router.send_multipart([b"c:me", b"x", b"y"])
            router.send_multipart([b"c:me", b"ok"])
            got: list[tuple[int, bytes]] = []
            wait_until(lambda: bool(gather(client.poll(10), got)), "reply")
            assert got == [(7, b"ok")]
            assert client.stats.malformed == 1
    finally:
        ctx.destroy(linger=0)


def test_port_in_use_raises_transport_error(make_node: Callable[..., NodeTransport]) -> None:
    a = make_node(1)
    with pytest.raises(TransportError, match="in use") as info:
        NodeTransport(2, a.address, cluster_id=CLUSTER)
    assert info.value.address == a.address
    assert a.address in str(info.value)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a non-zmq listener too
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
            NodeTransport(2, f"127.0.0.1:{port}", cluster_id=CLUSTER)


def test_wake_from_another_thread_makes_poll_return(
    make_node: Callable[..., NodeTransport],
) -> None:
    t = make_node(1)
    polling = threading.Event()

    def waker() -> None:
        polling.wait(DEADLINE_S)
        t.wake()

    thread = threading.Thread(target=waker)
    thread.start()
    start = time.monotonic()
    polling.set()
    assert t.poll(60_000) == []
    assert time.monotonic() - start < DEADLINE_S / 3
    thread.join()

    # Many concurrent wakes coalesce; once drained, poll times out again (no stale wake-up).
    def wake_many() -> None:
        for _ in range(200):
            t.wake()

    threads = [threading.Thread(target=wake_many) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.poll(60_000) == []  # returns at once: woken
    start = time.monotonic()
    assert t.poll(50) == []
    assert time.monotonic() - start >= 0.03
    t.close()
    t.wake()  # after close: a harmless no-op
    with pytest.raises(TransportError, match="closed"):
        t.poll(0)


def test_bad_arguments_are_typed_errors(make_node: Callable[..., NodeTransport]) -> None:
    a = make_node(1)
    with pytest.raises(TransportError, match="unknown peer"):
        a.send(9, b"x")
    with pytest.raises(ValueError):
        a.add_peer(1, "127.0.0.1:1")
    with pytest.raises(TransportError, match="invalid address"):
        NodeTransport(2, "nonsense:port", cluster_id=CLUSTER)
    with pytest.raises(ValueError, match="16 bytes"):
        NodeTransport(2, "127.0.0.1:0", cluster_id=b"short")
    with pytest.raises(ValueError, match="unbounded"):
        TransportConfig(sndhwm=0)
    assert TransportConfig().max_queued_bytes == 128 * (64 * 1024 * 1024 + 21)
    assert endpoint("5555") == "tcp://127.0.0.1:5555"
    assert endpoint("10.0.0.1:7") == "tcp://10.0.0.1:7"
    assert endpoint("ipc:///tmp/x") == "ipc:///tmp/x"
    assert node_id_of(node_identity(42)) == 42
    assert node_id_of(b"c:42") is None
    assert node_id_of(b"n:") is None
    assert node_id_of(b"n:-1") is None


def test_envelopes_carry_the_cluster_id_and_round_trip() -> None:
    small = [b"\x93a", b"\x00looks like an envelope", b"y" * 60_000] * 30
    large = b"x" * 300_000
    frames = [*small[:5], large, *small[5:], large]
    packed = pack_envelopes(CLUSTER, frames)
    assert sum(count for _, count in packed) == len(frames)
    unpacked: list[bytes] = []
    for parts, count in packed:
        opened = unpack_envelope(parts)
        assert opened is not None and opened[0] == CLUSTER and len(opened[1]) == count
        unpacked += opened[1]
        assert len(b"".join(parts)) <= max(ENVELOPE_BYTES, len(large) + 21)
        if len(parts) == 2:  # a large frame travels alone, as the envelope's second part
            assert parts[1] is large and parts[0] == ENVELOPE + CLUSTER + b"\xe0\x93\x04\x00"
    assert unpacked == frames
    assert [len(parts) for parts, _ in packed] == [1, 2, 1, 1, 2]  # order kept, 1 MiB bound
    # Even a lone small frame is enveloped, with the cluster id.
    assert pack_envelopes(CLUSTER, [b"\x91\x01"]) == [
        ([ENVELOPE + CLUSTER + b"\x02\x00\x00\x00\x91\x01"], 1)
    ]
    assert pack_envelopes(CLUSTER, []) == []
    with pytest.raises(ValueError):
        pack_envelopes(CLUSTER, [b"ok", b""])
    with pytest.raises(ValueError):
        pack_envelopes(b"short", [b"ok"])


def test_malformed_envelopes_are_recognised() -> None:
    head = ENVELOPE + CLUSTER
    assert unpack_envelope([head + b"\x01\x00\x00\x00z"]) == (CLUSTER, [b"z"])
    for parts in (
        [b"\x91\x01"],  # a raw frame
        [head],  # no frames
        [head[:10]],  # cut inside the cluster id
        [head + b"\xff\xff\xff\xff"],  # a length past the end
        [head + b"\x01\x00"],  # a cut length
        [head + b"\x00\x00\x00\x00"],  # an empty frame
        [head + b"\x02\x00\x00\x00", b"abc"],  # two parts, the length lies
        [head, b"abc"],  # two parts, no length
        [head + b"\x01\x00\x00\x00", b""],
        [head + b"\x01\x00\x00\x00z", b"z", b"z"],  # three parts
        [],
    ):
        assert unpack_envelope(parts) is None, parts


def test_envelopes_between_nodes_round_trip(make_node: Callable[..., NodeTransport]) -> None:
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    big = b"x" * 300_000
    frames = [b"\x93a", b"\x00looks like an envelope", big, b"y" * 300] * 5
    assert a.send_many(2, frames) == len(frames)
    assert collect(b, len(frames)) == [(a.identity, f, INSECURE) for f in frames]
    assert b.stats.malformed == b.stats.foreign_cluster == 0


def test_peer_of_another_cluster_is_dropped_counted_and_logged(
    make_node: Callable[..., NodeTransport],
) -> None:
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    foreign = make_node(3, cluster_id=OTHER_CLUSTER)
    foreign.add_peer(2, b.address)
    received = b.stats.received  # the pings of mesh()

    def dropped() -> bool:
        # A one-part and a two-part envelope per send (refused by the sender until connected).
        foreign.send_many(2, [b"\x91\x07", b"\x91\x08" * 40_000])
        assert b.poll(10) == []
        return b.stats.foreign_cluster >= 20

    with structlog.testing.capture_logs() as logs:
        wait_until(dropped, "envelopes of another cluster to be dropped")
    assert b.stats.received == received and b.stats.malformed == 0
    warnings = [e for e in logs if e["event"] == "transport.foreign_cluster_dropped"]
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["sender"].startswith("n:3/")
    assert warnings[0]["cluster_id"] == OTHER_CLUSTER.hex()
    assert warnings[0]["our_cluster_id"] == CLUSTER.hex()
    assert len(warnings) < b.stats.foreign_cluster  # rate-limited; the counter is exact
    # b keeps working with its own cluster.
    assert a.send(2, b"\x91\x09")
    assert collect(b, 1) == [(a.identity, b"\x91\x09", INSECURE)]


def test_node_identity_without_a_valid_envelope_is_dropped(
    make_node: Callable[..., NodeTransport],
) -> None:
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.setsockopt(zmq.IDENTITY, b"n:5")  # claims to be a node, old-style identity
        raw.connect(b.address)  # no IMMEDIATE: queued until connected, in order
        raw.send(b"\x91\x01")  # not an envelope
        raw.send(ENVELOPE + CLUSTER + b"\x09\x00\x00\x00short")  # length lies
        raw.send_multipart([ENVELOPE + CLUSTER, b"\x91\x01"])  # two parts, no length
        raw.send(ENVELOPE + CLUSTER + b"\x02\x00\x00\x00\x91\x02")  # fine
        bad = ctx.socket(zmq.DEALER)
        bad.setsockopt(zmq.LINGER, 0)
        bad.setsockopt(zmq.IDENTITY, b"n:nobody")  # not n:<id>
        bad.connect(b.address)
        bad.send(ENVELOPE + CLUSTER + b"\x02\x00\x00\x00\x91\x03")
        client = ctx.socket(zmq.DEALER)
        client.setsockopt(zmq.LINGER, 0)
        client.setsockopt(zmq.IDENTITY, b"c:x")
        client.connect(b.address)
        client.send(ENVELOPE + CLUSTER + b"\x02\x00\x00\x00\x91\x04")  # clients: raw only
        client.send(b"\x91\x05")
        got: list[Polled] = []

        def settled() -> bool:
            got.extend(b.poll(10))
            return len(got) >= 2 and b.stats.malformed >= 5

        wait_until(settled, "the good frames to arrive and the bad ones to be counted")
        assert sorted(got) == [(b"c:x", b"\x91\x05", INSECURE), (b"n:5", b"\x91\x02", INSECURE)]
        assert b.stats.malformed == 5 and b.stats.foreign_cluster == 0
        assert a.send(2, b"still works")
        assert collect(b, 1) == [(a.identity, b"still works", INSECURE)]
    finally:
        ctx.destroy(linger=0)


def _raw_dealer(
    ctx: zmq.Context[zmq.Socket[bytes]], identity: bytes, address: str
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(address)  # no IMMEDIATE: frames wait for the connection
    return sock


def assert_still_serving(node: NodeTransport, peer: NodeTransport) -> None:
    """A peer's frames reach ``node``, and a new client gets its reply."""
    assert peer.send(node.node_id, b"\x91\x0a")
    got: list[Polled] = []

    def arrived() -> bool:
        got.extend(node.poll(10))
        return (peer.identity, b"\x91\x0a", INSECURE) in got

    wait_until(arrived, f"a frame from node {peer.node_id}")
    with ClientTransport({node.node_id: node.address}, config=FAST) as client:
        assert client.send(node.node_id, b"\x91\x0b")  # queued until connected
        replies: list[tuple[int, bytes]] = []

        def answered() -> bool:
            for identity, frame, _ in node.poll(10):
                if (identity, frame) == (client.identity, b"\x91\x0b"):
                    assert node.reply(identity, b"\x91\x0c")
            replies.extend(client.poll(0))
            return bool(replies)

        wait_until(answered, "a new client's request and its reply")
        assert replies == [(node.node_id, b"\x91\x0c")]


def test_client_that_floods_and_vanishes_leaves_the_node_serving(
    make_node: Callable[..., NodeTransport],
) -> None:
    # What aborted libzmq with ZMTP heartbeats on (tests/zmq_abort_repro.py runs it in a
    # process of its own): the node's receive pipe for a client is full, and that client's
    # connection fails. Here the node does not read until the connection is reset.
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs /proc/net/tcp to see the node's end of the connection reset")
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    port = int(b.address.rsplit(":", 1)[1])
    before = {remote for local, remote, _ in _kernel_tcp_table() if local == port}
    flooder = b"c:flooder"
    frame = b"\x91" + b"f" * (64 * 1024)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = _raw_dealer(ctx, flooder, b.address)
        # The handshake first: even without CURVE, the node's ZAP handler (the connection
        # limit) answers it only inside poll(). From here on the node does not read.
        sock.send(frame)
        assert collect(b, 1) == [(flooder, frame, INSECURE)]

        def full() -> bool:
            # Our queue refuses only once TCP stalls, i.e. once b stopped reading: its pipe
            # for us is at its high-water mark.
            try:
                sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return True
            return False

        wait_until(full, "the flood to fill every queue up to the node")
        ports = {remote for local, remote, _ in _kernel_tcp_table() if local == port} - before
        assert len(ports) == 1, ports
        assert b.reply(flooder, b"\x91\x00")  # unread when the flooder goes: it resets
    finally:
        ctx.destroy(linger=0)

    def reset() -> bool:
        # Until b's end of the connection is gone (reset), write to it: b's engine then
        # sees the error while its pipe is full, the state in which libzmq used to abort.
        b.reply(flooder, b"\x91\x00")
        table = _kernel_tcp_table(established=False)
        return not ports & {remote for local, remote, _ in table if local == port}

    wait_until(reset, "the node's end of the flooder's connection to be reset")
    got: list[Polled] = []

    def forgotten() -> bool:
        got.extend(b.poll(10))  # the flood, then ZeroMQ closes the connection
        return not b.reply(flooder, b"\x91\x00")

    wait_until(forgotten, "the node to drop the flooder's connection")
    assert got and all(
        (identity, f, principal) == (flooder, frame, INSECURE) for identity, f, principal in got
    )
    assert_still_serving(b, a)
    assert b.stats.malformed == 0


def test_two_connections_with_one_identity_leave_the_node_serving(
    make_node: Callable[..., NodeTransport],
) -> None:
    # Without ROUTER_HANDOVER the first connection keeps the identity, and ZeroMQ never reads
    # the second one (see NodeTransport.__init__). With it, the second took the identity
    # over, and libzmq could abort once the first sent more and failed (the sequence below;
    # tests/zmq_abort_repro.py runs it in a process of its own).
    a, b = make_node(1), make_node(2)
    mesh([a, b])
    twin = b"c:twin"
    monitor = b._router.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        first = _raw_dealer(ctx, twin, b.address)
        first.send(b"\x91\x01")
        assert collect(b, 1) == [(twin, b"\x91\x01", INSECURE)]
        second = _raw_dealer(ctx, twin, b.address)
        second.send(b"\x91\x02")
        handshakes: list[object] = []

        def attached() -> bool:
            # The handshake waits for b's ZAP handler, which b's loop serves (poll() would
            # also read frames; only the handler runs here).
            b.gate.on_zap()
            if monitor.poll(10):
                handshakes.append(recv_monitor_message(monitor))
            return len(handshakes) == 2  # the first connection's and the second's

        wait_until(attached, "the second connection's handshake")
        assert b.poll(10) == []  # b's ROUTER takes the second connection in: nothing to read
        first.send(b"\x91\x03")
        assert collect(b, 1) == [(twin, b"\x91\x03", INSECURE)]  # the first still holds it
        assert b.reply(twin, b"\x91\x04")
        assert first.poll(int(DEADLINE_S * 1000)) and first.recv() == b"\x91\x04"
        first.send(b"\x91\x05")
        first.close(0)  # goes, maybe with frames in flight; the second stays, unheard
        second.send(b"\x91\x06")
        assert_still_serving(b, a)
    finally:
        ctx.destroy(linger=0)
        b._router.disable_monitor()
        monitor.close(0)
    assert b.stats.malformed == 0
