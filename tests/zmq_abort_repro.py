"""Reproduce libzmq's ``Assertion failed: !_io_error (stream_engine_base.cpp)`` abort on a node.

Not a pytest module: run it as a process of its own, because the abort kills the whole
process (pytest included). Each run starts one ``NodeTransport`` here and plays a hostile
client against it, then checks that the node still serves a fresh client::

    python tests/zmq_abort_repro.py flood-exit    # a client floods, then its process exits
    python tests/zmq_abort_repro.py flood-close   # the same, closing its socket in-process
    python tests/zmq_abort_repro.py takeover      # a 2nd connection reuses an identity in use
    python tests/zmq_abort_repro.py takeover-full # the same while the 1st one's pipe is full

Exit status 0 and a JSON line ``{"survived": true, ...}`` on stdout: the node served a
fresh client afterwards. An abort shows as a negative status (SIGABRT: -6 from
subprocess, 134 from a shell) and libzmq's assertion on stderr.

``--zmtp-heartbeat`` and ``--handover`` put back options the transport used to set (the
heartbeats on every socket, the handover on the node's ROUTER), to show that the abort is
libzmq's and that the transport avoids it by not setting them.

The mechanism (libzmq 4.3.x, src/stream_engine_base.cpp): when the node's receive pipe
for a connection is full, the engine stops reading (``_input_stopped``). If the
connection then fails (the client is gone: our next write to it draws an RST, reported as
an error event on the descriptor), ``in_event`` sees ``_input_stopped``, removes the
descriptor and sets ``_io_error``, waiting for the pipe to drain. With ZMTP heartbeats
on, the next heartbeat timer calls ``out_event``, whose first line is
``zmq_assert (!_io_error)``: abort. The node's heartbeat ping is also what draws the RST,
so without heartbeats nothing writes to, and nothing times out on, such a connection
until the node drains its pipe, which ends it cleanly.

The node answers handshakes while it is attacked (its ZAP handler, which the transport
serves inside ``poll()``, runs in a thread meanwhile) but reads nothing: the client's
connection is established and its pipe at the node fills up, as with a node too busy
to read.

This is a reproduction harness, not a test: it sleeps on purpose (a node that polls
slowly is the condition being reproduced), and "survived" only means "did not abort in
``--seconds``".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from broadcast import transport
from broadcast.transport import ClientTransport, NodeTransport, TransportConfig

VARIANTS = ("flood-exit", "flood-close", "takeover", "takeover-full")
FRAME = b"\x91" + b"f" * (64 * 1024 - 1)  # 64 KiB: the pipe and the TCP buffers fill quickly


def _flood(address: str, identity: bytes, max_s: float = 30.0) -> int:
    """Send until the socket refuses (our queue, TCP buffers and the node's pipe are full)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.SNDHWM, 1_000)
    sock.connect(address)
    sent = _flood_socket(sock, max_s)
    sock.close(0)
    ctx.destroy(linger=0)
    return sent


def _flood_socket(sock: zmq.Socket[bytes], max_s: float = 30.0) -> int:
    sent = 0
    refused_since: float | None = None
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        try:
            sock.send(FRAME, zmq.NOBLOCK)
            sent += 1
            refused_since = None
        except zmq.Again:
            # Refused for a while in a row: everything between us and the node is full.
            now = time.monotonic()
            refused_since = refused_since or now
            if now - refused_since > 0.5:
                break
            time.sleep(0.01)  # pace of the retries while the pipe is full (not a wait)
    return sent


def _child_flood(address: str, identity: bytes) -> int:
    """Flood from another process, which then exits (os-level close of its connection)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import zmq_abort_repro as r; "
        f"print(r._flood({address!r}, {identity!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return int(done.stdout.strip() or 0)


def _serve_slowly(node: NodeTransport, seconds: float, interval_s: float) -> int:
    """Poll like an overloaded node: one message per ``interval_s`` (max_batch=1)."""
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += len(node.poll(0))
        time.sleep(interval_s)  # the slow reader's pace is the point (not a wait)
    return got


def _fresh_client_round_trip(node: NodeTransport, timeout_s: float = 30.0) -> bool:
    """Drain everything, then a new client's request must reach the node and its reply come back."""
    with ClientTransport({node.node_id: node.address}) as client:
        deadline = time.monotonic() + timeout_s
        asked = False
        while time.monotonic() < deadline:
            if not asked:
                asked = client.send(node.node_id, b"\x91\x01")
            for identity, frame, _ in node.poll(10):
                if identity == client.identity and frame == b"\x91\x01":
                    node.reply(identity, b"\x91\x02")
            if (node.node_id, b"\x91\x02") in client.poll(0):
                return True
    return False


def _takeover(node: NodeTransport, identity: bytes, *, full: bool) -> dict[str, object]:
    """A second connection with an identity in use; then the first one talks again and goes."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    first = ctx.socket(zmq.DEALER)
    second = ctx.socket(zmq.DEALER)
    for sock in (first, second):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, identity)
    first.connect(node.address)
    first.send(b"\x91\x03")
    got = _poll_until(node, b"\x91\x03")
    second.connect(node.address)
    second.send(b"\x91\x04")
    # Routed to the second connection with handover; never delivered without (the ROUTER
    # ignores a connection whose identity is in use): poll for a while either way.
    got += _poll_until(node, b"\x91\x04", timeout_s=2.0)
    flooded = 0
    if full:
        flooded = _flood_socket(first)
    else:
        first.send(b"\x91\x05")  # with handover, its old connection has no pipe any more
    time.sleep(0.5)  # let the connections carry what was sent before they all close (a repro)
    ctx.destroy(linger=0)  # both connections go away
    return {"flooded": flooded, "second_delivered": (identity, b"\x91\x04", "") in got}


def _poll_until(
    node: NodeTransport, frame: bytes, timeout_s: float = 10.0
) -> list[tuple[bytes, bytes, str]]:
    got: list[tuple[bytes, bytes, str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not any(f == frame for _, f, _ in got):
        got += node.poll(10)
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--seconds", type=float, default=8.0, help="slow polling after the attack")
    parser.add_argument("--poll-interval", type=float, default=0.1)
    parser.add_argument("--zmtp-heartbeat", action="store_true", help="the old ROUTER options")
    parser.add_argument("--handover", action="store_true", help="the old ROUTER_HANDOVER")
    args = parser.parse_args()

    if args.zmtp_heartbeat:
        _with_zmtp_heartbeats()
    node = _make_node()
    if args.handover:  # a ROUTER option read at each new connection: fine after bind
        node._router.setsockopt(zmq.ROUTER_HANDOVER, 1)
    identity = b"c:flooder"
    result: dict[str, object] = {"variant": args.variant, "zmq": zmq.zmq_version()}
    start = time.monotonic()
    if args.variant == "flood-exit":
        with _answering_handshakes(node):
            result["flooded"] = _child_flood(node.address, identity)
    elif args.variant == "flood-close":
        with _answering_handshakes(node):
            result["flooded"] = _flood(node.address, identity)
    else:
        result.update(_takeover(node, identity, full=args.variant == "takeover-full"))
    result["polled"] = _serve_slowly(node, args.seconds, args.poll_interval)
    result["survived"] = _fresh_client_round_trip(node)
    result["seconds"] = round(time.monotonic() - start, 1)
    result["malformed"] = node.stats.malformed
    node.close()
    print(json.dumps(result), flush=True)
    return 0 if result["survived"] else 1


@contextmanager
def _answering_handshakes(node: NodeTransport) -> Iterator[None]:
    """Serve the node's ZAP handler (and only it) in a thread: connections complete their
    handshake, and nothing reads what they send. Nothing else uses the node meanwhile."""
    stop = threading.Event()
    gate = node.gate

    def serve() -> None:
        while not stop.is_set():
            if gate.zap.poll(10):
                gate.on_monitor()
                gate.on_zap()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _with_zmtp_heartbeats() -> None:
    """Make the transport set the ZMTP heartbeat options it used to, on every socket.

    They must be set before ``bind``: a listener hands its connections the options the
    socket had when it was bound.
    """
    configure = transport._configure

    def with_heartbeats(sock: zmq.Socket[bytes], config: TransportConfig) -> None:
        configure(sock, config)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1_000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3_000)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3_000)

    transport._configure = with_heartbeats


def _make_node() -> NodeTransport:
    return NodeTransport(
        1, "127.0.0.1:0", config=TransportConfig(max_batch=1), cluster_id=bytes(16)
    )


if __name__ == "__main__":
    sys.exit(main())
