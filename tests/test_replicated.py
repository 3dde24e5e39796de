"""Replicated objects (broadcast.replicated): the encoding, the dispatcher, the ready-made
objects, and a real 3-node cluster in one process (CURVE keys from ``cluster_file``, node
``i`` in ``tmp/node<i>``, loopback only).

The last tests check the checks: a dispatcher that applies unknown versions and an
object that changes its state outside apply are caught by the helpers used above.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procs import secure_cluster, wait_for

from broadcast import BroadcastResult, Delivery, Node, PayloadTooLarge
from broadcast.replicated import (
    BadArgument,
    CallRefused,
    CapacityExceeded,
    IllegalWrite,
    MalformedCall,
    NotAttached,
    ReplCounter,
    ReplDict,
    Replicated,
    ReplicatedGroup,
    ReplQueue,
    ReplSet,
    ResultUnknown,
    StateError,
    UnknownMethod,
    UnknownObject,
    UnsupportedVersion,
    encoding,
    replicated,
)
from broadcast.replicated.core import _results
from broadcast.replicated.encoding import MAGIC, decode_call, encode_barrier, encode_call, pack
from broadcast.spec import Cluster
from paxos.multi.config import ReplicaConfig
from paxos.types import Command

# ---------------------------------------------------------------------------- helpers


def group() -> ReplicatedGroup:
    """The objects every replica of these tests registers (the same everywhere)."""
    return ReplicatedGroup(
        counter=ReplCounter(),
        d=ReplDict(max_bytes=4096, max_items=64),
        q=ReplQueue(max_items=50),
        s=ReplSet(max_items=100),
    )


def delivery(index: int, payload: bytes) -> Delivery:
    return Delivery(index, index, Command("test", index, payload))


def feed(g: ReplicatedGroup, payloads: list[bytes]) -> list[Any]:
    """Apply ``payloads`` at indexes after the group's; their results."""
    first = g.applied_index + 1
    return [g.apply(delivery(first + k, p)) for k, p in enumerate(payloads)]


def same(a: Any, b: Any) -> bool:
    """Results compare equal, errors by type and message (they are new objects per replica)."""
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return type(a) is type(b) and a.args == b.args
    return bool(a == b)


def assert_replicas_equal(groups: list[ReplicatedGroup]) -> None:
    """Wait until every replica applied as far as the furthest, then compare every object's
    state (the snapshot bytes: each object's encoded state and the applied index)."""
    top = max(g.applied_index for g in groups)
    wait_for("every replica applied", lambda: all(g.applied_index >= top for g in groups))
    snapshots = [g.snapshot() for g in groups]
    assert all(s == snapshots[0] for s in snapshots), "replicas diverged"


def assert_refuses_unknown_versions(make: Callable[[], ReplicatedGroup]) -> None:
    """A call in a format version the code does not know changes nothing and is refused
    with UnsupportedVersion on every replica."""
    call = encode_call("counter", "add", [5], {})
    future = MAGIC + msgpack.packb([encoding.CALL_FORMAT + 1, *msgpack.unpackb(call[3:])[1:]])
    replicas = [make(), make()]
    for g in replicas:
        before = g.snapshot()
        (result,) = feed(g, [future])
        assert isinstance(result, UnsupportedVersion), result
        assert g.snapshot() != before  # the applied index moved...
        assert g.objects["counter"].get() == 0  # type: ignore[attr-defined]  # ...nothing else


# ---------------------------------------------------------------------------- encoding


def test_a_call_round_trips_and_carries_its_format_version_first() -> None:
    payload = encode_call("d", "set", ("k", (1, 2)), {"x": b"\x00"})
    assert payload.startswith(MAGIC)
    assert msgpack.unpackb(payload[len(MAGIC):])[0] == encoding.CALL_FORMAT
    call = decode_call(payload)
    assert call == ("d", "set", ["k", [1, 2]], {"x": b"\x00"})  # tuples come back as lists


def test_arguments_that_are_not_msgpack_values_are_a_type_error_before_anything() -> None:
    for bad in (object(), {1, 2}, 2**70, 1j):
        with pytest.raises(TypeError, match="cannot be sent"):
            encode_call("d", "set", ("k", bad), {})
    with pytest.raises(TypeError, match="keyword"):
        encode_call("d", "set", ("k",), {"value": object()})


def test_garbage_and_other_versions_are_typed_errors() -> None:
    with pytest.raises(MalformedCall):
        decode_call(MAGIC + b"\xc1\xc1")
    with pytest.raises(MalformedCall):
        decode_call(MAGIC + msgpack.packb({"not": "a list"}))
    with pytest.raises(MalformedCall):
        decode_call(MAGIC + msgpack.packb([1, "d", "set"]))  # too few fields
    with pytest.raises(MalformedCall):
        decode_call(MAGIC + msgpack.packb([1, "d", "set", [], {1: 2}]))  # a kwarg not named
    with pytest.raises(MalformedCall):
        decode_call(MAGIC + msgpack.packb([1, "d", "set", [msgpack.ExtType(5, b"x")], {}]))
    with pytest.raises(UnsupportedVersion) as info:
        decode_call(MAGIC + msgpack.packb([2, "anything", "goes", "after", "v2"]))
    assert info.value.version == 2


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=64))
def test_any_bytes_after_the_mark_decode_or_are_refused(tail: bytes) -> None:
    try:
        call = decode_call(MAGIC + tail)
    except CallRefused:
        return
    assert type(call.obj) is str and type(call.args) is list and type(call.kwargs) is dict


def test_payloads_that_are_not_calls_are_ignored_and_change_nothing() -> None:
    g = group()
    before = g.snapshot()
    assert feed(g, [b"", b"hello", b'{"op":"put"}', msgpack.packb([1, "counter", "inc", [], {}])]) \
        == [None, None, None, None]
    assert g.applied_index == 4
    assert g.snapshot()[3:] == before[3:]  # only the applied index (byte 2) moved


# ---------------------------------------------------------------------------- dispatcher


def test_bad_calls_are_refused_with_typed_errors_and_change_nothing() -> None:
    g = group()
    feed(g, [encode_call("counter", "add", [5], {})])
    before = g.snapshot()
    results = feed(g, [
        encode_call("nobody", "add", [1], {}),
        encode_call("counter", "nope", [], {}),
        encode_call("counter", "get", [], {}),  # a read, not a replicated method
        encode_call("counter", "_reading", [True], {}),
        encode_call("counter", "__init__", [], {}),
        encode_call("counter", "add", [1, 2], {}),  # arity
        encode_call("counter", "add", [], {"m": 1}),
        encode_call("counter", "add", [1.5], {}),
        encode_call("counter", "add", [2**63], {}),
        encode_call("d", "set", [1.5, "x"], {}),
        encode_call("d", "set", [True, "x"], {}),
        encode_call("d", "set", ["k", "x" * 5000], {}),
        MAGIC + b"\xff\xff",
    ])
    kinds = [type(r) for r in results]
    assert kinds == [
        UnknownObject, UnknownMethod, UnknownMethod, UnknownMethod, UnknownMethod,
        MalformedCall, MalformedCall, BadArgument, CapacityExceeded, BadArgument, BadArgument,
        CapacityExceeded, MalformedCall,
    ]
    assert all(isinstance(r, CallRefused) for r in results)
    assert g.snapshot()[3:] == before[3:]


def test_barriers_answer_their_index() -> None:
    g = group()
    assert feed(g, [encode_barrier("counter"), encode_barrier(""), encode_barrier("x")])[:2] \
        == [1, 2]
    assert isinstance(feed(g, [encode_barrier("x")])[0], UnknownObject)


OPS = st.one_of(
    st.tuples(st.just("counter"), st.sampled_from(["add", "set"]),
              st.lists(st.integers(-(2**63), 2**64 - 1), min_size=1, max_size=1)),
    st.tuples(st.just("counter"), st.just("inc"), st.just([])),
    st.tuples(st.just("d"), st.just("set"),
              st.tuples(st.one_of(st.text(max_size=3), st.integers(-3, 3), st.floats()),
                        st.binary(max_size=300)).map(list)),
    st.tuples(st.just("d"), st.sampled_from(["pop", "setdefault"]),
              st.lists(st.text(max_size=3), min_size=1, max_size=1)),
    st.tuples(st.just("q"), st.sampled_from(["put", "get"]),
              st.lists(st.text(max_size=50), max_size=1)),
    st.tuples(st.just("s"), st.sampled_from(["add", "discard"]),
              st.lists(st.one_of(st.text(max_size=3), st.booleans()), min_size=1, max_size=1)),
    st.tuples(st.sampled_from(["d", "zz"]), st.sampled_from(["clear", "keys", "x"]),
              st.just([])),
)


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(st.lists(st.one_of(OPS.map(lambda op: encode_call(op[0], op[1], op[2], {})),
                          st.binary(max_size=20).map(lambda b: MAGIC + b)), max_size=60))
def test_two_replicas_fed_the_same_payloads_return_the_same_and_end_equal(
    payloads: list[bytes],
) -> None:
    one, two = group(), group()
    results = zip(feed(one, payloads), feed(two, payloads), strict=True)
    assert all(same(a, b) for a, b in results)
    assert one.snapshot() == two.snapshot()
    three = group()
    three.restore(one.snapshot())  # and a replica restored from the snapshot is the same
    assert three.snapshot() == one.snapshot()


# ---------------------------------------------------------------------------- objects


def test_ready_made_objects_apply_their_methods() -> None:
    g = group()
    r = feed(g, [
        encode_call("counter", "add", [5], {}), encode_call("counter", "inc", [], {}),
        encode_call("counter", "set", [-2], {}),
        encode_call("d", "set", ["a", [1, {"b": 2}]], {}), encode_call("d", "set", ["a", 3], {}),
        encode_call("d", "update", [{"x": 1, 7: "seven"}], {}),
        encode_call("d", "setdefault", ["x", 9], {}), encode_call("d", "pop", ["x"], {}),
        encode_call("d", "pop", ["x", "gone"], {}),
        encode_call("q", "put", ["first"], {}), encode_call("q", "put", [["second"]], {}),
        encode_call("q", "get", [], {}),
        encode_call("s", "add", ["m"], {}), encode_call("s", "add", ["m"], {}),
        encode_call("s", "update", [["n", 1, b"b"]], {}), encode_call("s", "discard", ["m"], {}),
    ])
    assert r == [5, 6, 6, None, [1, {"b": 2}], None, 1, 1, "gone", 1, 2, "first",
                 True, False, 3, True]
    counter, d, q, s = (g.objects[n] for n in ("counter", "d", "q", "s"))
    assert isinstance(counter, ReplCounter) and counter.get() == -2
    assert isinstance(d, ReplDict) and d.to_dict() == {"a": 3, 7: "seven"}
    assert d.keys() == ["a", 7] and len(d) == 2 and "a" in d and d.get("zz", 0) == 0
    assert isinstance(q, ReplQueue) and q.peek() == ["second"] and q.qsize() == 1
    assert isinstance(s, ReplSet) and s.members() == ["n", 1, b"b"] and s.contains(1)


def test_reads_return_copies_that_cannot_change_the_state() -> None:
    g = group()
    feed(g, [encode_call("d", "set", ["k", [1, 2]], {})])
    d = g.objects["d"]
    assert isinstance(d, ReplDict)
    d.get("k").append(3)
    assert d.get("k") == [1, 2]


def test_bounds_refuse_a_write_as_a_whole() -> None:
    g = ReplicatedGroup(d=ReplDict(max_bytes=100, max_items=3), q=ReplQueue(max_items=2),
                        s=ReplSet(max_bytes=10))
    r = feed(g, [
        encode_call("d", "update", [{"a": 1, "b": 2}], {}),
        encode_call("d", "update", [{"c": 3, "d": 4}], {}),  # 4 items: none of them
        encode_call("d", "update", [{"c": "x" * 80, "a": 1}], {}),  # 3 + 3 + (2 + 82): fits
        encode_call("d", "set", ["b", "y" * 12], {}),  # 90 - 3 + 15 = 102 bytes
        encode_call("q", "put", [1], {}), encode_call("q", "put", [2], {}),
        encode_call("q", "put", [3], {}),
        encode_call("s", "update", [["abcd", "efgh"]], {}),  # 10 bytes: fits
        encode_call("s", "add", ["i"], {}),
    ])
    assert [type(x).__name__ for x in r] == [
        "NoneType", "CapacityExceeded", "NoneType", "CapacityExceeded", "int", "int",
        "CapacityExceeded", "int", "CapacityExceeded",
    ]
    d = g.objects["d"]
    assert isinstance(d, ReplDict) and d.keys() == ["a", "b", "c"] and d.size_bytes() <= 100


def test_counter_stays_in_64_bits() -> None:
    g = ReplicatedGroup(c=ReplCounter(2**63 - 2))
    r = feed(g, [encode_call("c", "inc", [], {}), encode_call("c", "inc", [], {})])
    assert r[0] == 2**63 - 1 and isinstance(r[1], CapacityExceeded)


def test_snapshot_restore_checks_what_it_loads() -> None:
    g = group()
    feed(g, [encode_call("d", "set", ["k", 1], {}), encode_call("counter", "add", [3], {})])
    blob = g.snapshot()
    fresh = group()
    fresh.restore(blob)
    assert fresh.snapshot() == blob and fresh.applied_index == 2
    # An object added to the code since the snapshot starts afresh; one that is gone is
    # an error, as are garbage, another format and another type under the same name.
    more = ReplicatedGroup(counter=ReplCounter(), d=ReplDict(), q=ReplQueue(), s=ReplSet(),
                           extra=ReplCounter(7))
    more.restore(blob)
    assert more.objects["extra"].get() == 7  # type: ignore[attr-defined]
    for bad, make in [
        (blob, lambda: ReplicatedGroup(counter=ReplCounter())),
        (b"\xc1", group),
        (msgpack.packb([2, 0, []]), group),
        (msgpack.packb([1, 0, [["counter", "ReplDict", 1, []]]]), group),
        (msgpack.packb([1, 0, [["counter", "ReplCounter", 9, 1]]]), group),
        (msgpack.packb([1, 0, [["d", "ReplDict", 1, [[1.5, b"\x01"]]]]]), group),
    ]:
        with pytest.raises(StateError):
            make().restore(bad)


def test_a_result_a_snapshot_install_jumped_over_is_unknown_not_none() -> None:
    """The node answers None for a local call delivered inside an installed snapshot;
    a method may return None too, so the group tells the caller the result is unknown."""
    ahead = group()
    feed(ahead, [encode_call("counter", "inc", [], {})] * 10)
    lagging = group()
    feed(lagging, [encode_call("counter", "inc", [], {})] * 3)
    lagging.restore(ahead.snapshot())  # jumped over 4..10

    def committed(index: int, result: Any) -> concurrent.futures.Future[Any]:
        inner: concurrent.futures.Future[Any] = concurrent.futures.Future()
        outer = _results(inner, lagging)
        inner.set_result(BroadcastResult(index, result))
        return outer

    assert committed(3, 3).result() == 3 and committed(11, None).result() is None
    with pytest.raises(ResultUnknown) as info:
        committed(4, None).result()
    assert info.value.index == 4


def test_state_changes_only_in_apply() -> None:
    g = group()
    counter = g.objects["counter"]
    with pytest.raises(IllegalWrite):
        counter._value = 5  # type: ignore[attr-defined]
    with pytest.raises(IllegalWrite):
        del counter._value  # type: ignore[attr-defined]
    with pytest.raises(NotAttached):
        counter.inc()  # type: ignore[attr-defined]  # the group has no node
    with pytest.raises(NotAttached):
        ReplCounter().inc()


def test_groups_register_before_they_apply() -> None:
    g = group()
    with pytest.raises(ValueError, match="already"):
        g.add("counter", ReplCounter())
    with pytest.raises(ValueError, match="already registered"):
        ReplicatedGroup(a=g.objects["d"])
    with pytest.raises(ValueError):
        g.add("x" * 65, ReplCounter())
    with pytest.raises(TypeError, match="cannot be sent"):
        g.add("bad", _SetHolder())
    feed(g, [b"x"])
    with pytest.raises(RuntimeError, match="before the group applies"):
        g.add("late", ReplCounter())


class _SetHolder(Replicated):
    def __init__(self) -> None:
        self.members = {1, 2}  # a set is not a msgpack value: caught at registration


class Tally(Replicated):
    """A user-defined object with the default (attribute) state."""

    def __init__(self) -> None:
        self.total = 0
        self.names: list[str] = []

    @replicated
    def record(self, name: str, amount: int = 1) -> int:
        self.names.append(name)
        self.total += amount
        return self.total

    def report(self) -> tuple[int, list[str]]:
        """Local read, possibly stale."""
        return self.total, list(self.names)


def test_a_user_defined_object_with_default_state() -> None:
    g = ReplicatedGroup(t=Tally())
    assert feed(g, [encode_call("t", "record", ["a"], {}),
                    encode_call("t", "record", ["b"], {"amount": 5})]) == [1, 6]
    again = ReplicatedGroup(t=Tally())
    again.restore(g.snapshot())
    assert again.objects["t"].report() == (6, ["a", "b"])  # type: ignore[attr-defined]
    assert set(Tally._replicated_methods) == {"record"}


def test_every_local_read_of_the_ready_made_objects_says_it_may_be_stale() -> None:
    for cls in (ReplDict, ReplCounter, ReplQueue, ReplSet):
        for name, member in vars(cls).items():
            if name in cls._replicated_methods or not callable(member):
                continue
            if name.startswith("_") and name not in ("__len__", "__contains__"):
                continue
            if name in ("dump_state", "load_state"):
                continue
            doc = inspect.getdoc(member) or ""
            assert "stale" in doc, f"{cls.__name__}.{name} does not say it is a stale read"


# ---------------------------------------------------------------------------- a cluster

SNAPSHOTS = {
    "snapshot_entries": 20,
    "wal_segment_bytes": 4096,
    "replica_config": ReplicaConfig(nodes=(1, 2, 3), compact_keep_slots=4),
}


class Cluster3:
    """Three nodes in this process, each with its own group, started and stopped here."""

    def __init__(self, tmp: Path, make: Callable[[int], ReplicatedGroup] | None = None,
                 **node_kw: Any) -> None:
        self.tmp = tmp
        self.spec: Cluster = secure_cluster(tmp, 3)
        self.make = make or (lambda i: group())
        self.node_kw = {"fsync": False, "max_payload_bytes": 8192, **node_kw}
        self.nodes: dict[int, Node] = {}
        self.groups: dict[int, ReplicatedGroup] = {}

    def start(self, i: int) -> ReplicatedGroup:
        g = self.make(i)
        node = Node(i, self.spec, self.tmp / f"node{i}", state_machine=g, **self.node_kw)
        self.nodes[i] = node.start()
        self.groups[i] = g.attach(node)
        return g

    def stop(self, i: int) -> None:
        self.nodes.pop(i).stop()
        del self.groups[i]

    def obj(self, i: int, name: str) -> Any:
        return self.groups[i].objects[name]

    def close(self) -> None:
        for i in list(self.nodes):
            self.stop(i)


@contextlib.contextmanager
def cluster(tmp: Path, make: Callable[[int], ReplicatedGroup] | None = None,
            **node_kw: Any) -> Iterator[Cluster3]:
    c = Cluster3(tmp, make, **node_kw)
    try:
        for i in (1, 2, 3):
            c.start(i)
        yield c
    finally:
        c.close()


def test_calls_from_every_node_apply_in_one_order_everywhere(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        def work(i: int) -> list[int]:
            counter, d, s = c.obj(i, "counter"), c.obj(i, "d"), c.obj(i, "s")
            got = []
            for k in range(15):
                got.append(counter.inc())
                d.set(f"k{k % 4}", [i, k])
                s.add(f"{i}-{k % 3}")
            return got

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(work, (1, 2, 3)))
        # Each inc returned the value at its own place in the one order: all different.
        assert sorted(v for r in results for v in r) == list(range(1, 46))
        assert all(r == sorted(r) for r in results)  # one node's calls in its order
        assert_replicas_equal(list(c.groups.values()))
        assert c.obj(3, "counter").get() == 45 and len(c.obj(2, "s")) == 9


def test_a_queue_item_is_taken_once_across_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        for k in range(20):
            assert c.obj(1, "q").put(k) == k + 1
        taken: list[list[int]] = [[], []]

        def drain(i: int) -> None:
            q = c.obj(i, "q")
            while (item := q.get()) is not None:
                taken[i - 2].append(item)

        threads = [threading.Thread(target=drain, args=(i,)) for i in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(taken[0] + taken[1]) == list(range(20))
        assert all(t == sorted(t) for t in taken)  # FIFO as each node saw it
        assert_replicas_equal(list(c.groups.values()))


def test_a_linearizable_read_sees_a_write_just_committed_elsewhere(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        d1, d3, counter3 = c.obj(1, "d"), c.obj(3, "d"), c.obj(3, "counter")
        for k in range(20):
            d1.set("k", k)
            assert d3.get("k", linearizable=True) == k
            c.obj(2, "counter").add(1)
            assert counter3.get(linearizable=True) == k + 1
        assert c.groups[3].sync() > 0 and c.obj(3, "s").sync() > 0


class GatedGroup(ReplicatedGroup):
    """A replica whose applies wait for a gate: it lags, on purpose."""

    def __init__(self) -> None:
        super().__init__(counter=ReplCounter(), d=ReplDict(), q=ReplQueue(), s=ReplSet())
        self.gate = threading.Event()
        self.gate.set()

    def apply(self, delivery: Delivery) -> Any:
        self.gate.wait()  # outside the lock: local reads go on meanwhile
        return super().apply(delivery)


def test_a_local_read_may_be_stale_a_linearizable_one_is_not(tmp_path: Path) -> None:
    with cluster(tmp_path, lambda i: GatedGroup() if i == 3 else group()) as c:
        c.obj(1, "d").set("color", "blue")
        lagging = c.groups[3]
        assert isinstance(lagging, GatedGroup)
        wait_for("node 3 applied", lambda: c.obj(3, "d").get("color") == "blue")
        lagging.gate.clear()
        c.obj(1, "d").set("color", "green")  # nodes 1 and 2 commit it without node 3
        assert c.obj(3, "d").get("color") == "blue"  # stale, as documented
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                read = pool.submit(lambda: c.obj(3, "d").get("color", linearizable=True))
                with pytest.raises(concurrent.futures.TimeoutError):
                    read.result(0.3)  # waits for node 3 to apply up to its barrier
                lagging.gate.set()
                assert read.result(30) == "green"
        finally:
            lagging.gate.set()


def test_bad_calls_in_a_cluster_are_typed_errors_and_do_not_diverge(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        node1 = c.nodes[1]
        d, counter = c.obj(1, "d"), c.obj(1, "counter")
        counter.add(2)
        before = node1.last_index
        with pytest.raises(TypeError, match="cannot be sent"):
            d.set("k", object())
        with pytest.raises(TypeError, match="unexpected keyword"):
            d.set("k", 1, colour="x")
        with pytest.raises(PayloadTooLarge):
            d.set("k", b"x" * 9000)  # above the cluster's 8192 bytes: never sent
        assert node1.last_index == before  # nothing entered the log
        with pytest.raises(CapacityExceeded):
            d.set("k", b"x" * 5000)  # fits the payload limit, not the dict's 4096 bytes
        with pytest.raises(BadArgument):
            d.set(1.5, "float key")
        with pytest.raises(UnknownMethod):
            node1.broadcast(encode_call("counter", "nope", [], {}), timeout=30)
        with pytest.raises(UnknownObject):
            c.nodes[2].broadcast(encode_call("ghost", "inc", [], {}), timeout=30)
        with pytest.raises(UnsupportedVersion):
            c.nodes[3].broadcast(MAGIC + msgpack.packb([9, "counter", "inc", [], {}]), timeout=30)
        with pytest.raises(MalformedCall):
            node1.broadcast(MAGIC + b"\x00garbage", timeout=30)
        assert node1.broadcast(b"someone else's payload", timeout=30).result is None
        assert counter.inc() == 3  # still working, and nothing refused changed anything
        assert_replicas_equal(list(c.groups.values()))
        assert c.obj(3, "d").keys() == []


def test_calls_from_a_delivery_callback_are_refused_rather_than_hang(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        errors: list[BaseException] = []

        def callback(_: Delivery) -> None:
            try:
                c.obj(1, "counter").inc()
            except RuntimeError as exc:
                errors.append(exc)

        c.nodes[1].on_deliver(callback)
        c.obj(2, "counter").inc()
        wait_for("the callback ran", lambda: len(errors) > 0)
        assert "loop thread" in str(errors[0])


def test_async_and_submit(tmp_path: Path) -> None:
    import asyncio

    with cluster(tmp_path) as c:
        counter = c.obj(1, "counter")

        async def many() -> list[int]:
            return list(await asyncio.gather(*(counter.add.call_async(1) for _ in range(10))))

        assert sorted(asyncio.run(many())) == list(range(1, 11))
        assert counter.add.submit(5).result(30) == 15


def test_a_restarted_node_has_the_same_objects(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        for k in range(10):
            c.obj(1 + k % 3, "d").set(f"k{k}", k)
            c.obj(1, "q").put(k)
        c.stop(2)
        c.obj(1, "counter").add(7)  # while node 2 is down
        c.obj(3, "s").add("late")
        c.start(2)  # replays its log (no snapshot: only a handful of entries)
        wait_for("node 2 caught up", lambda: c.obj(2, "s").contains("late"))
        assert c.obj(2, "counter").get() == 7
        assert_replicas_equal(list(c.groups.values()))


class CountingGroup(ReplicatedGroup):
    def __init__(self) -> None:
        super().__init__(counter=ReplCounter(), d=ReplDict(max_bytes=64 * 1024, max_items=1000),
                         q=ReplQueue(), s=ReplSet())
        self.restores = 0

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self.restores += 1


def test_nodes_restart_from_and_install_snapshots_of_the_objects(tmp_path: Path) -> None:
    with cluster(tmp_path, lambda i: CountingGroup(), **SNAPSHOTS) as c:
        c.obj(1, "counter").inc()
        wait_for("node 3 applied", lambda: c.obj(3, "counter").get() == 1)
        c.stop(3)
        for k in range(150):
            c.obj(1 + k % 2, "d").set(f"k{k % 40}", [k, "v" * 20])
            c.obj(1, "counter").add(k)
        for i in (1, 2):
            wait_for("the others compacted", lambda i=i: c.nodes[i].status().floor > 50)
        back = c.start(3)
        assert isinstance(back, CountingGroup)
        total = 1 + sum(range(150))
        wait_for("node 3 caught up", lambda: c.obj(3, "counter").get() == total, 90)
        assert back.restores >= 1  # it came back through a peer's snapshot
        assert_replicas_equal(list(c.groups.values()))
        # And a restart from its own snapshot and log.
        c.stop(1)
        again = c.start(1)
        assert isinstance(again, CountingGroup) and again.restores == 1
        wait_for("node 1 replayed", lambda: c.obj(1, "counter").get() == total)
        assert c.obj(1, "d").to_dict() == c.obj(2, "d").to_dict(linearizable=True)
        assert_replicas_equal(list(c.groups.values()))


def test_the_example_runs() -> None:
    example = Path(__file__).parent.parent / "examples" / "replicated_counter.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(example.parent.parent)}, check=True,
    )
    assert "refused on every replica" in done.stdout
    for i in (1, 2, 3):
        assert f"node {i}: visits=11 settings={{'color': 'green'}}" in done.stdout


# ---------------------------------------------------------------------------- check the checks


class LenientGroup(ReplicatedGroup):
    """BROKEN ON PURPOSE: applies calls of any format version as if they were version 1."""

    def _dispatch(self, index: int, payload: bytes) -> Any:
        fields = msgpack.unpackb(payload[len(MAGIC):])
        fields[0] = encoding.CALL_FORMAT
        return super()._dispatch(index, MAGIC + msgpack.packb(fields))


def test_the_version_check_catches_a_dispatcher_that_applies_unknown_versions() -> None:
    assert_refuses_unknown_versions(group)
    with pytest.raises(AssertionError):
        assert_refuses_unknown_versions(
            lambda: LenientGroup(counter=ReplCounter(), d=ReplDict())
        )


class LeakyDict(ReplDict):
    """BROKEN ON PURPOSE: a write outside apply that the attribute guard cannot see (an
    in-place change of a dict), made on one replica only."""

    def set_here(self, key: str, value: Any) -> None:
        self._data[key] = (pack(key), pack(value))


class CheatingCounter(ReplCounter):
    """BROKEN ON PURPOSE: a write outside apply through an attribute (the guard sees it)."""

    def bump_here(self) -> None:
        self._value += 1


def test_the_replica_check_catches_a_write_outside_apply(tmp_path: Path) -> None:
    def make(i: int) -> ReplicatedGroup:
        return ReplicatedGroup(d=LeakyDict(), counter=CheatingCounter())

    with cluster(tmp_path, make) as c:
        c.obj(1, "d").set("a", 1)
        with pytest.raises(IllegalWrite):
            c.obj(1, "counter").bump_here()
        assert_replicas_equal(list(c.groups.values()))  # the guard kept them equal
        c.obj(1, "d").set_here("b", 2)  # node 1 only: the replicas now differ
        with pytest.raises(AssertionError, match="diverged"):
            assert_replicas_equal(list(c.groups.values()))
