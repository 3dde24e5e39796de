"""The coordination service with real processes: a paused lock holder is fenced off, an
election hands over when its leader dies, a watch resumes across a node failure.

Nodes are ``paxos node --service coord`` processes (CURVE); the applications are
``tests/kv_actor.py`` processes, each with its own session, which the test pauses
(SIGSTOP: a GC pause, a VM migration) and kills.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from procs import ProcessCluster, wait_for

from broadcast.kv import KvClient

pytestmark = pytest.mark.integration

ACTOR = Path(__file__).with_name("kv_actor.py")
TTL_MS = 1500


class Actor:
    """A kv_actor.py process: send it a request, read its answer (with a deadline)."""

    def __init__(self, procs: ProcessCluster, name: str, ttl_ms: int = TTL_MS) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(ACTOR), procs.cluster.argument(), name, str(ttl_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(procs.tmp / f"{name}.log").open("ab"),
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, **request: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def answer(self, what: str, deadline_s: float = 60.0) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=deadline_s)
        except queue.Empty:
            raise AssertionError(
                f"{self.name}: no answer within {deadline_s:.0f}s ({what})"
            ) from None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def has_answer(self) -> bool:
        return not self.lines.empty()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def coord_cluster(tmp_path: Path) -> ProcessCluster:
    procs = ProcessCluster(tmp_path, extra=("--service", "coord"))
    procs.leader()
    return procs


def test_a_paused_lock_holder_loses_the_lock_and_its_stale_token_is_refused(
    tmp_path: Path,
) -> None:
    procs = coord_cluster(tmp_path)
    actors: list[Actor] = []
    try:
        holder, contender = Actor(procs, "holder"), Actor(procs, "contender")
        actors += [holder, contender]
        holder.send(op="lock", name="printer")
        first = holder.answer("the first grant")
        assert first["locked"] == "printer"
        fence = ["printer", first["token"]]
        holder.send(op="put", key="printer/job", value="holder-1", fence=fence)
        assert holder.answer("a fenced write while holding")["version"] > first["token"]

        contender.send(op="lock", name="printer")  # queued behind the holder
        # The holder pauses (SIGSTOP: its renewals stop too) for longer than its lease.
        holder.signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        second = contender.answer("no grant after the holder's lease ran out", deadline_s=15)
        assert second["locked"] == "printer"
        assert second["token"] > first["token"]  # fencing tokens only grow
        # Not before the lease: a grant while the holder's lease still ran would be a bug.
        assert time.monotonic() - paused_at >= TTL_MS / 1000.0 * 0.9
        contender.send(
            op="put", key="printer/job", value="contender", fence=["printer", second["token"]]
        )
        assert "version" in contender.answer("the new holder's fenced write")

        # The former holder wakes up believing it holds the lock, and writes.
        holder.signal(signal.SIGCONT)
        holder.send(op="put", key="printer/job", value="holder-2", fence=fence)
        late = holder.answer("the resumed holder's write")
        assert late.get("refused") == "fence: stale token", (
            f"the resumed holder's write with its stale token was not refused: {late}"
        )
        with KvClient(procs.cluster, timeout=30) as kv:
            found = kv.get("printer/job")
            assert found is not None and found[0] == b"contender"
            info = kv.lock_info("printer")
            assert info is not None and info.token == second["token"]
        holder.send(op="session")
        assert holder.answer("the holder's session")["lost"] is True
    finally:
        for actor in actors:
            actor.stop()
        procs.stop()


def test_an_election_hands_over_when_the_leader_process_dies(tmp_path: Path) -> None:
    procs = coord_cluster(tmp_path)
    actors: list[Actor] = []
    try:
        a, b = Actor(procs, "app-a"), Actor(procs, "app-b")
        actors += [a, b]
        a.send(op="campaign", name="scheduler", identity="10.0.0.1:8080")
        elected = a.answer("a's election")
        b.send(op="campaign", name="scheduler", identity="10.0.0.2:8080")
        with KvClient(procs.cluster, timeout=30) as kv:
            assert kv.leader("scheduler") == (b"10.0.0.1:8080", elected["term"])
            assert not b.has_answer()  # b waits while a leads
            a.signal(signal.SIGKILL)  # the leader process dies
            successor = b.answer("b's election after a died")
            assert successor["term"] > elected["term"]
            now = kv.leader("scheduler")
            assert now is not None and now[0] == b"10.0.0.2:8080"
            # Through the log too, not one replica's view: b's fenced write goes in.
            b.send(op="put", key="scheduler/owner", value="b",
                   fence=["scheduler", successor["term"]])
            assert "version" in b.answer("the new leader's fenced write")
            # Every replica agrees on who leads and since when.
            for node in procs.cluster.ids:
                with procs.client() as client:
                    wait_for(
                        f"node {node} to see b lead",
                        lambda n=node: (s := client.status(n, timeout=1))
                        and s.delivered >= successor["term"],
                    )
    finally:
        for actor in actors:
            actor.stop()
        procs.stop()


def test_a_watch_resumes_after_its_node_fails_without_a_gap_or_a_repeat(
    tmp_path: Path,
) -> None:
    procs = coord_cluster(tmp_path)
    try:
        with KvClient(procs.cluster, timeout=60) as writer, KvClient(
            procs.cluster, timeout=60
        ) as reader:
            expected: list[tuple[int, str, bytes]] = []
            watch = reader.watch("w/", since=1)
            seen: list[tuple[int, str, bytes | None]] = []

            def put(k: int) -> None:
                key = f"w/{k % 7}"
                value = b"v%d" % k
                expected.append((writer.put(key, value), key, value))
                writer.put(f"other/{k}", b"not watched")

            def drain(until: int) -> None:
                def caught_up() -> bool:
                    for change in watch.poll(200):
                        seen.append((change.index, change.key, change.value))
                    return bool(seen) and seen[-1][0] >= until

                wait_for(f"the watch to reach {until}", caught_up)

            for k in range(20):
                put(k)
            drain(expected[-1][0])
            serving = watch.client._target  # the node the watch reads from
            procs.kill(serving)
            for k in range(20, 40):
                put(k)
            drain(expected[-1][0])
            procs.start(serving)
            for k in range(40, 50):
                put(k)
            drain(expected[-1][0])
            watch.close()
        first = next(
            (k for k, (a, b) in enumerate(zip(seen, expected, strict=False)) if a != b),
            min(len(seen), len(expected)),
        )
        assert seen == expected, (
            f"the watch saw {len(seen)} changes, {len(expected)} were made; from position "
            f"{first} it saw {seen[first:first + 2]}, not {expected[first:first + 2]}"
        )
    finally:
        procs.stop()
