"""The coordination state machine (paxos/coord): encoding, each recipe's rules, bounds,
watches and snapshots."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest

from paxos.coord import (
    Acquire,
    Campaign,
    Cas,
    Close,
    Compacted,
    CoordCommand,
    CoordDecodeError,
    CoordLimits,
    CoordMachine,
    CoordSnapshotError,
    Delete,
    Enter,
    Expire,
    Get,
    Open,
    Put,
    Release,
    Renew,
    Resign,
    Result,
    UnknownFormat,
    decode,
    encode,
)
from paxos.coord.machine import GRANT, RELEASE, VANISH
from paxos.types import Command, Delivery


class Log:
    """Applies commands to a machine at consecutive indexes, as a replica delivers them."""

    def __init__(self, machine: CoordMachine | None = None) -> None:
        self.m = machine if machine is not None else CoordMachine()
        self.index = self.m.index

    def __call__(self, command: CoordCommand | bytes) -> Result:
        self.index += 1
        payload = command if isinstance(command, bytes) else encode(command)
        return self.m.apply(Delivery(self.index, self.index, Command("c#1", self.index, payload)))

    def session(self, name: str = "s", ttl_ms: int = 1000) -> int:
        result = self(Open(name, ttl_ms))
        assert result.ok
        return result.session


ALL: list[CoordCommand] = [
    Open("app", 5000),
    Renew(3),
    Close(3),
    Expire(3, 17),
    Put("k", b"v"),
    Put("k", b"\x00" * 10, ephemeral=4, fence=("lock", 9)),
    Delete("k"),
    Delete("k", fence=("l", 2)),
    Cas("k", 0, b"x"),
    Get("k"),
    Acquire("lock", 4),
    Release("lock", 4, 12),
    Campaign("leader", 4, b"host:1"),
    Resign("leader", 4),
    Enter("b", 4, 3),
]


# ---------------------------------------------------------------------- encoding


@pytest.mark.parametrize("command", ALL, ids=lambda c: type(c).__name__)
def test_encoding_round_trips(command: CoordCommand) -> None:
    data = encode(command)
    assert data[1] == 1  # the format version leads
    assert decode(data) == command


def test_an_unknown_format_is_a_typed_error() -> None:
    data = msgpack.packb([2, 2, 7])
    with pytest.raises(UnknownFormat) as info:
        decode(data)
    assert info.value.version == 2
    assert isinstance(info.value, CoordDecodeError)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"c1:app#1:3",
        b"\x92",  # truncated
        msgpack.packb([1]),
        msgpack.packb([1, 99, 1]),  # unknown tag
        msgpack.packb([1, 2]),  # wrong arity
        msgpack.packb([1, 2, 1, 2]),
        msgpack.packb([1, 2, True]),  # a bool is not a session id
        msgpack.packb([1, 2, -1]),
        msgpack.packb([1, 5, "k", "not bytes", 0, None]),
        msgpack.packb([1, 5, "k", b"v", 0, ["l"]]),  # a fence is [name, token]
        msgpack.packb([1, 5, "k", b"v", 0, [b"l", 1]]),
        msgpack.packb([True, 2, 1]),  # the version is an int, not a bool
        msgpack.packb([1, "2", 1]),
        msgpack.packb([1, 8, b"\xff"], use_bin_type=False),  # raw non-utf-8 text
        msgpack.packb([1, 2, 2**64 - 1]),
        b"\x93\x01\x02\xc1",  # a reserved byte
        msgpack.packb([1, 5, "k", b"v" * (1 << 20), 0, None]),  # too large
    ],
)
def test_bad_bytes_are_a_typed_error(data: bytes) -> None:
    with pytest.raises(CoordDecodeError):
        decode(data)


def test_random_bytes_never_raise_anything_else() -> None:
    rng = random.Random(14)
    good = [encode(c) for c in ALL]
    for _ in range(3000):
        data = bytearray(rng.choice(good))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(CoordDecodeError):
            decode(bytes(data))


def test_malformed_payloads_are_refused_by_the_machine() -> None:
    log = Log()
    result = log(b"not a command")
    assert not result.ok and result.reason.startswith("malformed")
    assert log.m.index == 1


# ---------------------------------------------------------------------- sessions, keys


def test_expiry_only_if_idle_since_the_proposed_index() -> None:
    log = Log()
    s = log.session()
    assert log.m.session(s) is not None and log.m.session(s).last == s  # type: ignore[union-attr]
    renewed = log(Renew(s))
    assert renewed.ok
    # Proposed from the open's index; the renewal in between wins the race.
    stale = log(Expire(s, s))
    assert not stale.ok and stale.reason == "renewed since"
    assert log.m.session(s) is not None
    expired = log(Expire(s, renewed.index))
    assert expired.ok and log.m.session(s) is None
    assert not log(Expire(s, renewed.index)).ok  # a duplicate: a no-op
    assert not log(Renew(s)).ok


def test_any_use_of_a_session_is_activity() -> None:
    log = Log()
    s = log.session()
    used = log(Put("e", b"1", ephemeral=s))
    assert not log(Expire(s, s)).ok
    assert log.m.session(s).last == used.index  # type: ignore[union-attr]


def test_ephemeral_keys_vanish_when_their_session_ends() -> None:
    log = Log()
    a, b = log.session("a"), log.session("b")
    log(Put("x/1", b"1", ephemeral=a))
    log(Put("x/2", b"2", ephemeral=a))
    log(Put("x/3", b"3", ephemeral=b))
    log(Put("x/p", b"p"))
    end = log(Expire(a, log.m.session(a).last))  # type: ignore[union-attr]
    assert end.ok
    assert [(c.kind, c.key) for c in end.changes if c.kind == VANISH] == [
        (VANISH, "x/1"), (VANISH, "x/2"),
    ]
    assert all(c.index == end.index for c in end.changes)
    assert log.m.keys("x/") == ["x/3", "x/p"]
    closed = log(Close(b))
    assert closed.ok and log.m.keys() == ["x/p"]


def test_a_persistent_put_takes_a_key_from_its_session() -> None:
    log = Log()
    a = log.session()
    log(Put("k", b"1", ephemeral=a))
    log(Put("k", b"2"))
    log(Close(a))
    assert log.m.read("k") == (b"2", 3, 0)


def test_cas_compares_versions() -> None:
    log = Log()
    first = log(Cas("k", 0, b"a"))
    assert first.ok and first.version == first.index
    assert not log(Cas("k", 0, b"b")).ok
    wrong = log(Cas("k", first.index + 1, b"b"))
    assert not wrong.ok and wrong.version == first.index
    assert log(Cas("k", first.index, b"b")).ok
    got = log(Get("k"))
    assert got.value == b"b" and got.version == got.index - 1
    assert log(Delete("k")).ok
    assert log(Get("k")).version == 0
    assert not log(Delete("k")).ok


# ---------------------------------------------------------------------- locks, fencing


def test_locks_are_granted_fifo_with_the_grant_index_as_token() -> None:
    log = Log()
    a, b, c = log.session("a"), log.session("b"), log.session("c")
    got = log(Acquire("L", a))
    assert got.ok and got.token == got.index
    assert log(Acquire("L", b)).reason == "queued"
    assert log(Acquire("L", c)).reason == "queued"
    assert log(Acquire("L", a)).token == got.token  # already held: the same grant
    assert not log(Release("L", a, got.token - 1)).ok  # not its token
    released = log(Release("L", a, got.token))
    assert released.ok
    grant = [ch for ch in released.changes if ch.kind == GRANT]
    assert [(g.session, g.version) for g in grant] == [(b, released.index)]
    assert log.m.lock("L").holder == b  # type: ignore[union-attr]
    assert log.m.lock("L").waiters == (c,)  # type: ignore[union-attr]


def test_a_paused_former_holder_cannot_write_with_its_token() -> None:
    log = Log()
    a, b = log.session("a"), log.session("b")
    token_a = log(Acquire("L", a)).token
    assert log(Put("data", b"by a", fence=("L", token_a))).ok
    log(Acquire("L", b))
    # a pauses; its lease lapses; the leader's timer proposes the expiry.
    end = log(Expire(a, log.m.session(a).last))  # type: ignore[union-attr]
    assert end.ok
    token_b = log.m.lock("L").token  # type: ignore[union-attr]
    assert token_b == end.index > token_a
    # a wakes up and writes with the token it still believes in: refused everywhere.
    late = log(Put("data", b"late a", fence=("L", token_a)))
    assert not late.ok and late.reason == "fence: stale token"
    assert not log(Delete("data", fence=("L", token_a))).ok
    assert log(Put("data", b"by b", fence=("L", token_b))).ok
    log(Release("L", b, token_b))
    assert log(Put("data", b"x", fence=("L", token_b))).reason == "fence: lock not held"
    assert log.m.read("data")[0] == b"by b"  # type: ignore[index]


def test_a_waiter_can_leave_the_queue_and_an_ended_waiter_is_skipped() -> None:
    log = Log()
    a, b, c = log.session("a"), log.session("b"), log.session("c")
    token = log(Acquire("L", a)).token
    log(Acquire("L", b))
    log(Acquire("L", c))
    assert log(Release("L", b, 0)).reason == "left the queue"
    log(Acquire("L", b))
    log(Close(c))  # c was first in line now
    end = log(Release("L", a, token))
    assert log.m.lock("L").holder == b  # type: ignore[union-attr]
    assert log.m.lock("L").token == end.index  # type: ignore[union-attr]
    assert [ch.kind for ch in end.changes] == [RELEASE, GRANT]
    log(Release("L", b, end.index))
    assert log.m.lock("L") is None  # a free lock is forgotten


def test_election_hands_over_when_the_leader_session_expires() -> None:
    log = Log()
    a, b = log.session("a"), log.session("b")
    won = log(Campaign("E", a, b"host-a"))
    assert log.m.leader("E") == (a, b"host-a", won.index)
    assert log(Campaign("E", b, b"host-b")).reason == "queued"
    end = log(Expire(a, log.m.session(a).last))  # type: ignore[union-attr]
    assert log.m.leader("E") == (b, b"host-b", end.index)
    assert log(Resign("E", b)).ok
    assert log.m.leader("E") is None


def test_barrier_releases_when_all_parties_are_in() -> None:
    log = Log()
    a, b, c = log.session("a"), log.session("b"), log.session("c")
    assert log(Enter("B", a, 3)).reason == "waiting"
    assert log(Enter("B", a, 3)).version == 1  # entering twice counts once
    assert not log(Enter("B", b, 2)).ok  # parties mismatch
    log(Enter("B", b, 3))
    log(Close(b))  # an ended session leaves
    assert log(Enter("B", c, 3)).reason == "waiting"
    d = log.session("d")
    done = log(Enter("B", d, 3))
    assert done.ok and done.reason == "" and done.changes[-1].kind == "barrier"
    assert log(Enter("B", a, 3)).reason == "waiting"  # a new round


# ---------------------------------------------------------------------- watches


def test_watch_resumes_from_an_index_without_gaps_or_repeats() -> None:
    log = Log()
    for n in range(10):
        log(Put(f"w/{n}", b"v"))
        log(Put(f"other/{n}", b"v"))
    seen = []
    since = 1
    while True:
        answer = log.m.changes("w/", since, limit=3)
        assert not isinstance(answer, Compacted)
        seen.extend(c.key for c in answer.changes)
        if answer.next == since:
            break
        since = answer.next
        if not answer.changes:
            break
    assert seen == [f"w/{n}" for n in range(10)]
    log(Put("w/late", b"v"))
    answer = log.m.changes("w/", since)
    assert not isinstance(answer, Compacted)
    assert [c.key for c in answer.changes] == ["w/late"]


def test_watch_below_the_window_is_compacted() -> None:
    log = Log(CoordMachine(CoordLimits(max_changes=5)))
    for n in range(10):
        log(Put(f"k{n}", b"v"))
    assert log.m.changes("", 1) == Compacted(6)
    answer = log.m.changes("", 6)
    assert not isinstance(answer, Compacted)
    assert [c.index for c in answer.changes] == [6, 7, 8, 9, 10]


def test_the_change_log_drops_whole_indexes() -> None:
    log = Log(CoordMachine(CoordLimits(max_changes=4)))
    s = log.session()
    for n in range(3):
        log(Put(f"e{n}", b"v", ephemeral=s))
    end = log(Close(s))  # four changes at one index: close and three vanished keys
    log(Put("after", b"v"))
    answer = log.m.changes("", end.index)
    assert isinstance(answer, Compacted) and answer.earliest == end.index + 1


# ---------------------------------------------------------------------- bounds


def test_bounds_refuse_with_reasons() -> None:
    limits = CoordLimits(
        max_key_bytes=8, max_value_bytes=16, quota_bytes=100, max_sessions=2, max_waiters=1,
        max_locks=1, max_barriers=1, max_parties=3,
    )
    log = Log(CoordMachine(limits))
    assert log(Put("k" * 9, b"v")).reason == "key too long"
    assert log(Put("k", b"v" * 17)).reason == "value too long"
    assert log(Put("", b"v")).reason == "empty key"
    a, b = log.session("a"), log.session("b")
    assert log(Open("c", 10)).reason == "too many sessions"
    assert log(Open("c", 0)).reason == "ttl must be >= 1 ms"
    assert log(Put("k1", b"v" * 16)).ok
    assert log(Put("k2", b"v" * 16)).ok
    assert log(Put("k3", b"v" * 16)).reason == "quota"
    assert log(Put("k1", b"")).ok  # shrinking is always possible
    assert log.m.state_bytes <= 100
    log(Acquire("L", a))
    log(Acquire("L", b))
    assert log(Acquire("M", a)).reason == "too many locks"
    log(Close(b))
    assert log(Enter("B", a, 4)).reason == "bad parties"
    assert log(Enter("B", a, 3)).ok
    assert log(Enter("C", a, 3)).reason == "too many barriers"
    assert log(Put("x", b"", ephemeral=999)).reason == "no such session"


def test_state_does_not_grow_with_history() -> None:
    log = Log(CoordMachine(CoordLimits(max_changes=50)))
    sizes = []
    for round_ in range(200):
        s = log.session(f"s{round_}")
        token = log(Acquire("L", s)).token
        log(Put("k", b"v" * 10, ephemeral=s, fence=("L", token)))
        log(Enter("B", s, 2))
        log(Expire(s, log.m.session(s).last))  # type: ignore[union-attr]
        sizes.append(len(log.m.snapshot()))
    # (a few bytes more as the indexes and names in it get longer)
    assert max(sizes[100:]) <= max(sizes[50:100]) + 32


# ---------------------------------------------------------------------- snapshots


def random_commands(rng: random.Random, count: int) -> list[CoordCommand]:
    out: list[CoordCommand] = []
    sessions = [0]
    for i in range(1, count + 1):
        s = rng.choice(sessions)
        k = f"k{rng.randrange(6)}"
        lock = rng.choice(("L", "E"))
        op = rng.randrange(12)
        if op == 0 or len(sessions) < 3:
            out.append(Open(f"n{i}", 100))
            sessions.append(i)
        elif op == 1:
            out.append(Renew(s))
        elif op == 2:
            out.append(Expire(s, rng.randint(max(0, i - 5), i)))
        elif op == 3:
            out.append(Put(k, b"v%d" % i, ephemeral=s if rng.random() < 0.5 else 0))
        elif op == 4:
            out.append(Put(k, b"f", fence=(lock, rng.randint(max(0, i - 10), i))))
        elif op == 5:
            out.append(Delete(k))
        elif op == 6:
            out.append(Cas(k, rng.randint(0, i), b"c"))
        elif op == 7:
            out.append(Acquire(lock, s))
        elif op == 8:
            out.append(Release(lock, s, rng.randint(max(0, i - 10), i)))
        elif op == 9:
            out.append(Campaign(lock, s, b"me"))
        elif op == 10:
            out.append(Enter("B", s, 2))
        else:
            out.append(Close(s) if rng.random() < 0.3 else Get(k))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_snapshot_restore_is_equivalent(seed: int) -> None:
    rng = random.Random(seed)
    commands = random_commands(rng, 400)
    cut = rng.randint(1, 399)
    whole = Log(CoordMachine(CoordLimits(max_changes=40)))
    results = [whole(c) for c in commands]
    first = Log(CoordMachine(CoordLimits(max_changes=40)))
    for c in commands[:cut]:
        first(c)
    data = first.m.snapshot()
    other = CoordMachine(CoordLimits(max_changes=40))
    other.restore(data)
    assert other.snapshot() == data  # canonical: restoring changes no byte
    resumed = Log(other)
    assert [resumed(c) for c in commands[cut:]] == results[cut:]
    assert other.snapshot() == whole.m.snapshot()
    assert other.digest() == whole.m.digest()
    assert sum(r.ok for r in results) > 50  # the mix does exercise the machine


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        msgpack.packb([2, 0, [], [], [], [], [], 1]),
        msgpack.packb([1, 0, [], [["k", b"v", 1, 7]], [], [], [], 1]),  # owner not a session
        msgpack.packb([1, 0, [[1, "n", 1]], [], [], [], [], 1]),
        msgpack.packb([1, -1, [], [], [], [], [], 1]),
    ],
)
def test_restore_refuses_what_is_not_a_snapshot(data: bytes) -> None:
    m = CoordMachine()
    Log(m)(Put("keep", b"me"))
    before = m.snapshot()
    with pytest.raises(CoordSnapshotError):
        m.restore(data)
    assert m.snapshot() == before
