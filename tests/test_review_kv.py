"""Review of the coordination service (paxos kv): attacks that once broke it.

Real node processes (``paxos node --service coord``, CURVE) where the defect lives in
the runtime; unit tests where it lives in pure code. Each test failed before its fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import ProcessCluster

from broadcast.client import Client
from broadcast.kv import KvClient
from broadcast.protocol import Query, QueryRefused
from paxos.codec import decode, encode

pytestmark = pytest.mark.integration

#: The largest index: a query that waits for it is held until its deadline.
NEVER = 2**63 - 1


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    """One coordination cluster for the attacks that leave it running."""
    procs = ProcessCluster(tmp_path_factory.mktemp("kv"), extra=("--service", "coord"))
    try:
        procs.leader()
        yield procs
    finally:
        procs.stop()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _replies(client: Client, wait_s: float) -> list[object]:
    out: list[object] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        out += [decode(frame) for _, frame in client.transport.poll(50)]
    return out


def test_held_queries_are_bounded_in_bytes(coord: ProcessCluster) -> None:
    """A subscriber sends queries of 2 MiB that wait for an index never reached: the
    node held every one (64 per connection, 4096 in all: 8 GiB of payloads at the
    frame limit), so one client key could exhaust a node's memory."""
    node = coord.cluster.ids[0]
    pid = coord.procs[node].pid
    before = _rss_mib(pid)
    big = b"\x91" + b"x" * (2 * 1024 * 1024)
    with coord.client() as client:
        for nonce in range(1, 65):
            client.transport.send(node, encode(Query(nonce, big, NEVER, 60_000)))
            if nonce % 8 == 0:
                time.sleep(0.05)  # within the connection's queue: every one arrives
        replies = _replies(client, 2.0)
        grown = _rss_mib(pid) - before
        busy = [r for r in replies if isinstance(r, QueryRefused) and r.reason == "busy"]
        assert grown < 48, f"the node holds {grown:.0f} MiB more for 128 MiB of held queries"
        assert len(busy) >= 56, f"only {len(busy)} of 64 oversized held queries were refused"
    with KvClient(coord.cluster, timeout=20) as kv:
        assert kv.put("after/held", b"ok") > 0  # and the node serves on
