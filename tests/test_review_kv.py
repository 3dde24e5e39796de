"""Review of the coordination service (paxos kv): attacks that once broke it.

Real node processes (``paxos node --service coord``, CURVE) where the defect lives in
the runtime; unit tests where it lives in pure code. Each test failed before its fix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import ProcessCluster, wait_for

from broadcast.client import Client
from broadcast.kv import KvClient
from broadcast.kv.service import CoordService
from broadcast.kv.wire import decode_keys, encode_query
from broadcast.protocol import Query, QueryAnswer, QueryRefused
from paxos.codec import decode, encode
from paxos.coord.commands import Put
from paxos.coord.commands import encode as encode_command
from paxos.types import Command, Delivery

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
        busy: list[QueryRefused] = []

        def refused() -> bool:
            busy.extend(
                r for r in _replies(client, 0.1)
                if isinstance(r, QueryRefused) and r.reason == "busy"
            )
            return len(busy) >= 56

        # (a node that holds them all never says busy: this fails after its deadline)
        wait_for("56 of 64 oversized held queries refused as busy", refused, 30)
        grown = _rss_mib(pid) - before
        assert grown < 48, f"the node holds {grown:.0f} MiB more for 128 MiB of held queries"
    with KvClient(coord.cluster, timeout=20) as kv:
        assert kv.put("after/held", b"ok") > 0  # and the node serves on


def test_held_watches_do_not_stall_deliveries(coord: ProcessCluster) -> None:
    """Every held watch was evaluated again after every delivery, each time scanning the
    whole change log from its start: 2048 idle watches of a subscriber (32 connections
    x 64) over a full change log made every write wait about a second (measured 4 s with
    2048 per node). Asked again with nothing new, a watch now walks nothing: it resumes
    where its last walk ended. And held watches still answer when their change comes."""
    service = _filled_service(4000)
    machine = service.machine
    walked: list[int] = []
    changes = machine.changes

    def counting(prefix: str = "", since: int = 1, limit: int = 1000) -> object:
        walked.append(machine.index + 1 - since)  # indexes from `since` to the end
        return changes(prefix, since, limit)

    machine.changes = counting  # type: ignore[method-assign]
    watch = encode_query("changes", "zzz/", machine.change_floor, 0)
    assert service.query(watch, False) is None  # nothing under zzz/: held
    assert walked[-1] > 3000  # the first look walks the log once
    for index in range(4001, 4011):  # deliveries follow; the watch is asked again each time
        command = encode_command(Put(f"other/{index}", b"v", 0, None))
        service.apply(Delivery(index, index, Command("c#1", index, command)))
        assert service.query(watch, False) is None
        assert walked[-1] <= 1, f"asked again, the watch walked {walked[-1]} indexes"
    # The same on a live node: 2048 held watches, then a change under their prefix.
    with KvClient(coord.cluster, timeout=30) as kv:
        watchers = [coord.client() for _ in range(32)]
        try:
            first = kv.applied_index() + 1
            query = encode_query("changes", "zzz/", first, 0)
            for c in watchers:
                for node in coord.cluster.ids:
                    for nonce in range(1, 65):
                        c.transport.send(node, encode(Query(nonce, query, 0, 60_000)))
            kv.put("zzz/x", b"1")
            got = wait_for(
                "the held watches to be answered",
                lambda: [r for r in _replies(watchers[0], 0.2) if isinstance(r, QueryAnswer)],
            )
            assert got
        finally:
            for c in watchers:
                c.close()


def test_a_watch_asked_again_gets_the_answer_a_fresh_node_gives() -> None:
    """The walk a held watch resumes (finding above) changes no answer: at every index,
    every watch asked of a service that was asked it before (after each delivery, as a
    held one is) gets the bytes a service never asked gives, compaction included."""
    import random

    from paxos.coord.commands import Delete, Open
    from paxos.coord.machine import CoordLimits

    rng = random.Random(7)
    limits = CoordLimits(max_changes=64, max_change_bytes=4096)
    asked, fresh = CoordService(limits), CoordService(limits)
    watches = [
        encode_query("changes", prefix, since, skip)
        for prefix in ("", "a", "a/", "b/1", "zzz", "x" * 600)
        for since in (1, 5, 40, 90)
        for skip in (0, 1, 3)
    ]
    for index in range(1, 200):
        roll = rng.random()
        key = f"{rng.choice('ab')}/{rng.randrange(4)}"
        if roll < 0.1:
            command = encode_command(Open("s", 1000))
        elif roll < 0.3:
            command = encode_command(Delete(key, None))
        else:
            command = encode_command(Put(key, b"v" * rng.randrange(40), 0, None))
        delivery = Delivery(index, index, Command("c#1", index, command))
        asked.apply(delivery)
        fresh.machine.restore(asked.machine.snapshot())
        fresh._scanned.clear()
        for final in (False, True):
            for watch in watches:
                assert asked.query(watch, final) == fresh.query(watch, final), (index, watch)
                fresh._scanned.clear()


def test_a_lock_wait_outlasts_an_idle_cluster(coord: ProcessCluster) -> None:
    """Waiting for a lock asked a node for the lock's state once the node had applied a
    newer index, and gave up with ClusterUnavailable when none came within the client's
    timeout: in a quiet cluster (renewals every TTL/3 only) a healthy wait failed long
    before its own timeout, with a client timeout below TTL/3 or a long TTL."""
    from broadcast.kv import WaitTimeout

    with KvClient(coord.cluster, ttl_ms=10_000, timeout=30) as holder, KvClient(
        coord.cluster, ttl_ms=10_000, timeout=1
    ) as waiter:
        lock = holder.lock("review/quiet")
        start = time.monotonic()
        with pytest.raises(WaitTimeout):
            waiter.lock("review/quiet", timeout=3)
        assert time.monotonic() - start >= 2.9
        lock.release()
        # Free now: the waiter takes it, and it is the waiter's.
        again = waiter.lock("review/quiet", timeout=3)
        info = waiter.lock_info("review/quiet")
        assert info is not None and info.holder == waiter.session and info.token == again.token
        again.release()


def test_close_returns_soon_when_the_cluster_is_gone(tmp_path: Path) -> None:
    """KvClient.close() tried to close its session for the client's whole timeout (30 s
    by default) when no node was left, after waiting for its renewer: Ctrl-C on a
    ``paxos kv put --ephemeral`` hung that long. The close is best effort (the lease
    ends the session anyway): it gives up within a few seconds."""
    procs = ProcessCluster(tmp_path, extra=("--service", "coord"))
    try:
        procs.leader()
        kv = KvClient(procs.cluster, ttl_ms=3000, timeout=30)
        kv.put("review/eph", b"1", ephemeral=True)
        for node in procs.cluster.ids:
            procs.kill(node)
        start = time.monotonic()
        kv.close()
        took = time.monotonic() - start
        assert took < 8, f"close() took {took:.0f}s with every node gone"
    finally:
        procs.stop()


def test_kv_cli_bad_arguments_are_one_line_errors(coord: ProcessCluster) -> None:
    """Each of these ended ``paxos kv`` with a traceback: a fence token of non-ASCII
    digits (int() refused what isdigit() let through), numbers beyond 64 bits (msgpack
    could not encode them), a key that is not UTF-8, and a COMMAND for ``paxos kv
    lock`` that does not exist (after the lock was taken)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PAXOS_CLUSTER": coord.cluster.argument()}
    huge = "9" * 25
    cases: list[list[str | bytes]] = [
        ["put", "--fence", "lock:\u00b2", "k", "v"],
        ["put", "--fence", f"lock:{huge}", "k", "v"],
        ["cas", "k", huge, "v"],
        ["watch", "--since", huge],
        ["put", "--ttl-ms", huge, "--ephemeral", "k", "v"],
        ["get", b"\xff"],
        ["keys", b"\xff"],
        ["put", "--timeout", "nan", "k", "v"],
        ["lock", "review/cli", "--", "/nonexistent/command"],
    ]
    for args in cases:
        out = subprocess.run(
            [sys.executable, "-m", "broadcast", "kv", *args],
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        )
        errors = [line for line in out.stderr.splitlines() if not line.startswith("{")]
        assert out.returncode != 0 and len(errors) == 1 and errors[0].startswith("Error"), (
            f"paxos kv {args}: exit {out.returncode}, stderr:\n{out.stderr[-1500:]}"
        )
    with KvClient(coord.cluster, timeout=20) as kv:
        assert kv.lock_info("review/cli") is None  # the lock went with the failed command


def _filled_service(keys: int) -> CoordService:
    service = CoordService()
    for i in range(1, keys + 1):
        command = encode_command(Put(f"k/{i:07d}", b"", 0, None))
        service.apply(Delivery(i, i, Command("c#1", i, command)))
    return service


def test_a_keys_query_does_not_walk_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """``keys`` filtered and sorted every key of the store for every query (17 ms at
    200,000 keys, even for a prefix with none under it), in the node's loop: a burst of
    4096 such queries in one read stalled a node for over a minute. Sorted once (and
    kept up to date with the keys added and removed), a query costs a bisection and its
    answer: here the store is sorted once over 300 queries and 300 puts."""
    import paxos.coord.machine as machine_module

    sorts: list[int] = []

    def counting_sorted(items: object, **kwargs: object) -> list[object]:
        result = sorted(items, **kwargs)  # type: ignore[call-overload]
        sorts.append(len(result))
        return result

    monkeypatch.setattr(machine_module, "sorted", counting_sorted, raising=False)
    service = _filled_service(20_000)
    nothing = encode_query("keys", "zzz/")
    index = service.machine.index
    for k in range(300):
        index += 1
        command = encode_command(Put(f"k/new-{k}", b"", 0, None))
        service.apply(Delivery(index, index, Command("c#1", index, command)))
        service.query(nothing, True)
    big = [n for n in sorts if n > 1000]
    assert len(big) <= 1, f"the keys were sorted {len(big)} times for 300 queries"
    assert decode_keys(service.query(encode_query("keys", "k/new-29"), True)) == [
        "k/new-29", *(f"k/new-{k}" for k in range(290, 300))
    ]


def test_keys_stay_right_as_keys_come_and_go() -> None:
    """The sorted keys (finding above) follow every put, delete, ephemeral key that
    vanishes and restore: a listing equals the sorted filter at every index."""
    import random

    from paxos.coord.commands import Delete, Expire, Open
    from paxos.coord.machine import CoordMachine

    rng = random.Random(3)
    service = CoordService()
    sessions: list[int] = []
    prefixes = ["", "a", "a/1", "b/", "c"]
    for index in range(1, 3000):
        roll = rng.random()
        key = f"{rng.choice('abc')}/{rng.randrange(60)}"
        if roll < 0.05:
            command = encode_command(Open("s", 1000))
        elif roll < 0.08 and sessions:
            s = sessions.pop(rng.randrange(len(sessions)))
            info = service.machine.session(s)
            command = encode_command(Expire(s, info.last if info else 0))
        elif roll < 0.4:
            command = encode_command(Delete(key, None))
        else:
            owner = rng.choice(sessions) if sessions and roll < 0.55 else 0
            command = encode_command(Put(key, b"v", owner, None))
        result = service.apply(Delivery(index, index, Command("c#1", index, command)))
        if result.session and result.reason == "" and roll < 0.05:
            sessions.append(result.session)
        if index % 500 == 0:
            restored = CoordService()
            restored.restore(service.snapshot())
            service = restored
        if rng.random() < 0.3:
            m: CoordMachine = service.machine
            for prefix in prefixes:
                expected = sorted(k for k in m._kv if k.startswith(prefix))
                assert m.keys(prefix) == expected, (index, prefix)


def test_a_result_is_not_forgotten_for_an_unknown_one() -> None:
    """A call whose result did not come resends to every node; one that has it answers
    with the result, one that restarted since (its cache empty) with "committed,
    result unknown". Read in that order in one poll, the unknown replaced the result,
    and the call raised OutcomeUnknown although the result had arrived."""
    from broadcast.protocol import SubmitResults

    client = Client.__new__(Client)
    client._results = {}
    client._keep_results(SubmitResults("app#1", ((7, 40, True, b"result"),)))
    client._keep_results(SubmitResults("app#1", ((7, 40, False, b""),)))
    assert client._results[("app#1", 7)] == (40, True, b"result")


def test_a_long_listing_is_cut_not_refused() -> None:
    """``keys`` answered up to 10,000 keys whatever their length: 10,000 keys of 200
    bytes made a 2 MB answer, which the node refuses as larger than a payload may be
    (QueryFailed: "answer too large"), so ``paxos kv keys`` failed on such a store
    instead of listing. A listing is cut by bytes too (like a watch page)."""
    from broadcast.kv.wire import WATCH_ANSWER_BYTES, decode_keys

    service = CoordService()
    for i in range(1, 10_001):
        command = encode_command(Put(f"{i:06d}/" + "k" * 193, b"", 0, None))
        service.apply(Delivery(i, i, Command("c#1", i, command)))
    answer = service.query(encode_query("keys", ""), True)
    assert answer is not None and len(answer) <= WATCH_ANSWER_BYTES + 1024, len(answer)
    listed = decode_keys(answer)
    assert listed and listed == service.machine.keys("")[: len(listed)]


def test_a_lock_excludes_the_other_threads_of_its_client(coord: ProcessCluster) -> None:
    """KvClient is thread-safe, but its lock belonged to its session only: a second
    thread's lock() of a held lock returned at once (the session held it), both threads
    ran the critical section together, and the first to release it let it go under the
    other, whose fenced writes were then refused ("fence: lock not held")."""
    import threading

    inside: list[int] = []
    overlaps: list[str] = []
    refused: list[str] = []
    with KvClient(coord.cluster, timeout=30) as kv:

        def work(me: int) -> None:
            for _ in range(3):
                with kv.lock("review/threads", timeout=20) as lock:
                    inside.append(me)
                    if len(inside) > 1:
                        overlaps.append(f"threads {inside} inside at once")
                    try:
                        kv.put("review/threads/owner", b"%d" % me, fence=lock.fence)
                    except Exception as exc:
                        refused.append(repr(exc))
                    time.sleep(0.05)  # stay inside a moment: a second thread would be seen
                    inside.remove(me)

        threads = [threading.Thread(target=work, args=(me,)) for me in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not overlaps and not refused, (overlaps[:2], refused[:2])
        assert kv.lock_info("review/threads") is None  # and nobody holds it afterwards
