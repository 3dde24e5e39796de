"""Membership changes on real processes, under load: grow 3 -> 5 and shrink back to 3
(the leader removed too), and replace every node of a cluster one by one with the
leader killed once. Nothing acknowledged is lost, and every member delivers one order.

The changes go through the public API (Client.change_members, as ``paxos member`` does)
and new nodes are started from the cluster file that ``paxos member add`` extends.
"""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

from procs import ProcessCluster, wait_for

from broadcast.client import Client
from broadcast.keys import ensure_keypair
from broadcast.local import free_base_port
from broadcast.members_cli import add_to_file
from broadcast.spec import parse_cluster
from paxos.multi.membership import Op


class Load:
    """One client broadcasting as fast as its commits come back, in a thread; it records
    every payload acknowledged and its index. It finds members added meanwhile itself
    (the cluster file it started with may name none of the last ones)."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.client = cluster.client(timeout=120)
        self.acked: dict[int, bytes] = {}
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                payload = b"load %d" % n
                self.acked[self.client.broadcast(payload).index] = payload
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def wait_for_more(self, count: int, what: str) -> None:
        want = len(self.acked) + count
        wait_for(what, lambda: len(self.acked) >= want)

    def stop(self) -> dict[int, bytes]:
        self._stop.set()
        self._thread.join(180)
        assert not self._thread.is_alive(), "the load client hung"
        self.client.close()
        assert self.error is None, f"the load client failed: {self.error!r}"
        return self.acked


def add_node(cluster: ProcessCluster, client: Client, node: int) -> None:
    """``paxos member add`` (a new key, the change, the cluster file), start the node,
    then ``paxos member promote`` once it caught up."""
    key = ensure_keypair(cluster.data_dir(node) / "node.key").public_text
    address = f"127.0.0.1:{free_base_port(1) + 1}"
    client.change_members(Op.ADD_LEARNER, node, address, key, timeout=60)
    add_to_file(cluster.cluster, node, address, key)
    assert cluster.cluster.path is not None
    cluster.cluster = parse_cluster(str(cluster.cluster.path))
    cluster.start(node)
    client.change_members(Op.PROMOTE, node, timeout=120)


def remove_node(cluster: ProcessCluster, client: Client, node: int) -> None:
    client.change_members(Op.REMOVE, node, timeout=60)
    # (a removed leader hands over once its removal is in effect; then it may stop)
    wait_for(
        f"node {node} to stop leading",
        lambda: (m := client.members(timeout=0.5)) is not None and m.leader not in (0, node),
    )
    cluster.kill(node, signal.SIGTERM)


def check_order(cluster: ProcessCluster, members: list[int], acked: dict[int, bytes]) -> None:
    """Every member delivered one order holding every acknowledged payload at its index."""
    last = max(acked)
    orders = {n: cluster.order(n, last) for n in members}
    first = [c.payload for c in orders[members[0]]]
    for n in members:
        assert [c.payload for c in orders[n]] == first, f"node {n} delivered another order"
    for index, payload in acked.items():
        assert first[index - 1] == payload, f"acknowledged index {index} lost or moved"



def test_grow_from_three_to_five_and_shrink_back_to_three_under_load(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, fsync=False)
    try:
        cluster.leader()
        load = Load(cluster)
        with cluster.client(timeout=60) as admin:
            wait_for("the load to commit", lambda: len(load.acked) >= 20)
            for node in (4, 5):
                add_node(cluster, admin, node)
            members = admin.members()
            assert members is not None and members.voters == (1, 2, 3, 4, 5)
            # A node that joined restarts like any other (its data directory records it
            # with the cluster's starting members, which it is not one of).
            cluster.kill(4)
            cluster.start(4)
            admin.refresh_members()
            wait_for(
                "node 4 to serve again",
                lambda: (s := admin.status(4)) is not None and s.delivered >= len(load.acked),
            )
            at_five = len(load.acked)
            wait_for("commits with five voters", lambda: len(load.acked) >= at_five + 20)
            # Shrink: the leader first (it hands over), then another of the first three.
            leader = cluster.leader()
            remove_node(cluster, admin, leader)
            other = next(n for n in (1, 2, 3) if n != leader)
            remove_node(cluster, admin, other)
            members = admin.members()
            assert members is not None and len(members.voters) == 3
            at_three = len(load.acked)
            wait_for("commits with three voters", lambda: len(load.acked) >= at_three + 20)
        acked = load.stop()
        check_order(cluster, list(members.voters), acked)
    finally:
        cluster.stop()


def test_replace_every_node_one_by_one_under_load_with_the_leader_killed_once(
    tmp_path: Path,
) -> None:
    """Each machine of a three-node cluster is replaced by a new member (a new id and
    key): add and promote the new one, remove the old one. Halfway, the leader is
    killed (SIGKILL) and comes back. At the end no node of the cluster file the load
    client started with is left: it found the new members itself."""
    cluster = ProcessCluster(tmp_path, fsync=False)
    try:
        cluster.leader()
        load = Load(cluster)
        with cluster.client(timeout=60) as admin:
            wait_for("the load to commit", lambda: len(load.acked) >= 20)
            for old, new in ((1, 4), (2, 5), (3, 6)):
                add_node(cluster, admin, new)
                if new == 5:
                    leader = cluster.leader()
                    cluster.kill(leader)  # SIGKILL, mid-change
                    load.wait_for_more(5, "commits after the kill")
                    cluster.start(leader)
                admin.refresh_members()
                remove_node(cluster, admin, old)
            members = admin.members()
            assert members is not None and members.voters == (4, 5, 6)
            at_end = len(load.acked)
            wait_for("commits by the new members", lambda: len(load.acked) >= at_end + 20)
        acked = load.stop()
        check_order(cluster, [4, 5, 6], acked)
    finally:
        cluster.stop()


def test_a_node_whose_disk_was_lost_cannot_vote_under_its_old_id(tmp_path: Path) -> None:
    """Its key went with its disk: started again with an empty data directory, it has
    no key the cluster file names for it, and a new key is refused as not its own."""
    cluster = ProcessCluster(tmp_path, fsync=False)
    try:
        cluster.leader()
        cluster.kill(3)
        shutil.rmtree(cluster.data_dir(3))
        cluster.start(3)
        assert cluster.procs[3].wait(30) != 0
        ensure_keypair(cluster.data_dir(3) / "node.key")  # a fresh key for the old id
        cluster.start(3)
        assert cluster.procs[3].wait(30) != 0
        text = cluster.log_file(3).read_text()
        assert "cluster file names" in text, text[-2000:]
        with cluster.client(timeout=30) as client:
            client.broadcast(b"still served by 1 and 2")
    finally:
        cluster.stop()


def test_a_new_member_starts_with_join_and_a_starting_member_without(tmp_path: Path) -> None:
    """``--join`` says "a member added later": a new id without it (a typo of the id,
    say) or a starting member's id with it is refused with a one-line error."""
    import subprocess
    import sys

    cluster = ProcessCluster(tmp_path, fsync=False, start=())
    assert cluster.cluster.path is not None
    add_to_file(cluster.cluster, 4, "127.0.0.1:1", ensure_keypair(tmp_path / "n4.key").public_text)
    spec = str(cluster.cluster.path)
    for node, extra, expected in (
        (4, (), "a member added later starts with --join"),
        (1, ("--join",), "--join is for members added later"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "broadcast", "node", "--id", str(node), "--cluster", spec,
             "--data-dir", str(tmp_path / f"d{node}"), *extra],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0 and expected in out.stderr, out.stderr[-500:]
