"""A key refused once gets in once it is listed: ZeroMQ never retries a connection its
peer refused at the handshake, so the transport does (review finding: a node whose new
key reached its peers' cluster file after its first try, or a client added to the file
after it first tried, stayed locked out until it restarted)."""

from __future__ import annotations

from pathlib import Path

from procs import grant_toml, wait_for

from broadcast import Client, Node, local_cluster
from broadcast.keys import Keypair, save_keypair
from broadcast.local import cluster_file, free_base_port


def test_a_client_refused_for_its_key_gets_in_once_the_node_lists_it(tmp_path: Path) -> None:
    plain = local_cluster(1, free_base_port(1))
    cluster = cluster_file(tmp_path, plain)
    assert cluster.path is not None
    newcomer = Keypair.generate()
    save_keypair(tmp_path / "newcomer.key", newcomer)
    node = Node(1, cluster, tmp_path / "node1", fsync=False).start()
    with Client(cluster, key_file=tmp_path / "newcomer.key") as client:
        try:
            assert client.status(1, timeout=1.0) is None  # refused: not in the file
        finally:
            node.stop()
        with cluster.path.open("a") as f:
            f.write(grant_toml("newcomer", newcomer, ["*"], ["status"]))
        node = Node(1, cluster_file(tmp_path, plain), tmp_path / "node1", fsync=False).start()
        try:
            # The same client, the same sockets: they connect again by themselves.
            status = wait_for("the newcomer let in", lambda: client.status(1, timeout=0.5), 30)
            assert status.node == 1
        finally:
            node.stop()
