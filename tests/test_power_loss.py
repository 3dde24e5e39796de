"""Acknowledged broadcasts survive power loss: real node processes, real crash points.

Jepsen found lost acknowledged writes in systems that answered before their fsync:
kill the power of a majority at the right moment, and what every member had
acknowledged was on no disk. Here the right moment is not left to luck: the nodes
run under fsync marks (``tests/mutant_node.py``), and the followers lose power in
the middle of the sync that makes one broadcast's accept durable (held for a second,
so that anything sent before it has long left the machine). A node that keeps the
contract has sent nothing about that accept yet, so the broadcast cannot have been
acknowledged; one that sends first gets it acknowledged on a vow that is then lost.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from procs import ProcessCluster, wait_for

from broadcast.client import Client, Committed
from paxos.types import Command

pytestmark = pytest.mark.integration

#: The payload whose accept the followers lose power in the middle of syncing.
MARKER = b"power-cut-while-this-accept-is-synced"


def test_acknowledged_broadcasts_survive_power_loss_of_the_whole_cluster(tmp_path: Path) -> None:
    """Every node loses power (the followers in the middle of a sync, then the leader);
    the followers restart first and commit without the old leader, then it rejoins.
    Every acknowledged broadcast is still delivered, at its index, on every node."""
    procs = ProcessCluster(tmp_path, power_cuts=True)
    acked: list[tuple[Committed, bytes]] = []
    box: dict[str, object] = {}
    try:
        leader = procs.leader()
        followers = [n for n in procs.cluster.ids if n != leader]
        with Client(procs.cluster, client_id="before") as client:
            acked.append((client.broadcast(b"before"), b"before"))
        for node in followers:
            procs.arm_crash(node, MARKER)

        def broadcast_marker() -> None:
            try:
                with Client(procs.cluster, client_id="marker", timeout=120) as client:
                    box["committed"] = client.broadcast(MARKER)
            except BaseException as exc:  # reported below
                box["error"] = exc

        worker = threading.Thread(target=broadcast_marker, daemon=True)
        worker.start()
        wait_for(
            "both followers to lose power at their crash point",
            lambda: not any(procs.alive(n) for n in followers),
        )
        for node in (leader, *followers):  # the leader too: the whole cluster is down
            procs.power_loss(node)
        # The old leader stays down while the followers elect and commit without it.
        for node in followers:
            procs.start(node)
        with Client(procs.cluster, client_id="after", timeout=120) as client:
            acked.append((client.broadcast(b"after"), b"after"))
        procs.start(leader)
        worker.join(180)
        assert not worker.is_alive(), "the marker broadcast never returned"
        assert "error" not in box, box["error"]
        committed = box["committed"]
        assert isinstance(committed, Committed)
        acked.append((committed, MARKER))
        count = max(c.index for c, _ in acked)
        orders = {node: procs.order(node, count) for node in procs.cluster.ids}
    finally:
        procs.stop()
    for node, order in orders.items():
        for c, payload in acked:
            delivered = order[c.index - 1] if c.index <= len(order) else None
            assert delivered == Command(c.client, c.seq, payload), (
                f"node {node} lost the acknowledged broadcast {payload!r} (index {c.index}): "
                f"it delivered {delivered} there"
            )
    assert len({tuple(order) for order in orders.values()}) == 1, orders
