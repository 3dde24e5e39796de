"""The coordination service's runtime pieces, without a network: what a node keeps to
answer remote callers (broadcast/answers.py), the answers' encoding and the watch
cursors (broadcast/kv/wire.py), and CoordService's queries and lease timer
(broadcast/kv/service.py). Time is passed in (``now``): nothing here sleeps.

The last tests check the checks: a cursor that skips one change too many, a timer that
forgets to start afresh on a new leader, and a cache that evicts the newest first are
each caught by the helpers used above.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcast.answers import (
    MAX_QUERY_WAIT_MS,
    RESULT_OVERHEAD,
    HeldQueries,
    ResultCache,
)
from broadcast.kv import service as service_module
from broadcast.kv.service import MAX_EXPIRIES_PER_RUN, REPROPOSE_S, CoordService
from broadcast.kv.wire import (
    CompactedPage,
    Cursor,
    WatchPage,
    WireError,
    decode_get,
    decode_keys,
    decode_lock,
    decode_page,
    decode_result,
    decode_sessions,
    encode_page,
    encode_query,
    encode_result,
    page_of,
)
from broadcast.protocol import Query
from paxos.coord.commands import (
    Acquire,
    Close,
    CoordCommand,
    Expire,
    Open,
    Put,
    Renew,
    decode,
    encode,
)
from paxos.coord.machine import Change, Changes, CoordLimits, LockInfo, Result, SessionInfo
from paxos.types import Command, Delivery

# ---------------------------------------------------------------------- helpers


class Log:
    """Applies commands to a service at consecutive indexes, as a node delivers them."""

    def __init__(self, service: CoordService | None = None) -> None:
        self.s = service if service is not None else CoordService()
        self.index = self.s.machine.index

    def __call__(self, command: CoordCommand) -> Result:
        self.index += 1
        payload = encode(command)
        result = self.s.apply(Delivery(self.index, self.index, Command("c#1", self.index, payload)))
        assert isinstance(result, Result)
        return result

    def session(self, name: str = "s", ttl_ms: int = 1000) -> int:
        result = self(Open(name, ttl_ms))
        assert result.ok
        return result.session


def expiries(payloads: list[bytes]) -> list[Expire]:
    out = []
    for payload in payloads:
        command = decode(payload)
        assert isinstance(command, Expire), command
        out.append(command)
    return out


def ask(service: CoordService, kind: str, *args: object, final: bool = True) -> bytes | None:
    return service.query(encode_query(kind, *args), final)


def answer(service: CoordService, kind: str, *args: object) -> bytes:
    data = ask(service, kind, *args)
    assert data is not None
    return data


# ---------------------------------------------------------------------- ResultCache


def test_the_result_cache_keeps_at_most_max_entries_evicting_the_oldest() -> None:
    cache = ResultCache(max_bytes=10**6, max_entries=3)
    for seq in range(1, 6):
        cache.put("c#1", seq, 10 + seq, b"r%d" % seq)
    assert len(cache) == 3
    assert [cache.get("c#1", seq) for seq in range(1, 6)] == [
        None, None, (13, b"r3"), (14, b"r4"), (15, b"r5"),
    ]
    assert cache.bytes == 3 * (RESULT_OVERHEAD + 2)


def test_the_result_cache_keeps_at_most_max_bytes() -> None:
    cache = ResultCache(max_bytes=2 * (RESULT_OVERHEAD + 100), max_entries=1000)
    for seq in range(1, 5):
        cache.put("c#1", seq, seq, bytes(100))
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 2 and cache.get("c#1", 2) is None and cache.get("c#1", 3) is not None
    # One small result more: the oldest of the large ones goes to make room.
    cache.put("c#2", 1, 9, b"x")
    assert cache.get("c#1", 3) is None and cache.get("c#1", 4) is not None
    assert cache.bytes == 2 * RESULT_OVERHEAD + 101


def test_a_result_larger_than_the_cache_is_not_kept_and_empties_nothing_twice() -> None:
    cache = ResultCache(max_bytes=RESULT_OVERHEAD + 10, max_entries=10)
    cache.put("c#1", 1, 1, b"small")
    cache.put("c#1", 2, 2, bytes(11))  # alone it is over the bound: it goes too
    assert len(cache) == 0 and cache.bytes == 0
    cache.put("c#1", 3, 3, b"ok")
    assert cache.get("c#1", 3) == (3, b"ok")


def test_a_result_put_again_is_counted_once_and_becomes_the_newest() -> None:
    cache = ResultCache(max_bytes=10**6, max_entries=3)
    cache.put("a#1", 1, 1, b"one")
    cache.put("a#1", 2, 2, b"two")
    cache.put("a#1", 3, 3, b"three")
    cache.put("a#1", 1, 1, b"uno!")  # replaces, and moves to the end of the order
    assert cache.bytes == 3 * RESULT_OVERHEAD + len(b"uno!two" b"three")
    cache.put("b#1", 1, 4, b"four")
    assert cache.get("a#1", 2) is None  # the oldest now
    assert cache.get("a#1", 1) == (1, b"uno!")
    # Keys are (session, seq): the same seq of another session is another result.
    assert cache.get("b#1", 1) == (4, b"four") and cache.get("b#1", 3) is None


def test_result_cache_bounds_must_be_positive() -> None:
    for bad in ({"max_bytes": 0}, {"max_entries": 0}):
        with pytest.raises(ValueError):
            ResultCache(**bad)


def assert_cache_evicts_oldest_first(make: Callable[[], ResultCache]) -> None:
    """Whatever the order of puts, the results kept are the most recent ones, within the
    bounds, with the bytes counted right."""
    rng = random.Random(5)
    cache = make()
    order: list[tuple[str, int]] = []
    sizes: dict[tuple[str, int], int] = {}
    for _ in range(400):
        key = (f"c#{rng.randint(1, 3)}", rng.randint(1, 30))
        size = rng.randint(0, 50)
        cache.put(*key, rng.randint(1, 100), bytes(size))
        if key in order:
            order.remove(key)
        order.append(key)
        sizes[key] = size
        # The newest that fit, in the order they came, are what must be there.
        kept: list[tuple[str, int]] = []
        total = 0
        for k in reversed(order):
            cost = RESULT_OVERHEAD + sizes[k]
            if len(kept) == cache.max_entries or total + cost > cache.max_bytes:
                break
            kept.append(k)
            total += cost
        assert len(cache) == len(kept) and cache.bytes == total
        assert all(cache.get(*k) is not None for k in kept)


def test_the_result_cache_keeps_the_newest_results_under_random_puts() -> None:
    assert_cache_evicts_oldest_first(lambda: ResultCache(max_bytes=6 * RESULT_OVERHEAD,
                                                         max_entries=5))


# ---------------------------------------------------------------------- HeldQueries


def query(nonce: int = 1, wait_ms: int = 1000) -> Query:
    return Query(nonce, b"q", 0, wait_ms)


def test_held_queries_are_bounded_per_client() -> None:
    held = HeldQueries(max_held=100, per_client=2)
    assert held.hold(0.0, b"a", query(1)) and held.hold(0.0, b"a", query(2))
    assert not held.hold(0.0, b"a", query(3))
    assert held.hold(0.0, b"b", query(4))  # another client has its own allowance
    assert len(held) == 3


def test_held_queries_are_bounded_in_all() -> None:
    held = HeldQueries(max_held=3, per_client=2)
    assert held.hold(0.0, b"a", query(1)) and held.hold(0.0, b"b", query(2))
    assert held.hold(0.0, b"c", query(3))
    assert not held.hold(0.0, b"d", query(4))
    assert len(held) == 3 and [h.identity for h in held.held] == [b"a", b"b", b"c"]


def test_forget_drops_one_clients_queries_and_frees_its_allowance() -> None:
    held = HeldQueries(max_held=10, per_client=2)
    held.hold(0.0, b"a", query(1))
    held.hold(0.0, b"b", query(2))
    held.hold(0.0, b"a", query(3))
    held.forget(b"a")
    assert [h.query.nonce for h in held.held] == [2]
    assert held.hold(0.0, b"a", query(5)) and held.hold(0.0, b"a", query(6))
    assert not held.hold(0.0, b"a", query(7))
    held.forget(b"nobody")  # a client with nothing held: nothing happens
    assert len(held) == 3


def test_take_all_and_keep_account_for_what_stays() -> None:
    held = HeldQueries(max_held=10, per_client=2)
    held.hold(0.0, b"a", query(1))
    held.hold(0.0, b"a", query(2))
    taken = held.take_all()
    assert not held and len(taken) == 2
    held.keep(taken[0])  # one answered, one held again
    assert held.hold(0.0, b"a", query(3))
    assert not held.hold(0.0, b"a", query(4))


def test_a_query_is_held_until_its_deadline_at_most_the_longest_wait() -> None:
    held = HeldQueries()
    held.hold(100.0, b"a", query(1, wait_ms=2500))
    held.hold(100.0, b"a", query(2, wait_ms=10**9))
    assert [h.deadline for h in held.held] == [102.5, 100.0 + MAX_QUERY_WAIT_MS / 1000]


# ---------------------------------------------------------------------- wire: round trips


@pytest.mark.parametrize(
    "result",
    [
        Result(7, True),
        Result(9, True, session=9),
        Result(12, False, "fence: stale token", token=8),
        Result(3, True, version=2, value=b"\x00\xff"),
        Result(4, True, version=4, value=b""),
        Result(2**62, False, "quota", 1, 2, None, 3),
    ],
)
def test_results_round_trip(result: Result) -> None:
    back = decode_result(encode_result(result))
    # The changes stay with the node (a watch reads them): the rest comes back whole.
    assert back == result


def test_a_result_that_is_an_exception_is_sent_as_a_refusal_naming_it() -> None:
    back = decode_result(encode_result(KeyError("boom")))
    assert not back.ok and back.reason == "error: KeyError"


def test_results_with_changes_round_trip_without_them() -> None:
    log = Log()
    s = log.session()
    result = log(Put("e", b"v", ephemeral=s))
    assert result.changes
    back = decode_result(encode_result(result))
    assert back == Result(result.index, True, version=result.index)


@pytest.mark.parametrize(
    "page",
    [
        WatchPage((), Cursor(1)),
        WatchPage(
            (Change(3, "put", "a/b", 0, 3, b"v"), Change(3, "vanish", "a/c", 2),
             Change(5, "grant", "l", 4, 5, b"")),
            Cursor(5, 1),
        ),
        CompactedPage(17),
    ],
)
def test_watch_pages_round_trip(page: WatchPage | CompactedPage) -> None:
    assert decode_page(encode_page(page)) == page


def test_query_answers_round_trip_through_their_decoders() -> None:
    log = Log()
    a, b = log.session("alpha", 3000), log.session("beta")
    log(Put("k/1", b"one"))
    log(Put("k/2", b"two", ephemeral=a))
    log(Put("other", b"x"))
    granted = log(Acquire("L", a))
    log(Acquire("L", b))
    s = log.s
    assert decode_get(answer(s, "get", "k/1")) == (b"one", 3, 0)
    assert decode_get(answer(s, "get", "k/2")) == (b"two", 4, a)
    assert decode_get(answer(s, "get", "nope")) is None
    assert decode_keys(answer(s, "keys", "k/")) == ["k/1", "k/2"]
    assert decode_keys(answer(s, "keys", "")) == ["k/1", "k/2", "other"]
    assert decode_keys(answer(s, "keys", "zzz")) == []
    assert decode_lock(answer(s, "lock", "L")) == LockInfo(a, granted.index, b"", (b,))
    assert decode_lock(answer(s, "lock", "free")) is None
    assert decode_sessions(answer(s, "sessions")) == [
        SessionInfo(a, "alpha", 3000, granted.index), SessionInfo(b, "beta", 1000, log.index),
    ]
    page = decode_page(answer(s, "changes", "k/", 1, 0))
    assert isinstance(page, WatchPage)
    assert [(c.index, c.kind, c.key) for c in page.changes] == [(3, "put", "k/1"),
                                                                (4, "put", "k/2")]
    assert page.next == Cursor(log.index + 1, 0)


# ---------------------------------------------------------------------- wire: hostile bytes

DECODERS: list[Callable[[bytes], object]] = [
    decode_result, decode_get, decode_lock, decode_sessions, decode_keys, decode_page,
]

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x95\x01",  # truncated
        msgpack.packb({"a": 1}),
        msgpack.packb([]),
        msgpack.packb([2, True, "", 0, 0, None, 0, 1]),  # another format
        msgpack.packb([True, True, "", 0, 0, None, 0, 1]),  # a bool is not the format
        msgpack.packb([1.0, None]),
        msgpack.packb([1, 1, "", 0, 0, None, 0, 1]),  # ok must be a bool
        msgpack.packb([1, True, "", -1, 0, None, 0, 1]),  # a negative session
        msgpack.packb([1, True, "", 0, 0, "text", 0, 1]),  # a value is bytes
        msgpack.packb([1, True, b"reason", 0, 0, None, 0, 1]),
        msgpack.packb([1, True, "", 0, 0, None, 0]),  # too short
        msgpack.packb([1, b"v", 1, True]),  # a get with a bool owner
        msgpack.packb([1, 1, 2, b"", [True]]),  # a lock with a bool waiter
        msgpack.packb([1, 1, 2, b"", "w"]),
        msgpack.packb([1, [[1, "n", 1]]]),  # a session row too short
        msgpack.packb([1, [["n", "n", 1, 1]]]),
        msgpack.packb([1, [1, 2]]),  # keys are text
        msgpack.packb([1, "changes", [[1, "put", "k", 0, 1]], 2, 0]),
        msgpack.packb([1, "changes", [[1, "put", "k", 0, 1, 2]], 2, 0]),
        msgpack.packb([1, "changes", [], -2, 0]),
        msgpack.packb([1, "compacted", "1"]),
        msgpack.packb([1, "changez", [], 2, 0]),
        msgpack.packb([1, "x"], use_bin_type=False)[:-1] + b"\xff",
        msgpack.packb({1: 2}),  # a map with an int key (strict_map_key)
        msgpack.packb([1, msgpack.ExtType(3, b"x")]),
    ],
)
def test_malformed_answers_are_wire_errors_for_every_decoder(data: bytes) -> None:
    for decoder in DECODERS:
        with pytest.raises(WireError):
            decoder(data)


@pytest.mark.parametrize("thing", [None, "text", 5, 1.5, ["list"], object()])
def test_decoding_what_is_not_bytes_is_a_wire_error(thing: Any) -> None:
    for decoder in DECODERS:
        with pytest.raises(WireError):
            decoder(thing)


def test_random_and_mangled_bytes_are_wire_errors_or_answers_never_anything_else() -> None:
    log = Log()
    s = log.session()
    log(Put("k", b"v", ephemeral=s))
    log(Acquire("L", s))
    good = [
        encode_result(Result(5, True, "", 2, 3, b"v", 4)),
        answer(log.s, "get", "k"),
        answer(log.s, "lock", "L"),
        answer(log.s, "sessions"),
        answer(log.s, "keys", ""),
        answer(log.s, "changes", "", 1, 0),
        encode_page(CompactedPage(3)),
    ]
    assert_only_wire_errors(DECODERS, good)


def assert_only_wire_errors(decoders: list[Callable[[bytes], object]], good: list[bytes]) -> None:
    """Random bytes, and good answers mangled or cut, decode or raise WireError."""
    rng = random.Random(21)
    for _ in range(2000):
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randint(0, 40))
        else:
            mangled = bytearray(rng.choice(good))
            for _ in range(rng.randint(1, 3)):
                mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            data = bytes(mangled[: rng.randint(0, len(mangled))] if rng.random() < 0.2
                         else mangled)
        for decoder in decoders:
            with contextlib.suppress(WireError):
                decoder(data)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.lists(msgpack_values, max_size=9))
def test_answers_of_the_wrong_shape_are_wire_errors(fields: list[Any]) -> None:
    data = msgpack.packb([1, *fields], use_bin_type=True)
    for decoder in DECODERS:
        with contextlib.suppress(WireError):
            decoder(data)


# ---------------------------------------------------------------------- page_of: cursors


def changes_at(spec: list[tuple[int, int]]) -> list[Change]:
    """Changes of the given ``(index, value size)``, keys numbered in order."""
    return [Change(i, "put", f"k{n}", 0, i, bytes(size)) for n, (i, size) in enumerate(spec)]


def read_all(
    log: list[Change], start: Cursor, end: int, budget: int,
    pager: Callable[..., WatchPage] = page_of,
) -> list[Change]:
    """Page through ``log`` (what a machine holds, ending before ``end``) from ``start``,
    as a watch does: each page is asked with the changes at and after the cursor's index
    (as the machine gives them), resumed from the cursor the last page gave."""
    cursor = start
    out: list[Change] = []
    for _ in range(len(log) + 2):
        page = pager([c for c in log if c.index >= cursor.index], cursor, end, budget)
        assert page.changes or page.next == cursor or page.next.index == end, page
        assert (page.next.index, page.next.skip) >= (cursor.index, cursor.skip), "stepped back"
        out.extend(page.changes)
        if not page.changes:
            return out
        cursor = page.next
    raise AssertionError("the pages never ended")


def assert_pages_cover(pager: Callable[..., WatchPage]) -> None:
    """Cut anywhere, within an index too, the pages give every change once, in order."""
    rng = random.Random(3)
    for _ in range(300):
        spec: list[tuple[int, int]] = []
        index = rng.randint(1, 5)
        for _ in range(rng.randint(0, 25)):
            index += rng.choice((0, 0, 0, 1, 2))  # often several changes at one index
            spec.append((index, rng.randint(0, 60)))
        log = changes_at(spec)
        end = index + rng.randint(1, 3)
        budget = rng.randint(1, 200)
        assert read_all(log, Cursor(1), end, budget, pager) == log, (spec, budget)
        # From the middle of an index: everything after the first ``skip`` of it.
        if log:
            at = rng.choice(log).index
            here = [c for c in log if c.index == at]
            skip = rng.randint(0, len(here))
            want = here[skip:] + [c for c in log if c.index > at]
            assert read_all(log, Cursor(at, skip), end, budget, pager) == want


def test_pages_cut_anywhere_resume_with_no_gap_and_no_repeat() -> None:
    assert_pages_cover(page_of)


def test_a_page_is_cut_within_an_index_and_the_cursor_counts_what_was_given() -> None:
    log = changes_at([(4, 10)] + [(5, 60)] * 5 + [(6, 0)])
    size = log[1].size
    first = page_of(log, Cursor(4), 7, budget=log[0].size + 2 * size)
    assert first.changes == tuple(log[:3]) and first.next == Cursor(5, 2)
    second = page_of(log[1:], first.next, 7, budget=2 * size)
    assert second.changes == tuple(log[3:5]) and second.next == Cursor(5, 4)
    third = page_of(log[1:], second.next, 7, budget=10 * size)
    assert third.changes == tuple(log[5:]) and third.next == Cursor(7, 0)


def test_one_change_larger_than_the_budget_is_still_given_alone() -> None:
    log = changes_at([(2, 500), (2, 500)])
    page = page_of(log, Cursor(2), 3, budget=10)
    assert page.changes == (log[0],) and page.next == Cursor(2, 1)


def test_a_replica_behind_the_cursor_never_moves_it_back() -> None:
    # The watcher read up to (10, 3) from a node ahead; this one has applied up to 7.
    page = page_of([], Cursor(10, 3), end=8)
    assert page == WatchPage((), Cursor(10, 3))
    page = page_of([], Cursor(10, 3), end=10)  # applied 9: still not past the cursor
    assert page.next == Cursor(10, 3)
    # Through the service too: a machine at 2, asked from index 9 (final: answered).
    log = Log()
    log(Put("a", b"1"))
    log(Put("a", b"2"))
    data = ask(log.s, "changes", "", 9, 1, final=True)
    assert data is not None
    assert decode_page(data) == WatchPage((), Cursor(9, 1))


def test_an_empty_page_past_the_cursor_moves_to_the_end() -> None:
    assert page_of([], Cursor(3, 2), end=8) == WatchPage((), Cursor(8, 0))


def test_paging_through_the_service_within_one_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session ending with 40 ephemeral keys is one index of 41 changes: watch answers
    cut it (a small budget here) and resume within it, with no gap and no repeat."""
    monkeypatch.setattr(service_module, "page_of", functools.partial(page_of, budget=300))
    log = Log()
    s = log.session()
    for k in range(40):
        log(Put(f"e/{k:02}", b"v" * k, ephemeral=s))
    closed = log(Close(s))
    log(Put("e/after", b"x"))
    everything = log.s.machine.changes("e/", 1)
    assert isinstance(everything, Changes)
    seen: list[Change] = []
    cursor = Cursor(1)
    pages = 0
    while True:
        data = ask(log.s, "changes", "e/", cursor.index, cursor.skip, final=False)
        if data is None:
            break  # nothing new: the node would hold the watch
        page = decode_page(data)
        assert isinstance(page, WatchPage)
        seen.extend(page.changes)
        cursor = page.next
        pages += 1
        assert pages < 200
    assert seen == list(everything.changes)
    assert sum(1 for c in seen if c.index == closed.index) == 40
    assert pages > 5 and cursor == Cursor(log.index + 1)


# ---------------------------------------------------------------------- CoordService.query


def test_a_watch_with_nothing_new_is_held_unless_final() -> None:
    log = Log()
    log(Put("a/1", b"1"))
    log(Put("b/1", b"1"))
    s = log.s
    assert ask(s, "changes", "a/", 2, 0, final=False) is None  # b/1 is not under a/
    assert ask(s, "changes", "", 3, 0, final=False) is None  # nothing at 3 yet
    assert ask(s, "changes", "a/", 1, 1, final=False) is None  # its one change was seen
    final = ask(s, "changes", "a/", 2, 0, final=True)
    assert final is not None and decode_page(final) == WatchPage((), Cursor(3))
    some = ask(s, "changes", "a/", 1, 0, final=False)
    assert some is not None
    page = decode_page(some)
    assert isinstance(page, WatchPage) and [c.key for c in page.changes] == ["a/1"]


def test_a_watch_below_the_change_log_is_compacted() -> None:
    log = Log(CoordService(CoordLimits(max_changes=3)))
    for k in range(6):
        log(Put(f"k{k}", b"v"))
    data = answer(log.s, "changes", "", 1, 0)
    assert decode_page(data) == CompactedPage(4)
    held = decode_page(answer(log.s, "changes", "", 4, 0))
    assert isinstance(held, WatchPage) and [c.index for c in held.changes] == [4, 5, 6]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not msgpack \xc1",
        msgpack.packb([2, "get", "k"]),  # another format
        msgpack.packb([1]),
        msgpack.packb([1, "nope"]),
        msgpack.packb([1, "get"]),
        msgpack.packb([1, "get", 5]),
        msgpack.packb([1, "get", b"k"]),
        msgpack.packb([1, "get", "k", "extra"]),
        msgpack.packb([1, "lock", None]),
        msgpack.packb([1, "sessions", 1]),
        msgpack.packb([1, "keys"]),
        msgpack.packb([1, "keys", ["k"]]),
        msgpack.packb([1, "changes", "", 1]),
        msgpack.packb([1, "changes", "", 0, 0]),  # indexes start at 1
        msgpack.packb([1, "changes", "", 1, -1]),
        msgpack.packb([1, "changes", "", True, 0]),
        msgpack.packb([1, "changes", "", 1.0, 0]),
        msgpack.packb([1, "changes", b"", 1, 0]),
        msgpack.packb([1, ["get"], "k"]),
        msgpack.packb([1, {"get": 1}, "k"]),
        msgpack.packb({"kind": "get"}),
    ],
)
def test_malformed_queries_are_wire_errors(payload: bytes) -> None:
    log = Log()
    log(Put("k", b"v"))
    for final in (False, True):
        with pytest.raises(WireError):
            log.s.query(payload, final)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    st.sampled_from(["get", "lock", "sessions", "keys", "changes", "other"]),
    st.lists(msgpack_values, max_size=5),
    st.booleans(),
)
def test_queries_of_any_shape_answer_or_are_wire_errors(
    kind: str, args: list[Any], final: bool
) -> None:
    log = Log()
    s = log.session()
    log(Put("k", b"v", ephemeral=s))
    try:
        data = log.s.query(msgpack.packb([1, kind, *args], use_bin_type=True), final)
    except WireError:
        return
    assert data is None or type(data) is bytes
    assert data is not None or not final  # only a watch, only when not final, is held


# ---------------------------------------------------------------------- the lease timer

T0 = 1000.0


def test_the_timer_proposes_nothing_when_not_leading() -> None:
    log = Log()
    log.session(ttl_ms=1000)
    for t in (T0, T0 + 5, T0 + 500):
        assert log.s.due(t, leading=False) == []


def test_an_idle_session_gets_one_expiry_naming_its_last_index() -> None:
    log = Log()
    a = log.session("a", ttl_ms=1000)
    b = log.session("b", ttl_ms=5000)
    used = log(Put("x", b"1", ephemeral=a))
    s = log.s
    assert s.due(T0, leading=True) == []  # first look: every timer starts now
    assert s.due(T0 + 0.999, leading=True) == []
    assert expiries(s.due(T0 + 1.0, leading=True)) == [Expire(a, used.index)]
    # On its way: not proposed again until REPROPOSE_S passed without it being applied.
    assert s.due(T0 + 1.0 + REPROPOSE_S / 2, leading=True) == []
    assert expiries(s.due(T0 + 1.0 + REPROPOSE_S, leading=True)) == [Expire(a, used.index)]
    # Applied: the session is gone, and nothing more is proposed for it.
    ended = log(Expire(a, used.index))
    assert ended.ok and log.s.machine.read("x") is None
    assert s.due(T0 + 4.9, leading=True) == []
    # b's longer lease ends later, on its own.
    assert expiries(s.due(T0 + 5.0, leading=True)) == [Expire(b, b)]


def test_activity_restarts_a_sessions_timer() -> None:
    log = Log()
    a = log.session("a", ttl_ms=1000)
    s = log.s
    assert s.due(T0, leading=True) == []
    renewed = log(Renew(a))
    assert s.due(T0 + 0.6, leading=True) == []  # seen renewed at T0 + 0.6
    assert s.due(T0 + 1.2, leading=True) == []  # idle 0.6 s only, not since T0
    assert expiries(s.due(T0 + 1.61, leading=True)) == [Expire(a, renewed.index)]
    # Renewed while its expiry was on its way: the next one names the new last index,
    # without waiting for REPROPOSE_S.
    again = log(Renew(a))
    assert s.due(T0 + 1.7, leading=True) == []
    assert expiries(s.due(T0 + 2.71, leading=True)) == [Expire(a, again.index)]
    # The stale expiry, if the log takes it, is a no-op: activity won.
    assert not log(Expire(a, renewed.index)).ok


def test_a_new_leader_starts_every_timer_afresh() -> None:
    log = Log()
    a = log.session("a", ttl_ms=1000)
    s = log.s
    assert s.due(T0, leading=True) == []
    assert s.due(T0 + 0.5, leading=False) == []  # lost the leadership
    # Leader again, 10 s later: it cannot know how long the session was idle.
    assert s.due(T0 + 10.0, leading=True) == []
    assert s.due(T0 + 10.9, leading=True) == []
    assert expiries(s.due(T0 + 11.0, leading=True)) == [Expire(a, a)]
    # An expiry proposed before losing the leadership is not remembered either.
    assert s.due(T0 + 11.1, leading=False) == []
    assert s.due(T0 + 11.2, leading=True) == []
    assert expiries(s.due(T0 + 12.21, leading=True)) == [Expire(a, a)]


def test_a_restored_service_starts_every_timer_afresh() -> None:
    log = Log()
    a = log.session("a", ttl_ms=1000)
    s = log.s
    assert s.due(T0, leading=True) == []
    snapshot = s.snapshot()
    s.restore(snapshot)
    assert s.due(T0 + 1.5, leading=True) == []  # a fresh look, though still leading
    assert expiries(s.due(T0 + 2.5, leading=True)) == [Expire(a, a)]


def test_expiries_per_run_are_bounded_and_the_rest_come_next_run() -> None:
    log = Log()
    sessions = [log.session(f"s{k}", ttl_ms=1000) for k in range(MAX_EXPIRIES_PER_RUN + 44)]
    s = log.s
    assert s.due(T0, leading=True) == []
    first = expiries(s.due(T0 + 1.0, leading=True))
    assert len(first) == MAX_EXPIRIES_PER_RUN
    second = expiries(s.due(T0 + 1.1, leading=True))
    assert len(second) == 44
    assert sorted(e.session for e in first + second) == sessions
    assert s.due(T0 + 1.2, leading=True) == []


def assert_timer_restarts_on_leadership(make: Callable[[], CoordService]) -> None:
    log = Log(make())
    log.session("a", ttl_ms=1000)
    s = log.s
    s.due(T0, leading=True)
    s.due(T0 + 0.5, leading=False)
    assert s.due(T0 + 10.0, leading=True) == [], "a new leader expired a session at once"


# ---------------------------------------------------------------------- check the checks


def off_by_one_pager(
    changes: list[Change], cursor: Cursor, end: int, budget: int = 1
) -> WatchPage:
    """BROKEN ON PURPOSE: a cut within an index resumes one change too far."""
    page = page_of(changes, cursor, end, budget)
    if page.next.skip:
        return WatchPage(page.changes, Cursor(page.next.index, page.next.skip + 1))
    return page


def test_the_paging_check_catches_a_cursor_that_skips_a_change() -> None:
    with pytest.raises(AssertionError):
        assert_pages_cover(off_by_one_pager)


class ForgetfulService(CoordService):
    """BROKEN ON PURPOSE: keeps its timers across a change of leadership."""

    def due(self, now: float, leading: bool) -> list[bytes]:
        if not leading:
            return []
        self._leading = True
        return super().due(now, leading)


def test_the_timer_check_catches_timers_kept_across_leaderships() -> None:
    assert_timer_restarts_on_leadership(CoordService)
    with pytest.raises(AssertionError):
        assert_timer_restarts_on_leadership(ForgetfulService)


class NewestFirstCache(ResultCache):
    """BROKEN ON PURPOSE: evicts the newest results first."""

    def put(self, client: str, seq: int, index: int, result: bytes) -> None:
        key = (client, seq)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= RESULT_OVERHEAD + len(old[1])
        while self._entries and (len(self._entries) >= self.max_entries
                                 or self.bytes + RESULT_OVERHEAD + len(result) > self.max_bytes):
            _, (_, gone) = self._entries.popitem(last=True)
            self.bytes -= RESULT_OVERHEAD + len(gone)
        self._entries[key] = (index, result)
        self.bytes += RESULT_OVERHEAD + len(result)


def test_the_cache_check_catches_newest_first_eviction() -> None:
    with pytest.raises(AssertionError):
        assert_cache_evicts_oldest_first(
            lambda: NewestFirstCache(max_bytes=6 * RESULT_OVERHEAD, max_entries=5)
        )


def sloppy_decode_get(data: bytes) -> tuple[bytes, int, int] | None:
    """BROKEN ON PURPOSE: trusts the fields' types and count."""
    f = msgpack.unpackb(data)
    return None if f[1] is None else (f[1], f[2] + 0, f[3] + 0)


def test_the_fuzz_check_catches_a_decoder_that_trusts_its_input() -> None:
    good = [answer(Log().s, "get", "k"), msgpack.packb([1, b"v", 2, 0])]
    with pytest.raises(Exception) as info:
        assert_only_wire_errors([sloppy_decode_get], good)
    assert not isinstance(info.value, WireError)
