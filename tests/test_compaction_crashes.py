"""A crash at any step of snapshot-then-compact recovers: real node processes.

Each case kills one node's power (SIGKILL, then everything it had not synced is
dropped, see ``tests/mutant_node.py``) at one step of its first snapshot-then-compact
(:data:`mutant_node.CRASH_STEPS`), restarts it, and checks that it serves again
with the same state as the others: every acknowledged broadcast delivered once, at
its index, on every node. The simulator crashes between the same steps in every
seed (paxos/sim/node.py); this is the runtime's file handling under the same cuts.

A node keeps its whole history of deliveries (the retention holds all of it) unless it
installed a peer's snapshot: then it holds what came after the snapshot. The victim
always comes back that way; a survivor does too if it was ever behind the others'
compaction floor (slots a peer compacted can only come from its snapshot): one that
came up late would be (so the load waits for every node to follow a leader), and one
may fall that far behind under load
(:func:`test_a_survivor_that_came_up_late_installs_a_snapshot_and_serves_from_there`
makes that happen on purpose).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from forge import log_events
from mutant_node import CRASH_STEPS
from procs import ProcessCluster, wait_for

from broadcast.client import Client
from broadcast.errors import Compacted
from paxos.types import Command

pytestmark = pytest.mark.integration

#: Small thresholds: the first snapshot comes after a few dozen deliveries, and the log
#: rolls segments every few kilobytes so that compaction has segments to delete. So does
#: the history: its retention (the default, far more than a run delivers) must keep all
#: of them, and a retention that deleted one would show.
SMALL = (
    "--snapshot-entries", "30", "--wal-segment-bytes", "4096", "--compact-keep-slots", "4",
    "--history-segment-bytes", "4096",
)
VICTIM = 2


@pytest.mark.parametrize("step", CRASH_STEPS[1:])
def test_a_node_killed_at_a_step_of_snapshot_then_compact_recovers(
    tmp_path: Path, step: str
) -> None:
    crash_and_recover(tmp_path, step)


def test_a_node_killed_before_its_snapshot_is_renamed_recovers(tmp_path: Path) -> None:
    """The first step on its own (tests/runtime_mutants.py names it: a node that compacts
    its log before the snapshot is durable is caught here)."""
    crash_and_recover(tmp_path, CRASH_STEPS[0])


def test_a_survivor_that_came_up_late_installs_a_snapshot_and_serves_from_there(
    tmp_path: Path,
) -> None:
    """A survivor that starts only once the other survivor has compacted can catch up from
    nothing but that peer's snapshot (what CI once met by chance, under load): it serves
    its history from there on, and the peer that never fell behind serves all of it."""
    late, steady = 3, 1
    orders, installed = crash_and_recover(tmp_path, "after-snapshot-rename", late=late)
    assert min(orders[late]) > 1 and min(orders[late]) - 1 in installed[late]
    assert min(orders[steady]) == 1 and not installed[steady]


def crash_and_recover(
    tmp_path: Path, step: str, late: int | None = None
) -> tuple[dict[int, dict[int, Command]], dict[int, set[int]]]:
    """Kill :data:`VICTIM` at ``step``, restart it, check every node; returns what each
    node delivered (index -> command) and the delivery indexes of the snapshots each
    installed. ``late`` (a survivor) starts only once the other survivor has compacted."""
    ids = (1, 2, 3)
    procs = ProcessCluster(
        tmp_path,
        power_cuts=True,
        extra=SMALL,
        crash_steps={VICTIM: step},
        start=[n for n in ids if n != late],
    )
    starter = None
    done = threading.Event()  # the test is over: a late node not yet started never is
    try:
        leader = procs.leader()
        with Client(procs.cluster) as client:
            for node in list(procs.procs):
                # Every node started follows a leader before the load begins: one still
                # connecting would miss the first accepts and, once its peers compacted,
                # come back by installing a snapshot; the victim would then die at that
                # snapshot's rename instead of a step of its own snapshot-then-compact.
                wait_for(
                    f"node {node} to follow a leader",
                    lambda n=node: (s := client.status(n, timeout=1)) and s.leader_ok,
                )
        if late is not None:
            steady = next(n for n in ids if n not in (VICTIM, late))
            if leader != steady:
                # The other survivor leads: it compacts at its first snapshot whatever
                # the victim does (a follower would wait to learn that slots are chosen).
                with Client(procs.cluster) as client:
                    client.transfer_leader(steady, timeout=30)
            starter = threading.Thread(
                target=_start_once_compacted, args=(procs, late, steady, done), daemon=True
            )
            starter.start()
        acked: list[tuple[int, bytes]] = []
        with Client(procs.cluster, client_id="load", timeout=60) as client:
            for k in range(120):
                payload = b"k%04d-" % k + b"z" * 300
                acked.append((client.broadcast(payload).index, payload))
                if not procs.alive(VICTIM):
                    break
            wait_for(f"node {VICTIM} to die at {step}", lambda: not procs.alive(VICTIM))
            procs.power_loss(VICTIM)
            if starter is not None:
                starter.join(60)
                assert late in procs.procs, f"node {late} was never started"
            for k in range(120, 200):  # the others go on (and compact) meanwhile
                payload = b"k%04d-" % k + b"z" * 300
                acked.append((client.broadcast(payload).index, payload))
        procs.start(VICTIM)
        with Client(procs.cluster, client_id="after", timeout=60) as client:
            last = client.broadcast(b"after the restart").index
        with Client(procs.cluster) as client:
            for node in procs.cluster.ids:
                wait_for(
                    f"node {node} to deliver {last}",
                    lambda n=node: (s := client.status(n, timeout=1)) and s.delivered >= last,
                    30,  # a restarted node catches up 200 entries in seconds; a planted
                )        # bug that loses its log is caught by this wait (half a minute)
        orders = {node: _order(procs, node, last) for node in procs.cluster.ids}
        installed = {node: _installed(procs, node) for node in procs.cluster.ids}
        # Every index each node holds agrees, and every node holds the end.
        for node, order in orders.items():
            assert max(order) == last and sorted(order) == list(range(min(order), last + 1))
            for index, command in order.items():
                for other in orders.values():
                    assert other.get(index, command) == command, (node, index)
        for index, payload in acked:
            for order in orders.values():
                if index in order:
                    assert order[index].payload == payload
        # The retention keeps it all: a node's history starts at 1, or just after a
        # snapshot it installed from a peer (the victim's always does; a survivor's if
        # it fell behind the others' compaction floor). One node never fell behind.
        for node, order in orders.items():
            start = min(order)
            assert start == 1 or start - 1 in installed[node], (
                f"node {node} serves its history from {start} on, but installed no "
                f"snapshot of index {start - 1} (installed: {sorted(installed[node])})"
            )
        assert any(min(order) == 1 for order in orders.values()), "no node holds it all"
        with Client(procs.cluster) as client:
            status = client.status(VICTIM, timeout=5)
        assert status is not None and status.snapshot_index > 0
        return orders, installed
    finally:
        done.set()
        if starter is not None:
            starter.join()  # before stop(): it stops what the thread started
        procs.stop()


def _start_once_compacted(
    procs: ProcessCluster, late: int, leader: int, done: threading.Event
) -> None:
    """Start ``late`` once ``leader`` has compacted: the slots it needs first are gone
    from the log of the node it asks for them."""
    with Client(procs.cluster) as client:
        wait_for(
            f"node {leader} to compact",
            lambda: done.is_set() or ((s := client.status(leader, timeout=1)) and s.floor > 0),
        )
    if not done.is_set():
        procs.start(late)


def _installed(procs: ProcessCluster, node: int) -> set[int]:
    """The delivery indexes of the snapshots ``node`` installed from peers (its log)."""
    return {e["index"] for e in log_events(procs.log_file(node), "snapshot.installed")}


def _order(procs: ProcessCluster, node: int, last: int) -> dict[int, Command]:
    """What ``node`` delivered up to ``last``, from the earliest index it retains."""
    out: dict[int, Command] = {}
    start = 1
    with Client(procs.cluster) as client:
        try:
            next(client.subscribe(start, node=node, idle_timeout=5))
        except Compacted as exc:
            start = exc.earliest
        for delivery in client.subscribe(start, node=node, idle_timeout=5):
            out[delivery.index] = delivery.command
            if delivery.index >= last:
                break
    return out
