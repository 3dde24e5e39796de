"""The coordination service over the network, on three nodes in this process (CURVE keys
from ``cluster_file``, node ``i`` in ``tmp/node<i>``, loopback only): results reaching
remote callers, retries answered from the result cache, held queries and their bounds,
state machines that cannot answer, and KvClient's recipes end to end.

Nothing here sleeps to let something happen: each test waits for the condition it needs
(``procs.wait_for``), with generous deadlines.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from procs import client_transport, secure_cluster, wait_for

from broadcast import Client, Node
from broadcast.answers import HeldQueries, ResultCache
from broadcast.client import ClusterUnavailable
from broadcast.errors import QueryFailed
from broadcast.kv import (
    CoordService,
    Cursor,
    KvClient,
    OutcomeUnknown,
    Refused,
    SessionLost,
    WaitTimeout,
    WatchCompacted,
)
from broadcast.kv.wire import decode_get, decode_result, encode_query
from broadcast.protocol import Query, QueryAnswer, QueryRefused, Submit, SubmitResults
from broadcast.spec import Cluster
from paxos.codec import decode, encode
from paxos.coord.commands import Cas, Put
from paxos.coord.commands import encode as coord
from paxos.coord.machine import Change, Changes, CoordLimits
from paxos.multi.config import ReplicaConfig
from paxos.types import Command

NODES = (1, 2, 3)


class Coord3:
    """Three nodes in this process, each replicating its own CoordService."""

    def __init__(
        self,
        tmp: Path,
        make: Callable[[int], Any] | None = None,
        setup: Callable[[Node], None] | None = None,
        **node_kw: Any,
    ) -> None:
        self.tmp = tmp
        self.spec: Cluster = secure_cluster(tmp, 3)
        self.make = make or (lambda i: CoordService())
        self.setup = setup
        self.node_kw = {"fsync": False, **node_kw}
        self.nodes: dict[int, Node] = {}
        self.services: dict[int, Any] = {}

    def start(self, i: int) -> Any:
        service = self.make(i)
        node = Node(i, self.spec, self.tmp / f"node{i}", state_machine=service, **self.node_kw)
        if self.setup is not None:
            self.setup(node)
        self.nodes[i] = node.start()
        self.services[i] = service
        return service

    def stop(self, i: int) -> None:
        self.nodes.pop(i).stop()
        del self.services[i]

    def close(self) -> None:
        for i in list(self.nodes):
            self.stop(i)

    def applied(self, index: int) -> None:
        """Wait until every running node applied ``index``."""
        wait_for(
            f"every node applied {index}",
            lambda: all(s.machine.index >= index for s in self.services.values()),
        )

    def kv(self, **kwargs: Any) -> KvClient:
        return KvClient(self.spec, **{"timeout": 30.0, **kwargs})

    def alive(self) -> None:
        for i, node in self.nodes.items():
            assert node.failure is None, f"node {i} failed: {node.failure!r}"


@contextlib.contextmanager
def coord3(
    tmp: Path,
    make: Callable[[int], Any] | None = None,
    setup: Callable[[Node], None] | None = None,
    **node_kw: Any,
) -> Iterator[Coord3]:
    c = Coord3(tmp, make, setup, **node_kw)
    try:
        for i in NODES:
            c.start(i)
        yield c
        c.alive()
    finally:
        c.close()


def replies(
    transport: Any, want: Callable[[int, object], bool], what: str
) -> list[tuple[int, object]]:
    """Poll a bare transport until ``want(node, msg)`` says it has all it waits for."""
    got: list[tuple[int, object]] = []

    def probe() -> bool:
        for node, frame in transport.poll(50):
            msg = decode(frame)
            got.append((node, msg))
            if want(node, msg):
                return True
        return False

    wait_for(what, probe, 30)
    return got


# ---------------------------------------------------------------------- results


def test_results_reach_the_caller_through_whichever_node_it_asked(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, Client(c.spec) as client:
        for node in NODES:
            client._target = node  # the node the Submit goes to answers it
            answered = client.call(coord(Put(f"k{node}", b"v")))
            assert answered.result is not None
            result = decode_result(answered.result)
            assert result.ok and result.version == answered.index == result.index
        refused = decode_result(client.call(coord(Cas("k1", 999, b"x"))).result or b"")
        assert not refused.ok and refused.reason == "version mismatch"
        c.applied(refused.index)
        for s in c.services.values():
            assert s.machine.keys("k") == ["k1", "k2", "k3"]


def resend(client: Client, seq: int, payload: bytes, nodes: tuple[int, ...] = NODES) -> dict[
    int, tuple[int, int, bool, bytes]
]:
    """Send ``client``'s command ``seq`` again to ``nodes``; what each answers for it."""
    assert client.session is not None
    frame = encode(Submit((Command(client.session, seq, payload),)))
    for node in nodes:
        client.transport.send(node, frame)
    answers: dict[int, tuple[int, int, bool, bytes]] = {}

    def want(node: int, msg: object) -> bool:
        if isinstance(msg, SubmitResults) and msg.client == client.session:
            for item in msg.results:
                if item[0] == seq:
                    answers[node] = item
        return set(answers) == set(nodes)

    replies(client.transport, want, "every node to answer the retry")
    return answers


def test_a_retry_is_not_applied_again_and_gets_the_cached_result(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, Client(c.spec) as client:
        payload = coord(Cas("once", 0, b"first"))  # applied twice, the second is refused
        committed = client.broadcast(payload)
        c.applied(committed.index)
        answers = resend(client, committed.seq, payload)
        for _, index, known, data in answers.values():
            assert (index, known) == (committed.index, True)
            result = decode_result(data)
            assert result.ok and result.version == committed.index
        c.applied(committed.index)
        for s in c.services.values():
            assert s.machine.read("once") == (b"first", committed.index, 0)
            changes = s.machine.changes("once")
            assert isinstance(changes, Changes) and len(changes.changes) == 1


def test_a_retry_whose_result_was_evicted_is_committed_but_unknown(tmp_path: Path) -> None:
    def small_cache(node: Node) -> None:
        node._results = ResultCache(max_entries=1)

    with coord3(tmp_path, setup=small_cache) as c, Client(c.spec) as client:
        payload = coord(Put("a", b"1"))
        first = client.broadcast(payload)
        later = client.broadcast(coord(Put("b", b"2")))  # evicts the first everywhere
        c.applied(later.index)
        answers = resend(client, first.seq, payload)
        assert set(answers.values()) == {(first.seq, first.index, False, b"")}
        c.applied(later.index)
        for s in c.services.values():
            assert s.machine.read("a") == (b"1", first.index, 0)


def lose_first_result(client: Client, then: Callable[[], None] = lambda: None) -> list[Any]:
    """Make ``client`` miss the first SubmitResults it gets (as if the node that sent it
    died), calling ``then`` when it does."""
    keep = client._keep_results
    lost: list[Any] = []

    def lossy(msg: SubmitResults) -> None:
        if not lost:
            lost.append(msg)
            then()
            return
        keep(msg)

    client._keep_results = lossy  # type: ignore[method-assign]
    return lost


def test_a_call_whose_result_is_lost_retries_and_gets_it_from_the_cache(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, c.kv() as kv:
        lost = lose_first_result(kv._client)
        assert kv.cas("k", 0, b"v") == (True, kv.get("k", stale=False)[1])  # type: ignore[index]
        assert lost, "the first result was not lost: the retry was not tested"
        assert kv.get("k") is not None and kv.get("k")[0] == b"v"  # type: ignore[index]


def test_a_call_whose_result_was_evicted_is_an_outcome_unknown(tmp_path: Path) -> None:
    def small_cache(node: Node) -> None:
        node._results = ResultCache(max_entries=1)

    with coord3(tmp_path, setup=small_cache) as c, c.kv() as kv, c.kv() as other:

        def evict() -> None:
            other.put("other", b"x")  # the one result every node keeps now
            c.applied(other.get("other", stale=False)[1])  # type: ignore[index]

        lose_first_result(kv._client, evict)
        with pytest.raises(OutcomeUnknown) as info:
            kv.put("mine", b"v")
        # Applied once all the same, at the index the error names.
        assert kv.get("mine") == (b"v", info.value.index)


# ---------------------------------------------------------------------- queries


def held_on(node: Node, count: int) -> Callable[[], bool]:
    return lambda: len(node._held_queries) == count


def test_a_query_is_held_until_its_min_index_is_applied(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, c.kv() as kv:
        kv.put("k", b"old")
        index = kv.put("k", b"older")
        c.applied(index)
        done: list[Any] = []
        with Client(c.spec) as client:
            asker = threading.Thread(target=lambda: done.append(client.query(
                encode_query("get", "k"), min_index=index + 1, wait_ms=20_000, node=2,
            )))
            asker.start()
            wait_for("the query held", held_on(c.nodes[2], 1))
            assert not done
            written = kv.put("k", b"new")
            asker.join(30)
        (answer,) = done
        assert isinstance(answer, QueryAnswer) and answer.index >= index + 1
        assert decode_get(answer.payload) == (b"new", written, 0)
        assert len(c.nodes[2]._held_queries) == 0


def test_a_query_behind_is_refused_at_its_deadline(tmp_path: Path) -> None:
    with coord3(tmp_path) as c:
        transport = client_transport(c.spec, [1])
        try:
            payload = encode_query("sessions")
            transport.send(1, encode(Query(7, payload, 10**9, 300)))
            wait_for("the query held", held_on(c.nodes[1], 1))
            got = replies(transport, lambda n, m: isinstance(m, QueryRefused), "a refusal")
            refused = got[-1][1]
            assert isinstance(refused, QueryRefused)
            assert (refused.nonce, refused.reason) == (7, "behind")
            assert len(c.nodes[1]._held_queries) == 0
            # Without a wait: at once.
            transport.send(1, encode(Query(8, payload, 10**9, 0)))
            got = replies(transport, lambda n, m: isinstance(m, QueryRefused), "a refusal")
            refused = got[-1][1]
            assert isinstance(refused, QueryRefused) and (refused.nonce, refused.reason) == (
                8, "behind"
            )
        finally:
            transport.close()
        with Client(c.spec) as client, pytest.raises(ClusterUnavailable, match="behind"):
            client.query(payload, min_index=10**9, wait_ms=100, node=3, timeout=0.5)


def test_held_queries_are_bounded_per_client_and_in_all(tmp_path: Path) -> None:
    def small(node: Node) -> None:
        node._held_queries = HeldQueries(max_held=3, per_client=2)

    with coord3(tmp_path, setup=small) as c:
        a, b = client_transport(c.spec, [1]), client_transport(c.spec, [1])
        try:
            ahead = encode_query("changes", "", 10**6, 0)  # nothing there yet: held
            for nonce in (1, 2, 3):
                a.send(1, encode(Query(nonce, ahead, 0, 60_000)))
            got = replies(a, lambda n, m: isinstance(m, QueryRefused), "a's third refused")
            refused = [m for _, m in got if isinstance(m, QueryRefused)]
            assert [(m.nonce, m.reason) for m in refused] == [(3, "busy")]
            b.send(1, encode(Query(4, ahead, 0, 60_000)))  # b may: 3 in all
            wait_for("three held", held_on(c.nodes[1], 3))
            b.send(1, encode(Query(5, ahead, 0, 60_000)))  # but no more in all
            got = replies(b, lambda n, m: isinstance(m, QueryRefused), "b's second refused")
            refused = [m for _, m in got if isinstance(m, QueryRefused)]
            assert [(m.nonce, m.reason) for m in refused] == [(5, "busy")]
            assert len(c.nodes[1]._held_queries) == 3
        finally:
            a.close()
            b.close()


class Plain:
    """A state machine that answers no remote caller (apply only)."""

    def apply(self, delivery: Any) -> Any:
        return delivery.index


def test_a_node_that_cannot_answer_queries_says_unsupported(tmp_path: Path) -> None:
    with coord3(tmp_path, make=lambda i: Plain()) as c, Client(c.spec) as client:
        client.broadcast(b"x")
        with pytest.raises(QueryFailed) as info:
            client.query(encode_query("sessions"), node=2)
        assert info.value.reason == "unsupported"


class Faulty(CoordService):
    """BROKEN ON PURPOSE in its queries: one raises, one answers what is not bytes."""

    def query(self, payload: bytes, final: bool) -> Any:
        if payload == b"raise":
            raise RuntimeError("boom")
        if payload == b"not bytes":
            return None if not final else 12345
        return super().query(payload, final)


def test_a_query_that_raises_is_refused_and_the_node_goes_on(tmp_path: Path) -> None:
    with coord3(tmp_path, make=lambda i: Faulty()) as c, Client(c.spec) as client:
        client.broadcast(b"x")
        with pytest.raises(QueryFailed) as info:
            client.query(b"raise", node=1)
        assert info.value.reason == "error: RuntimeError: boom"
        with pytest.raises(QueryFailed, match="error"):
            client.query(b"raise", node=1, wait_ms=100)
        with pytest.raises(QueryFailed, match="error"):
            client.query(encode_query("get", 7), node=1)  # a malformed query: WireError
        answer = client.query(encode_query("sessions"), node=1)
        assert answer.payload
        c.alive()


def test_a_query_answer_that_is_not_bytes_is_refused_and_the_node_goes_on(
    tmp_path: Path,
) -> None:
    with coord3(tmp_path, make=lambda i: Faulty()) as c, Client(c.spec) as client:
        client.broadcast(b"x")
        for wait_ms in (0, 100):  # answered at once, and held then answered at its deadline
            with pytest.raises(QueryFailed, match="error"):
                client.query(b"not bytes", node=1, wait_ms=wait_ms, timeout=10)
        c.alive()
        client.broadcast(b"y")  # the cluster still works
        assert client.query(encode_query("sessions"), node=1).payload


class BadTimer(CoordService):
    """BROKEN ON PURPOSE: its lease timer raises on the leader."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = 0

    def due(self, now: float, leading: bool) -> list[bytes]:
        if leading:
            self.raised += 1
            raise RuntimeError("timer bug")
        return []


def test_a_timer_that_raises_does_not_stop_the_node(tmp_path: Path) -> None:
    with coord3(tmp_path, make=lambda i: BadTimer()) as c, Client(c.spec) as client:
        client.broadcast(b"x")

        def raised_twice_or_failed() -> bool:
            return any(n.failure is not None for n in c.nodes.values()) or any(
                s.raised >= 2 for s in c.services.values())

        wait_for("the timer to run twice", raised_twice_or_failed)
        c.alive()
        client.broadcast(b"y")


# ---------------------------------------------------------------------- KvClient


def test_put_get_cas_delete_and_keys(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, c.kv() as kv:
        assert kv.get("a") is None and kv.get("a", stale=True) is None
        v1 = kv.put("a", b"1")
        assert kv.get("a") == (b"1", v1)
        assert kv.cas("a", v1 + 100, b"x") == (False, v1)
        ok, v2 = kv.cas("a", v1, b"2")
        assert ok and v2 > v1 and kv.get("a") == (b"2", v2)
        assert kv.cas("new", 0, b"n")[0] and not kv.cas("new", 0, b"again")[0]
        vx = kv.put("dir/x", b"")
        wait_for("the stale read", lambda: kv.get("dir/x", stale=True) == (b"", vx))
        assert kv.delete("a") and not kv.delete("a")
        assert kv.get("a") is None
        wait_for("every key listed", lambda: kv.keys() == ["dir/x", "new"])
        assert kv.keys("dir/") == ["dir/x"]
        with pytest.raises(Refused) as info:
            kv.put("k" * 10_000, b"v")  # longer than a key may be
        assert info.value.index > 0


def test_an_ephemeral_key_vanishes_when_its_client_closes(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, c.kv() as other:
        with c.kv() as kv:
            version = kv.put("e/1", b"mine", ephemeral=True)
            session = kv.session
            assert other.get("e/1") == (b"mine", version)
            assert session in [s.id for s in other.sessions()]
        assert other.get("e/1") is None
        wait_for("the session gone", lambda: session not in [s.id for s in other.sessions()])


def test_an_ephemeral_key_vanishes_when_its_lease_expires(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, c.kv() as other, c.kv(ttl_ms=300) as kv:
        kv.put("e/1", b"mine", ephemeral=True)
        session = kv.session
        # Renewed (every ttl/3) while its keeper runs.
        start = other.applied_index()
        wait_for("three renewals", lambda: any(
            s.id == session and s.last > start for s in other.sessions()))
        assert other.get("e/1") is not None
        kv._stop.set()  # the client stops renewing (a pause, a crash)
        assert kv._keeper is not None
        kv._keeper.join(30)
        wait_for("the key gone", lambda: other.get("e/1") is None)
        assert session not in [s.id for s in other.sessions()]
        with pytest.raises(SessionLost):
            kv.put("e/2", b"too late", ephemeral=True)
        assert kv.lost
        with pytest.raises(SessionLost):
            kv.lock("L")


def test_a_lock_is_granted_in_fifo_order_and_fences_stale_holders(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, c.kv(name="a") as a, c.kv(name="b") as b, c.kv(name="d") as d:
        first = a.lock("L")
        assert a.put("guarded", b"a", fence=first.fence) > 0
        got: dict[str, Any] = {}
        tb = threading.Thread(target=lambda: got.setdefault("b", b.lock("L", timeout=30)))
        tb.start()
        wait_for("b queued", lambda: waiters(a, "L") == (b.session,))
        td = threading.Thread(target=lambda: got.setdefault("d", d.lock("L", timeout=30)))
        td.start()
        wait_for("d queued after b", lambda: waiters(a, "L") == (
            b.session, d.session))
        assert first.release()
        tb.join(30)
        assert "b" in got and "d" not in got
        second = got["b"]
        assert second.token > first.token
        assert b.put("guarded", b"b", fence=second.fence) > 0
        with pytest.raises(Refused) as info:
            a.put("guarded", b"a again", fence=first.fence)  # a's token is stale now
        assert info.value.reason == "fence: stale token"
        with pytest.raises(Refused, match="stale token"):
            a.delete("guarded", fence=first.fence)
        assert b.get("guarded")[0] == b"b"  # type: ignore[index]
        second.release()
        td.join(30)
        assert got["d"].token > second.token
        with pytest.raises(WaitTimeout):
            a.lock("L", timeout=0.5)  # d holds it: a leaves the queue again
        assert waiters(a, "L") == ()


def test_a_lock_wait_gives_up_at_its_timeout_when_nothing_happens(tmp_path: Path) -> None:
    """Nothing reaches the log while the waiter waits (long leases: no renewals): its wait
    ends as WaitTimeout, out of the queue, and not as the client's ClusterUnavailable
    once it has waited for an index that nobody writes."""
    with coord3(tmp_path) as c, c.kv(ttl_ms=600_000) as holder, \
            c.kv(ttl_ms=600_000, timeout=5.0) as waiter:
        held = holder.lock("L")
        waiter.open_session()
        with pytest.raises(WaitTimeout):
            waiter.lock("L", timeout=0.5)
        assert waiters(holder, "L") == ()
        with pytest.raises(WaitTimeout):
            waiter.election("L", b"me").campaign(timeout=0.5)
        assert waiters(holder, "L") == ()
        held.release()
        assert waiter.lock("L", timeout=30).token > held.token


def test_a_lock_wait_outlives_the_change_log_moving_past_it(tmp_path: Path) -> None:
    small = CoordLimits(max_changes=4)
    with coord3(tmp_path, make=lambda i: CoordService(small)) as c, c.kv() as holder, \
            c.kv() as waiter:
        held = holder.lock("L")
        asked: list[bytes] = []
        query = waiter._query

        def spy(payload: bytes, **kwargs: Any) -> tuple[int, bytes]:
            asked.append(payload)
            return query(payload, **kwargs)

        waiter._query = spy  # type: ignore[method-assign]
        got: list[Any] = []
        t = threading.Thread(target=lambda: got.append(waiter.lock("L", timeout=30)))
        t.start()
        wait_for("the waiter queued", lambda: waiters(holder, "L") == (waiter.session,))
        for k in range(8):  # the waiter's place in the change log is compacted away
            holder.put(f"other/{k}", b"v")
        wait_for("the waiter read the lock", lambda: encode_query("lock", "L") in asked)
        held.release()
        t.join(30)
        assert got and got[0].token > held.token


def waiters(kv: KvClient, name: str) -> tuple[int, ...]:
    info = kv.lock_info(name)
    return () if info is None else info.waiters


def test_an_election_hands_over_when_the_leader_resigns(tmp_path: Path) -> None:
    with coord3(tmp_path) as c, c.kv() as one, c.kv() as two:
        e1 = one.election("svc", b"host-1")
        term1 = e1.campaign()
        wait_for("the leader seen", lambda: one.leader("svc") == (b"host-1", term1))
        e2 = two.election("svc", b"host-2")
        elected: list[int] = []
        t = threading.Thread(target=lambda: elected.append(e2.campaign(timeout=30)))
        t.start()
        wait_for("two campaigning", lambda: waiters(one, "svc") == (
            two.session,))
        assert one.put("svc/state", b"1", fence=e1.fence) > 0
        e1.resign()
        t.join(30)
        (term2,) = elected
        assert term2 > term1
        wait_for("the new leader seen", lambda: two.leader("svc") == (b"host-2", term2))
        with pytest.raises(Refused, match="stale token"):
            one.put("svc/state", b"deposed", fence=(e1.name, term1))
        # The changes of leader, in order, from the start.
        seen = cast(Generator[tuple[bytes, int] | None, None, None], e2.observe(since=1))
        try:
            assert [next(seen) for _ in range(3)] == [(b"host-1", term1), None,
                                                      (b"host-2", term2)]
        finally:
            seen.close()


def test_a_barrier_releases_when_all_parties_entered(tmp_path: Path) -> None:
    with coord3(tmp_path) as c:
        clients = [c.kv(name=f"p{k}") for k in range(3)]
        try:
            released: list[int] = []
            threads = [threading.Thread(target=lambda kv=kv: released.append(
                kv.barrier("go", 3, timeout=30))) for kv in clients[:2]]
            for t in threads:
                t.start()
            machine = c.services[1].machine
            wait_for("two in the barrier", lambda: len(
                getattr(machine._barriers.get("go"), "entered", ())) == 2)
            assert not released
            released.append(clients[2].barrier("go", 3, timeout=30))
            for t in threads:
                t.join(30)
            assert len(released) == 3 and len(set(released)) == 1
            with pytest.raises(WaitTimeout):
                clients[0].barrier("alone", 2, timeout=0.3)
        finally:
            for kv in clients:
                kv.close()


def test_a_watch_from_one_sees_every_change_in_order_across_a_node_stop(
    tmp_path: Path,
) -> None:
    with coord3(tmp_path) as c, c.kv() as kv:
        kv.put("w/a", b"1")
        kv.cas("w/a", kv.get("w/a")[1], b"2")  # type: ignore[index]
        kv.put("w/e", b"e", ephemeral=True)
        with kv.lock("w/lock") as lock:
            kv.put("w/b", b"3", fence=lock.fence)
        kv.delete("w/a")
        kv.put("other", b"not under w/")
        with kv.watch("w/", since=1) as watch:
            first = _read_until(watch, lambda cs: any(ch.key == "w/b" for ch in cs))
            # The node the watch reads from goes away; the rest come from another.
            stopped = watch.client._target
            c.stop(stopped)
            kv.put("w/c", b"4")
            with c.kv() as closer:
                closer.put("w/d", b"5")
            rest = _read_until(watch, lambda cs: any(ch.key == "w/d" for ch in cs))
        seen = first + rest
        c.applied(seen[-1].index)
        every = next(iter(c.services.values())).machine.changes("w/", 1)
        assert isinstance(every, Changes)
        assert seen == list(every.changes)
        assert [(ch.kind, ch.key) for ch in seen] == [
            ("put", "w/a"), ("put", "w/a"), ("put", "w/e"), ("grant", "w/lock"),
            ("put", "w/b"), ("release", "w/lock"), ("delete", "w/a"),
            ("put", "w/c"), ("put", "w/d"),
        ]
        assert [ch.index for ch in seen] == sorted(ch.index for ch in seen)


def _read_until(watch: Any, done: Callable[[list[Change]], bool]) -> list[Change]:
    out: list[Change] = []

    def probe() -> bool:
        out.extend(watch.poll(500))
        return done(out)

    wait_for("the watched changes", probe, 60)
    return out


def test_a_watch_below_the_change_log_is_compacted_and_resumes_from_the_earliest(
    tmp_path: Path,
) -> None:
    small = CoordLimits(max_changes=4)
    with coord3(tmp_path, make=lambda i: CoordService(small)) as c, c.kv() as kv:
        versions = [kv.put(f"k{k}", b"v") for k in range(8)]
        c.applied(versions[-1])
        with kv.watch("", since=1) as watch, pytest.raises(WatchCompacted) as info:
            watch.poll(100)
        assert info.value.since == 1 and info.value.earliest == versions[4]
        with kv.watch("", since=Cursor(info.value.earliest)) as watch:
            got = _read_until(watch, lambda cs: len(cs) >= 4)
        assert [ch.key for ch in got] == ["k4", "k5", "k6", "k7"]


# ---------------------------------------------------------------------- restarts

SNAPSHOTS: dict[str, Any] = {
    "snapshot_entries": 20,
    "wal_segment_bytes": 4096,
    "replica_config": ReplicaConfig(nodes=NODES, compact_keep_slots=4),
}


class CountingService(CoordService):
    def __init__(self) -> None:
        super().__init__()
        self.restores = 0

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self.restores += 1


def test_a_node_restarted_from_its_snapshot_serves_queries_and_expires_sessions(
    tmp_path: Path,
) -> None:
    with coord3(tmp_path, make=lambda i: CountingService(), **SNAPSHOTS) as c, \
            c.kv() as kv, Client(c.spec) as client:
        early = client.broadcast(coord(Put("early", b"0")))
        with c.kv(ttl_ms=600) as leased:
            leased.put("e/held", b"while leased", ephemeral=True)
            for k in range(60):
                kv.put(f"k{k % 7}", b"%d" % k)
            c.applied(kv.put("last", b"x"))
            wait_for("snapshots taken", lambda: all(
                n.status().floor > 20 for n in c.nodes.values()))
            # Restart node 2: it comes back from its own snapshot and the log after it.
            c.stop(2)
            back = c.start(2)
            assert back.restores >= 1  # from its own snapshot, as it started
            c.applied(kv.put("after", b"y"))
            assert back.machine.read("e/held") is not None
            answer = client.query(encode_query("get", "k6"), node=2)
            assert decode_get(answer.payload) == (b"55", back.machine.read("k6")[1], 0)
            # Led by the restarted node, the lease timer still runs: its timers start
            # afresh from what the snapshot gave it.
            client.transfer_leader(2)
            wait_for("node 2 leads", lambda: client.leader() == 2)
            renewed = leased.applied_index()
            wait_for("renewals go on", lambda: any(
                s.name == leased.name and s.last > renewed for s in kv.sessions()))
            assert back.machine.read("e/held") is not None
            leased._stop.set()
            assert leased._keeper is not None
            leased._keeper.join(30)
            wait_for("the lease expired", lambda: back.machine.read("e/held") is None)
            assert kv.get("e/held") is None
        # A command applied before the snapshot it started from: committed, result unknown.
        answers = resend(client, early.seq, coord(Put("early", b"0")), nodes=(2,))
        assert answers[2] == (early.seq, early.index, False, b"")
