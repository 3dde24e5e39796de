"""Real node processes on 127.0.0.1: ordering, failover, recovery, hostile frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq
from procs import ProcessCluster, wait_for

from broadcast.client import Client, Committed
from broadcast.wal import segment_name
from paxos.types import Command

pytestmark = pytest.mark.integration

MESSAGES = 2000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    procs = ProcessCluster(tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


def _broadcast_in_threads(
    cluster: ProcessCluster,
    names: list[str],
    count: int,
    during: threading.Event | None = None,
    window: int = 4096,
    committed: list[int] | None = None,
) -> dict[str, list[Committed]]:
    results: dict[str, list[Committed]] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        def progress(c: Committed) -> None:
            if committed is not None:
                committed.append(c.index)
            if during is not None and c.seq == count // 3:
                during.set()

        try:
            with Client(cluster.cluster, client_id=name, timeout=60, window=window) as client:
                payloads = (f"{name}-{i}".encode() for i in range(1, count + 1))
                results[name] = client.broadcast_many(payloads, on_commit=progress)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    return_threads = threads
    for t in return_threads:
        t.join(300)
    assert not errors, errors
    return results


def _check_total_order(
    orders: dict[int, list[Command]], acked: dict[str, list[Committed]], count: int
) -> None:
    reference = next(iter(orders.values()))
    for node, order in orders.items():
        assert order == reference, f"node {node} delivered a different sequence"
    seen = set()
    per_client: dict[str, list[int]] = {}
    for command in reference:
        key = (command.client, command.seq)
        assert key not in seen, f"duplicate delivery {key}"
        seen.add(key)
        per_client.setdefault(command.client, []).append(command.seq)
    for client, committed in acked.items():
        key = committed[0].client  # the session the cluster gave this client
        assert key.startswith(f"{client}#")
        assert per_client[key] == list(range(1, count + 1)), f"{client}: FIFO broken"
        for c in committed:
            # Every acknowledged message is in the order, at the index it was acknowledged with.
            assert reference[c.index - 1] == Command(key, c.seq, f"{client}-{c.seq}".encode())


def test_two_clients_one_total_order(cluster: ProcessCluster) -> None:
    cluster.leader()
    acked = _broadcast_in_threads(cluster, ["alice", "bob"], MESSAGES)
    total = 2 * MESSAGES
    orders = {n: cluster.order(n, total) for n in cluster.cluster.ids}
    assert all(len(o) == total for o in orders.values())
    _check_total_order(orders, acked, MESSAGES)


def test_leader_killed_mid_run_and_restarted(cluster: ProcessCluster) -> None:
    leader = cluster.leader()
    third = threading.Event()
    committed: list[int] = []
    box: dict[str, dict[str, list[Committed]]] = {}
    # A small window keeps the clients busy across the kill.
    worker = threading.Thread(
        target=lambda: box.setdefault(
            "acked",
            _broadcast_in_threads(
                cluster, ["alice", "bob"], MESSAGES, third, window=5, committed=committed
            ),
        )
    )
    worker.start()
    assert third.wait(120), "clients made no progress"
    cluster.kill(leader)
    at_kill = len(committed)
    assert at_kill < 2 * MESSAGES, "the run ended before the leader was killed"
    new_leader = cluster.leader(exclude=leader)
    assert new_leader != leader
    cluster.start(leader)  # restart from its data directory
    worker.join(300)
    acked = box["acked"]
    total = 2 * MESSAGES
    orders = {n: cluster.order(n, total) for n in cluster.cluster.ids}
    assert all(len(o) == total for o in orders.values()), {n: len(o) for n, o in orders.items()}
    _check_total_order(orders, acked, MESSAGES)


def test_restarted_node_recovers_and_catches_up(cluster: ProcessCluster) -> None:
    cluster.leader()
    victim = cluster.cluster.ids[0]
    with Client(cluster.cluster, client_id="c") as client:
        client.broadcast_many(b"before-%d" % i for i in range(50))
        cluster.kill(victim)
        client.broadcast_many(b"during-%d" % i for i in range(50))
        cluster.start(victim)
        client.broadcast_many(b"after-%d" % i for i in range(50))
    orders = {n: cluster.order(n, 150) for n in cluster.cluster.ids}
    assert orders[victim] == orders[cluster.cluster.ids[1]]
    assert len(orders[victim]) == 150


def _segment(cluster: ProcessCluster, node: int) -> Path:
    return cluster.data_dir(node) / "wal" / segment_name(1)


def test_torn_tail_recovers_and_corrupt_middle_is_refused(cluster: ProcessCluster) -> None:
    cluster.leader()
    node = cluster.cluster.ids[-1]
    with Client(cluster.cluster, client_id="c") as client:
        client.broadcast_many(b"m%d" % i for i in range(100))
        cluster.kill(node)
        segment = _segment(cluster, node)
        # A torn write: half a record header and some bytes at the tail.
        with segment.open("ab") as f:
            f.write(b"\x40\x00\x00\x00\x12\x34")
        cluster.start(node)
        client.broadcast_many(b"n%d" % i for i in range(20))
    assert len(cluster.order(node, 120)) == 120

    cluster.kill(node)
    data = bytearray(segment.read_bytes())
    first_length = int.from_bytes(data[16:20], "little")
    assert 16 + 8 + first_length < len(data), "expected more than one record in the log"
    # Flip a byte inside the first record (after the 16-byte segment header and
    # the 8-byte record header): valid records follow it, so it is not a torn tail.
    data[16 + 8 + 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "broadcast", "node", "--id", str(node),
             "--cluster", cluster.cluster.argument(), "--data-dir", str(cluster.data_dir(node))],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the node started on a log with a corrupted record in the middle")
    assert proc.returncode != 0
    error = proc.stderr.strip().splitlines()[-1]
    assert "corrupt" in error and str(segment) in error and "offset" in error, error


def test_hostile_frames_are_dropped_and_the_node_keeps_serving(cluster: ProcessCluster) -> None:
    cluster.leader()
    target = cluster.cluster.ids[0]
    ctx = zmq.Context()
    try:
        # A client the cluster lets in (the admin key), sending what no client should.
        sock = cluster.raw_socket(ctx, target)
        hostile = [
            b"",  # empty
            b"\xc1",  # never-used msgpack byte
            os.urandom(1000),  # noise
            msgpack.packb([1, 3, 2, [1, 1], 5, [["c", 1, b"x"]]])[:-3],  # truncated Accept
            msgpack.packb([99, 3]),  # unknown version
            msgpack.packb([1, 250, 1]),  # unknown type
            msgpack.packb([1, 64, "not a value"]),  # wrong-typed Submit
            msgpack.packb([1, 1, 2, [True, 1], 1]),  # bool where an int goes
            msgpack.packb([1, 4, 2, [1, 2], 1]),  # Accepted claiming to be node 2, from a client
            b"\xdd\xff\xff\xff\xff",  # array header claiming 4 billion items
            b"\x00\xff\xff\xff\x7fshort",  # an envelope whose length lies
            b"\x00" * (65 * 1024 * 1024),  # larger than any frame may be
        ]
        for frame in hostile:
            sock.send(frame)
        sock.send_multipart([b"a", b"b", b"c"])  # wrong number of parts
    finally:
        ctx.destroy(linger=0)
    with Client(cluster.cluster, client_id="after") as client:
        committed = client.broadcast(b"still serving")
    assert committed.index >= 1
    log = cluster.log_file(target)
    assert cluster.procs[target].poll() is None, "the node died"
    # The drop warnings are rate limited: the first at once, the rest counted; a clean
    # stop reports the count of those not logged yet.
    wait_for("a drop log line", lambda: "frame.dropped" in log.read_text(), 30)
    cluster.kill(target, signal.SIGTERM)
    drops = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if '"frame.dropped"' in line
    ]
    assert drops[-1]["total"] >= 8, drops
