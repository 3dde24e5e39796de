"""Snapshots, compaction and snapshot install with real nodes (in one process, on loopback).

The simulator judges the protocol (tests/test_mutations.py, paxos sim); these check
the runtime around it: files written, log segments deleted, a restart that starts
from the snapshot, a node that comes back from far behind the others' floor.

The nodes speak CURVE (keys written by ``broadcast.local.cluster_file``; node ``i`` in
``tmp/node<i>``, where its key is).
"""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import secure_cluster, wait_for

from broadcast import Client, Compacted, Delivery, Node
from paxos.multi.config import ReplicaConfig

SMALL = {"snapshot_entries": 40, "wal_segment_bytes": 4096}


class Digest:
    """A state machine with real snapshot/restore: a count and a running CRC."""

    def __init__(self) -> None:
        self.count = 0
        self.crc = 0
        self.restored_from = 0

    def apply(self, delivery: Delivery) -> int:
        assert delivery.index == self.count + 1, (delivery.index, self.count)
        self.count += 1
        self.crc = zlib.crc32(delivery.command.payload, self.crc)
        return self.count

    def snapshot(self) -> bytes:
        return f"{self.count}:{self.crc}".encode()

    def restore(self, data: bytes) -> None:
        count, crc = data.decode().split(":")
        self.count, self.crc = int(count), int(crc)
        self.restored_from = self.count


def _node(i: int, cluster: object, tmp: Path, **kw: object) -> Node:
    config = ReplicaConfig(nodes=(1, 2, 3), compact_keep_slots=4)
    return Node(
        i, cluster, tmp / f"node{i}", state_machine=Digest(), fsync=False,  # type: ignore[arg-type]
        replica_config=config, **{**SMALL, **kw},  # type: ignore[arg-type]
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[object, list[Node | None]]]:
    spec = secure_cluster(tmp_path, 3)
    nodes: list[Node | None] = [None] + [_node(i, spec, tmp_path).start() for i in (1, 2, 3)]
    try:
        yield spec, nodes
    finally:
        for node in nodes[1:]:
            if node is not None:
                node.stop()


def _states(nodes: list[Node | None]) -> set[tuple[int, int]]:
    return {(n.state_machine.count, n.state_machine.crc) for n in nodes[1:] if n}  # type: ignore[attr-defined]


def test_snapshots_compact_the_log_and_a_restart_starts_from_the_snapshot(
    cluster: tuple[object, list[Node | None]], tmp_path: Path
) -> None:
    spec, nodes = cluster
    node1 = nodes[1]
    assert node1 is not None
    for k in range(300):
        node1.broadcast(b"p%05d" % k + b"x" * 200, timeout=30)
    wait_for("all applied", lambda: all(n.state_machine.count == 300 for n in nodes[1:]))  # type: ignore[union-attr]
    assert len(_states(nodes)) == 1
    for node in nodes[1:]:
        assert node is not None
        wait_for("a durable snapshot", lambda n=node: n.status().snapshot_slot > 0)
        wait_for("log segments deleted", lambda n=node: n.wal.floor > 1)
        assert node.status().floor > 0
    # Restart node 2: it starts from its snapshot, not from index 1.
    node2 = nodes[2]
    assert node2 is not None
    snapshot_index = node2.status().snapshot_index
    node2.stop()
    nodes[2] = _node(2, spec, tmp_path).start()
    restarted = nodes[2]
    assert restarted.state_machine.restored_from >= snapshot_index > 0  # type: ignore[attr-defined]
    node1.broadcast(b"after", timeout=30)
    wait_for("all applied", lambda: all(n.state_machine.count == 301 for n in nodes[1:]))  # type: ignore[union-attr]
    assert len(_states(nodes)) == 1


def test_a_node_far_behind_the_floor_comes_back_by_installing_a_snapshot(
    cluster: tuple[object, list[Node | None]], tmp_path: Path
) -> None:
    spec, nodes = cluster
    node1, node3 = nodes[1], nodes[3]
    assert node1 is not None and node3 is not None
    node1.broadcast(b"first", timeout=30)
    wait_for("node 3 applied", lambda: node3.state_machine.count == 1)  # type: ignore[attr-defined]
    node3.stop()
    nodes[3] = None
    for k in range(400):
        node1.broadcast(b"q%05d" % k + b"y" * 100, timeout=30)
    for node in nodes[1:3]:
        assert node is not None
        wait_for("the others compacted", lambda n=node: n.status().floor > 50)
    nodes[3] = back = _node(3, spec, tmp_path).start()
    wait_for("node 3 caught up", lambda: back.state_machine.count == 401, 90)  # type: ignore[attr-defined]
    assert back.state_machine.restored_from > 1  # type: ignore[attr-defined]
    assert len(_states(nodes)) == 1
    assert back.status().snapshot_slot > 0  # the installed snapshot is on its disk


def test_a_subscriber_below_the_retention_rebuilds_from_a_snapshot_then_follows(
    tmp_path: Path,
) -> None:
    """The retention keeps 50 entries; a subscriber that starts from 1 is told where the
    history starts (Compacted), takes a node's snapshot instead, restores its state from
    it and follows from the snapshot's index on: it ends with the nodes' state."""
    spec = secure_cluster(tmp_path, 3)
    nodes = [
        _node(i, spec, tmp_path, retain_entries=50, history_segment_bytes=1024).start()
        for i in (1, 2, 3)
    ]
    try:
        for k in range(300):
            nodes[0].broadcast(b"r%05d" % k, timeout=30)
        with Client(spec) as client:
            with pytest.raises(Compacted) as refused:
                next(client.subscribe(1, idle_timeout=5))
            assert refused.value.earliest > 1
            snap = wait_for("a snapshot", lambda: client.snapshot(timeout=10))
            app = Digest()
            app.restore(snap.state)
            assert app.count == snap.index > 0
            for delivery in client.subscribe(snap.index + 1, idle_timeout=5):
                app.apply(delivery)
                if delivery.index == 300:
                    break
        wait_for("all applied", lambda: all(n.state_machine.count == 300 for n in nodes))  # type: ignore[attr-defined]
        assert {(app.count, app.crc)} == _states([None, *nodes])
    finally:
        for node in nodes:
            node.stop()


def test_a_local_broadcast_delivered_inside_an_installed_snapshot_resolves(
    tmp_path: Path,
) -> None:
    """Review finding F5: a node that broadcast a payload, stopped hearing its peers, and
    came back by installing a snapshot that covers the payload's delivery never saw that
    delivery: its future waited forever. It resolves now, from the session table."""
    spec = secure_cluster(tmp_path, 3)
    nodes = {i: _node(i, spec, tmp_path).start() for i in (1, 2, 3)}
    try:
        nodes[1].broadcast(b"warmup", timeout=30)

        def agreed() -> int | None:
            seen = {node.replica.leader for node in nodes.values()}
            return seen.pop() if len(seen) == 1 and None not in seen else None

        lead = wait_for("a leader all agree on", agreed)
        lag, other = (i for i in nodes if i != lead)
        leader, lagger = nodes[lead], nodes[lag]
        lagger.broadcast(b"first", timeout=30)  # opens the lagging node's own session
        wait_for("the leader applied it", lambda: leader.state_machine.count == 2)  # type: ignore[attr-defined]
        wait_for("the lagger follows the leader", lambda: lagger.replica.leader == lead)
        # The lagger stops hearing its peers (it still sends): its next broadcast is
        # forwarded and chosen, but it does not learn so.
        hear = lagger._on_frame
        deaf = {"on": True}
        lagger._on_frame = lambda ident, frame, principal="": (  # type: ignore[method-assign]
            None if deaf["on"] else hear(ident, frame, principal)
        )
        future = lagger.submit(b"mine")
        wait_for("the leader applied it", lambda: leader.state_machine.count == 3)  # type: ignore[attr-defined]
        for k in range(200):
            leader.broadcast(b"q%05d" % k, timeout=30)
        wait_for(
            "the others compacted past it",
            lambda: min(nodes[i].status().floor for i in (lead, other)) > 20,
        )
        deaf["on"] = False
        wait_for(
            "the lagger caught up (by install)",
            lambda: lagger.state_machine.count == leader.state_machine.count,  # type: ignore[attr-defined]
        )
        assert lagger.state_machine.restored_from > 3  # type: ignore[attr-defined]
        result = future.result(timeout=30)
        assert result.index == 3 and result.result is None
    finally:
        for node in nodes.values():
            node.stop()


def test_a_snapshot_that_finds_no_file_descriptor_is_put_off(
    cluster: tuple[object, list[Node | None]],
) -> None:
    """Out of file descriptors (a flood of connections), a snapshot cannot be written: the
    node logs it, does not compact, and goes on; the next snapshot is taken as usual
    (review finding: it used to end the node as a disk failure)."""
    _, nodes = cluster
    node1 = nodes[1]
    assert node1 is not None
    real_save = node1.snapshots.save
    failures: list[int] = []

    def no_files(*args: object) -> object:
        if not failures:
            failures.append(1)
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_save(*args)  # type: ignore[arg-type]

    node1.snapshots.save = no_files  # type: ignore[method-assign]
    for k in range(300):
        node1.broadcast(b"q%05d" % k, timeout=30)
    assert failures == [1]
    wait_for("a snapshot after the failed one", lambda: node1.status().snapshot_slot > 0)
    assert node1.failure is None and node1._thread is not None and node1._thread.is_alive()
