"""The public API in one process: embedded nodes with a state machine, the client, asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import wait_for

from broadcast import Client, ConfigError, Delivery, Node, local_cluster
from broadcast.commands import free_base_port


class Sum:
    def __init__(self) -> None:
        self.total = 0
        self.seen: list[int] = []

    def apply(self, delivery: Delivery) -> int:
        self.seen.append(delivery.index)
        self.total += int(delivery.command.payload)
        return self.total


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    cluster = local_cluster(3, free_base_port(3))
    started = [
        Node(i, cluster, tmp_path / f"n{i}", state_machine=Sum(), fsync=False).start()
        for i in cluster.ids
    ]
    try:
        yield started
    finally:
        for node in started:
            node.stop()


def test_broadcast_returns_index_and_local_result_and_all_replicas_agree(
    nodes: list[Node],
) -> None:
    first = nodes[0].broadcast(b"5", timeout=30)
    second = nodes[1].broadcast(b"7", timeout=30)
    assert (first.index, first.result) == (1, 5)
    assert (second.index, second.result) == (2, 12)
    wait_for("all replicas applied", lambda: all(n.state_machine.total == 12 for n in nodes))
    assert all(n.state_machine.seen == [1, 2] for n in nodes)  # type: ignore[attr-defined]


def test_concurrent_broadcasts_from_many_threads(nodes: list[Node]) -> None:
    results = []
    lock = threading.Lock()

    def worker(node: Node) -> None:
        for _ in range(50):
            r = node.broadcast(b"1", timeout=30)
            with lock:
                results.append(r.index)

    threads = [threading.Thread(target=worker, args=(n,)) for n in nodes for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 301))
    wait_for("all applied", lambda: all(n.state_machine.total == 300 for n in nodes))


def test_asyncio_broadcast_and_delivery_callbacks(nodes: list[Node]) -> None:
    seen: list[int] = []
    nodes[2].on_deliver(lambda d: seen.append(d.index))

    async def main() -> list[int]:
        results = await asyncio.gather(*(nodes[0].broadcast_async(b"2") for _ in range(20)))
        return sorted(r.index for r in results)

    assert asyncio.run(main()) == list(range(1, 21))
    wait_for("callbacks", lambda: len(seen) == 20)
    assert seen == list(range(1, 21))


def test_client_session_resumes_and_subscribe_reads_from_any_index(nodes: list[Node]) -> None:
    spec = nodes[0].cluster.spec()
    with Client(spec, client_id="app") as client:
        committed = client.broadcast_many([b"1", b"2", b"3"])
    assert [c.seq for c in committed] == [1, 2, 3]
    with Client(spec, client_id="app") as again:  # a new process reusing the client id
        assert again.broadcast(b"4").seq == 4
        stream = again.subscribe(from_index=2)
        got = [next(stream) for _ in range(3)]
    assert [d.index for d in got] == [2, 3, 4]
    assert [d.command.payload for d in got] == [b"2", b"3", b"4"]

    async def via_asyncio() -> tuple[int, list[int]]:
        with Client(spec) as c:
            index = (await c.broadcast_async(b"5")).index
            seen = [d.index async for d in c.subscribe_async(from_index=3, idle_timeout=1)]
            return index, seen

    assert asyncio.run(via_asyncio()) == (5, [3, 4, 5])


def test_unknown_node_id_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not in the cluster"):
        Node(7, local_cluster(3, 20000), tmp_path)
