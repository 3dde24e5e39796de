"""The connection limit of a node's gate (broadcast/auth.py) under connections that never
finish a ZMTP handshake the way libzmq reports (second review: libzmq sends no "handshake
ended" event for a connection whose first bytes are junk or an old ZMTP greeting, so a
count of handshakes in progress only grew, and the limit vanished)."""

from __future__ import annotations

import socket
from pathlib import Path

import zmq
from procs import wait_for

from broadcast.auth import Keyring
from broadcast.identity import cluster_id_bytes
from broadcast.keys import load_keypair
from broadcast.local import cluster_file, free_base_port
from broadcast.spec import local_cluster
from broadcast.transport import NodeTransport, TransportConfig

LIMIT = 4


def test_junk_greetings_cannot_switch_the_connection_limit_off(tmp_path: Path) -> None:
    cluster = cluster_file(tmp_path, local_cluster(1, free_base_port(1)))
    assert cluster.cluster_id is not None and cluster.client_key is not None
    keyring = Keyring.of(cluster, 1, load_keypair(tmp_path / "node1" / "node.key"))
    node = NodeTransport(
        1,
        cluster.nodes[1],
        config=TransportConfig(max_connections=LIMIT),
        cluster_id=cluster_id_bytes(cluster.cluster_id),
        keyring=keyring,
    )
    host, port = cluster.nodes[1].split(":")
    admin = load_keypair(cluster.client_key)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        for greeting in (b"\x05\x01hello", b"GET / HTTP/1.0\r\n\r\n") * 10:
            with socket.create_connection((host, int(port))) as junk:
                junk.sendall(greeting)
        wait_for("the junk connections to close", lambda: node.poll(10) == [] and (
            node.gate.stats.connections == 0
        ), 30)
        clients = []
        for i in range(2 * LIMIT):
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.IDENTITY, b"c:%d" % i)
            dealer.curve_publickey = admin.public
            dealer.curve_secretkey = admin.secret
            dealer.curve_serverkey = keyring.peers[1]
            dealer.connect(f"tcp://{cluster.nodes[1]}")
            dealer.send(b"\x91\x01")
            clients.append(dealer)
        heard: set[bytes] = set()

        def settled() -> bool:
            heard.update(identity for identity, _, _ in node.poll(10))
            return node.gate.stats.waiting == LIMIT and len(heard) == LIMIT

        # The limit holds: LIMIT clients get in, the others wait for a place.
        wait_for("LIMIT clients in, the rest waiting", settled, 30)
        assert node.gate.stats.admitted == LIMIT
    finally:
        ctx.destroy(linger=0)
        node.close()
