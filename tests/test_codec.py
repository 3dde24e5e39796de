"""Tests for paxos.codec: exact round trips, and typed rejection of every bad input."""

from __future__ import annotations

import dataclasses
import tracemalloc
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paxos import codec
from paxos.codec import (
    BYTES,
    CLIENT_ID,
    MAX_CLIENT_ID_LEN,
    MAX_FRAME_BYTES,
    MAX_NODE_ID,
    MAX_UINT,
    STR,
    UINT,
    VERSION,
    CodecError,
    decode,
    decode_message,
    decode_record,
    encode,
    optional,
    register,
    tuple_of,
)
from paxos.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Commit,
    Forward,
    Heartbeat,
    HeartbeatReply,
    Message,
    Nack,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    SnapshotChunk,
    SnapshotRequest,
    TimeoutNow,
)
from paxos.records import AcceptRecord, CommitRecord, PromiseRecord, Record
from paxos.types import MAX_ROUND, NOOP, ZERO_BALLOT, Ballot, Command

B = Ballot(3, 2)
CMDS = (
    Command("alice", 1, b"hello"),
    Command("bob", 7, b""),
    Command("\u00e9\u4e2d\U0001f600", 2, bytes(range(256))),
)
BIG = tuple(Command(f"client-{i % 13}", i + 1, bytes([i % 256]) * 100) for i in range(256))

SAMPLES: dict[type, list[Any]] = {
    Prepare: [Prepare(1, B, 0), Prepare(3, Ballot(2**40, 3), 2**63 - 1)],
    Promise: [
        Promise(2, B, 5, (), 4, 0),
        Promise(2, B, 5, ((5, Ballot(1, 1), CMDS), (6, Ballot(2, 3), NOOP), (9, B, BIG)), 4, 12),
    ],
    Accept: [Accept(1, B, 10, NOOP, 9), Accept(1, B, 10, CMDS, 9), Accept(2, B, 11, BIG, 0)],
    Accepted: [Accepted(2, B, 10), Accepted(5, Ballot(0, 5), 0)],
    Nack: [Nack(3, B, Ballot(4, 1)), Nack(3, B, ZERO_BALLOT)],
    Commit: [Commit(1, B, 100)],
    Heartbeat: [Heartbeat(1, B, 0)],
    HeartbeatReply: [HeartbeatReply(2, B, 7), HeartbeatReply(2, ZERO_BALLOT, 0)],
    PreVote: [PreVote(3, Ballot(9, 3))],
    PreVoteReply: [PreVoteReply(1, B, True), PreVoteReply(2, B, False)],
    CatchupRequest: [CatchupRequest(1, 0, 0), CatchupRequest(1, 5, 2**63 - 1)],
    CatchupReply: [CatchupReply(2, (), 0), CatchupReply(2, ((1, CMDS), (2, NOOP), (3, BIG)), 3)],
    SnapshotChunk: [
        SnapshotChunk(2, 7, 300, 123, 0, b"", 5),
        SnapshotChunk(2, 7, 3, 9, 1, b"xy", 7),
    ],
    SnapshotRequest: [SnapshotRequest(2, 7, 123, 256)],
    TimeoutNow: [TimeoutNow(2, B, 3, 7)],
    Forward: [Forward(2, ()), Forward(2, CMDS), Forward(3, BIG)],
    PromiseRecord: [PromiseRecord(B), PromiseRecord(ZERO_BALLOT)],
    AcceptRecord: [AcceptRecord(0, B, NOOP), AcceptRecord(12, B, CMDS), AcceptRecord(13, B, BIG)],
    CommitRecord: [CommitRecord(0), CommitRecord(2**40)],
}
ALL_SAMPLES = [s for group in SAMPLES.values() for s in group]


def assert_exact(a: object, b: object) -> None:
    """Equal, and of the exact same types all the way down (no lists for tuples)."""
    assert type(a) is type(b), (type(a), type(b))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            assert_exact(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, tuple):
        assert isinstance(b, tuple)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_exact(x, y)
    else:
        assert a == b


def frame(*items: object) -> bytes:
    data: bytes = msgpack.packb(list(items), use_bin_type=True)
    return data


def rejects(data: bytes, **kw: Any) -> str:
    with pytest.raises(CodecError) as info:
        decode(data, **kw)
    return str(info.value)


# --------------------------------------------------------------------------- round trips


def test_samples_cover_every_message_and_record_class() -> None:
    expected = set(typing.get_args(Message)) | set(typing.get_args(Record))
    assert set(SAMPLES) == expected
    for cls in expected:
        assert cls in codec._BY_CLASS


@pytest.mark.parametrize("obj", ALL_SAMPLES, ids=lambda o: type(o).__name__)
def test_round_trip_is_exact(obj: object) -> None:
    data = encode(obj)
    assert isinstance(data, bytes)
    assert_exact(decode(data), obj)
    assert_exact(decode(bytearray(data)), obj)
    assert_exact(decode(memoryview(data)), obj)
    assert encode(obj, validate=True) == data


def test_frame_layout() -> None:
    m = Accept(1, Ballot(3, 2), 10, (Command("c", 4, b"p"),), 9)
    assert msgpack.unpackb(encode(m)) == [VERSION, 3, 1, [3, 2], 10, [["c", 4, b"p"]], 9]
    entries = ((5, Ballot(1, 1), (Command("x", 1, b"y"),)),)
    raw = msgpack.unpackb(encode(Promise(2, B, 5, entries, 4, 0)))
    assert raw == [VERSION, 2, 2, [3, 2], 5, [[5, [1, 1], [["x", 1, b"y"]]]], 4, 0]


def test_decode_message_and_decode_record() -> None:
    m = Accepted(2, B, 10)
    r = PromiseRecord(B)
    assert decode_message(encode(m)) == m
    assert decode_record(encode(r)) == r
    with pytest.raises(CodecError):
        decode_message(encode(r))
    with pytest.raises(CodecError):
        decode_record(encode(m))


def test_client_id_length_limit() -> None:
    ok = Forward(1, (Command("\U0001f600" * MAX_CLIENT_ID_LEN, 1, b""),))
    assert decode(encode(ok)) == ok
    too_long = Forward(1, (Command("a" * (MAX_CLIENT_ID_LEN + 1), 1, b""),))
    with pytest.raises(CodecError):
        decode(encode(too_long))
    with pytest.raises(CodecError):
        encode(too_long, validate=True)


_ballots = st.builds(Ballot, st.integers(1, MAX_ROUND), st.integers(1, MAX_NODE_ID)) | st.just(
    ZERO_BALLOT
)
_nodes = st.integers(1, MAX_NODE_ID)
_uints = st.integers(0, MAX_UINT)
_commands = st.builds(Command, st.text(max_size=MAX_CLIENT_ID_LEN), _uints, st.binary(max_size=64))
_values = st.lists(_commands, max_size=5).map(tuple)
_messages = st.one_of(
    st.builds(Prepare, _nodes, _ballots, _uints),
    st.builds(
        Promise,
        _nodes,
        _ballots,
        _uints,
        st.lists(st.tuples(_uints, _ballots, _values), max_size=3).map(tuple),
        _uints,
        _uints,
    ),
    st.builds(Accept, _nodes, _ballots, _uints, _values, _uints),
    st.builds(Accepted, _nodes, _ballots, _uints),
    st.builds(Nack, _nodes, _ballots, _ballots),
    st.builds(Commit, _nodes, _ballots, _uints),
    st.builds(Heartbeat, _nodes, _ballots, _uints),
    st.builds(HeartbeatReply, _nodes, _ballots, _uints),
    st.builds(PreVote, _nodes, _ballots),
    st.builds(PreVoteReply, _nodes, _ballots, st.booleans()),
    st.builds(CatchupRequest, _nodes, _uints, _uints),
    st.builds(
        CatchupReply, _nodes, st.lists(st.tuples(_uints, _values), max_size=3).map(tuple), _uints
    ),
    st.builds(Forward, _nodes, _values),
    st.builds(PromiseRecord, _ballots),
    st.builds(AcceptRecord, _uints, _ballots, _values),
    st.builds(CommitRecord, _uints),
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_messages)
def test_round_trip_random_objects(obj: object) -> None:
    assert_exact(decode(encode(obj)), obj)


# --------------------------------------------------------------------------- bad input


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


@pytest.mark.parametrize("obj", [SAMPLES[Accept][1], SAMPLES[Promise][1], SAMPLES[Accepted][0]])
def test_every_truncation_is_rejected(obj: object) -> None:
    data = encode(obj)
    if len(data) > 2000:  # keep it fast: BIG-carrying samples are cut at a stride
        cuts: Any = range(0, len(data), 7)
    else:
        cuts = range(len(data))
    for cut in cuts:
        rejects(data[:cut])


def test_trailing_bytes_are_rejected() -> None:
    data = encode(Accepted(2, B, 10))
    assert "malformed" in rejects(data + b"\x00")
    assert "malformed" in rejects(data + data)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=256))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        obj = decode(data)
    except CodecError:
        return
    assert_exact(decode(encode(obj)), obj)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(st.sampled_from(ALL_SAMPLES[:20]), st.data())
def test_mutated_frames_never_crash(obj: object, data: st.DataObject) -> None:
    raw = bytearray(encode(obj))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        out = decode(bytes(raw))
    except CodecError:
        return
    assert_exact(decode(encode(out)), out)


_msgpack_objects = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3), inner, min_size=1, max_size=2)
    ),
    max_leaves=12,
)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(sorted(codec._BY_CODE)),
    st.lists(_msgpack_objects, max_size=6),
)
def test_structured_garbage_never_crashes(code: int, fields: list[object]) -> None:
    data = frame(VERSION, code, *fields)
    try:
        out = decode(data)
    except CodecError:
        return
    assert_exact(decode(encode(out)), out)


def test_not_bytes_is_rejected() -> None:
    for bad in ["abc", None, 5, [1, 2]]:
        with pytest.raises(CodecError):
            decode(bad)  # type: ignore[arg-type]


def test_empty_and_non_array_frames() -> None:
    assert "empty" in rejects(b"")
    for top in [{}, {"a": 1}, 1, "x", b"x", None, 1.5, [], [VERSION]]:
        rejects(msgpack.packb(top, use_bin_type=True))


def test_wrong_version() -> None:
    good = [4, 2, [3, 2], 10]
    assert frame(VERSION, *good)  # sanity
    for version in [VERSION + 1, 0, -1, True, "1", 1.0, None, [1]]:
        assert "version" in rejects(frame(version, *good))


def test_unknown_type_code() -> None:
    for code in [0, 17, 31, 63, 99, 255, 256, -1, 2**64 - 1, "4", 4.0, None, [4]]:
        assert "type code" in rejects(frame(VERSION, code, 2, [3, 2], 10))
    # True == 1 in Python, but a bool is not a type code.
    assert "type code" in rejects(frame(VERSION, True, 2, [3, 2], 10))


def test_wrong_arity() -> None:
    assert decode(frame(VERSION, 4, 2, [3, 2], 10)) == Accepted(2, B, 10)
    assert "fields" in rejects(frame(VERSION, 4, 2, [3, 2]))
    assert "fields" in rejects(frame(VERSION, 4, 2, [3, 2], 10, 11))
    assert "fields" in rejects(frame(VERSION, 3, 1, [3, 2], 10, []))
    assert "fields" in rejects(frame(VERSION, 1, 1, [3, 2]))
    assert "fields" in rejects(frame(VERSION, 32))
    assert "fields" in rejects(frame(VERSION, 9, 1, [3, 2], 0))


BAD_FIELDS: list[tuple[str, bytes]] = [
    ("bool for src", frame(VERSION, 4, True, [3, 2], 10)),
    ("bool for slot", frame(VERSION, 4, 2, [3, 2], False)),
    ("float slot", frame(VERSION, 4, 2, [3, 2], 10.0)),
    ("nil slot", frame(VERSION, 4, 2, [3, 2], None)),
    ("str slot", frame(VERSION, 4, 2, [3, 2], "10")),
    ("negative slot", frame(VERSION, 4, 2, [3, 2], -1)),
    ("src 0", frame(VERSION, 4, 0, [3, 2], 10)),
    ("negative src", frame(VERSION, 4, -2, [3, 2], 10)),
    ("short ballot", frame(VERSION, 4, 2, [3], 10)),
    ("long ballot", frame(VERSION, 4, 2, [3, 2, 1], 10)),
    ("ballot not array", frame(VERSION, 4, 2, 3, 10)),
    ("ballot map", frame(VERSION, 4, 2, {"r": 3}, 10)),
    ("negative round", frame(VERSION, 4, 2, [-1, 2], 10)),
    ("ballot node 0", frame(VERSION, 4, 2, [3, 0], 10)),
    ("bool round", frame(VERSION, 4, 2, [True, 2], 10)),
    ("bool ballot node", frame(VERSION, 4, 2, [3, True], 10)),
    ("str payload", frame(VERSION, 3, 1, [3, 2], 1, [["c", 1, "text"]], 0)),
    ("array payload", frame(VERSION, 3, 1, [3, 2], 1, [["c", 1, [1]]], 0)),
    ("bytes client", frame(VERSION, 3, 1, [3, 2], 1, [[b"c", 1, b"p"]], 0)),
    ("negative seq", frame(VERSION, 3, 1, [3, 2], 1, [["c", -1, b"p"]], 0)),
    ("bool seq", frame(VERSION, 3, 1, [3, 2], 1, [["c", True, b"p"]], 0)),
    ("short command", frame(VERSION, 3, 1, [3, 2], 1, [["c", 1]], 0)),
    ("long command", frame(VERSION, 3, 1, [3, 2], 1, [["c", 1, b"p", 4]], 0)),
    ("command not array", frame(VERSION, 3, 1, [3, 2], 1, [b"c"], 0)),
    ("one bad command late", frame(VERSION, 3, 1, [3, 2], 1, [["c", 1, b""]] * 50 + [7], 0)),
    ("value not array", frame(VERSION, 3, 1, [3, 2], 1, b"", 0)),
    ("value map", frame(VERSION, 3, 1, [3, 2], 1, {}, 0)),
    ("value nil", frame(VERSION, 3, 1, [3, 2], 1, None, 0)),
    ("long client id", frame(VERSION, 13, 1, [["x" * 257, 1, b""]])),
    ("negative commit", frame(VERSION, 3, 1, [3, 2], 1, [], -5)),
    ("int for bool", frame(VERSION, 10, 1, [3, 2], 1)),
    ("nil for bool", frame(VERSION, 10, 1, [3, 2], None)),
    ("promise entry short", frame(VERSION, 2, 2, [3, 2], 5, [[5, [1, 1]]], 4)),
    ("promise entry bad ballot", frame(VERSION, 2, 2, [3, 2], 5, [[5, [1], []]], 4)),
    ("promise entry negative slot", frame(VERSION, 2, 2, [3, 2], 5, [[-5, [1, 1], []]], 4)),
    ("promise entries not array", frame(VERSION, 2, 2, [3, 2], 5, 7, 4)),
    ("chosen entry long", frame(VERSION, 12, 2, [[1, [], 3]], 3)),
    ("chosen entry bad value", frame(VERSION, 12, 2, [[1, [["c", 1, "s"]]]], 3)),
    ("record bad ballot", frame(VERSION, 32, [1, -1])),
    ("record str slot", frame(VERSION, 33, "0", [1, 1], [])),
    ("ext type field", msgpack.packb([VERSION, 4, 2, [3, 2], msgpack.ExtType(1, b"")])),
    ("ext type with data", msgpack.packb([VERSION, 4, 2, [3, 2], msgpack.ExtType(1, b"abc")])),
    ("bad utf-8 str", b"\x93\x01\x0d\xa1\xff"),  # [1, 13, <str 0xff>]
]


@pytest.mark.parametrize(("why", "data"), BAD_FIELDS, ids=[w for w, _ in BAD_FIELDS])
def test_wrong_field_types_are_rejected(why: str, data: bytes) -> None:
    reason = rejects(data)
    assert reason
    assert len(reason) < 200  # short, bounded reason


def test_reasons_name_the_class_and_field() -> None:
    assert rejects(frame(VERSION, 1, 1, [3, 0], 0)).startswith("Prepare: ballot: ")
    assert rejects(frame(VERSION, 33, 1, [3, 2], [["c", 1, "s"]])).startswith(
        "AcceptRecord: value: "
    )
    assert rejects(frame(VERSION, 3, 1, [3, 2], -1, [], 0)).startswith("Accept: slot: ")
    assert rejects(frame(VERSION, 4, 1, [3, 2], None)).startswith("Accepted: slot: ")
    assert "x" * 100 not in rejects(frame(VERSION, 13, 1, [["x" * 300, 1, b""]]))  # bounded


def test_zero_ballot_is_the_only_ballot_with_node_zero() -> None:
    assert decode(frame(VERSION, 5, 3, [3, 2], [0, 0])) == Nack(3, B, ZERO_BALLOT)
    assert decode(frame(VERSION, 4, 2, [0, 4], 0)) == Accepted(2, Ballot(0, 4), 0)
    rejects(frame(VERSION, 5, 3, [3, 2], [1, 0]))


def test_oversized_frames() -> None:
    data = encode(SAMPLES[Accept][2])
    assert decode(data, max_frame_bytes=len(data)) == SAMPLES[Accept][2]
    assert "exceeds" in rejects(data, max_frame_bytes=len(data) - 1)
    with pytest.raises(CodecError, match="exceeds"):
        encode(SAMPLES[Accept][2], max_frame_bytes=100)
    assert MAX_FRAME_BYTES == 64 * 1024 * 1024
    huge = bytes(MAX_FRAME_BYTES + 1)  # zero pages; refused before any parsing
    assert "exceeds" in rejects(huge)


BOMBS = [
    b"\xdd\x80\x00\x00\x00",  # bare array32 of 2**31 items
    b"\xdd\xff\xff\xff\xff",  # array32 of 2**32 - 1 items
    # A well-formed Accept header whose value claims 2**31 commands.
    b"\x97\x01\x03\x01\x92\x03\x02\x01\xdd\x80\x00\x00\x00",
    b"\xc6\x7f\xff\xff\xff",  # bin32 of 2**31 - 1 bytes
    b"\xdb\x7f\xff\xff\xff",  # str32 of 2**31 - 1 bytes
    b"\xdf\x7f\xff\xff\xff",  # map32 of 2**31 - 1 pairs
    b"\xc9\x7f\xff\xff\xff\x01",  # ext32 of 2**31 - 1 bytes
    b"\x91" * 100_000,  # nesting far beyond the unpacker's stack
]


@pytest.mark.parametrize("bomb", BOMBS, ids=range(len(BOMBS)))
def test_msgpack_bombs_fail_fast_without_allocating(bomb: bytes) -> None:
    # Refused without allocating what the length fields claim; how fast is measured by
    # bench/speed_checks.py (a time limit in a test fails on a loaded machine).
    tracemalloc.start()
    try:
        rejects(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


# --------------------------------------------------------------------------- encode errors


def test_encode_rejects_unregistered_and_unencodable() -> None:
    @dataclasses.dataclass(frozen=True)
    class NotRegistered:
        x: int

    with pytest.raises(CodecError, match="unregistered"):
        encode(NotRegistered(1))
    with pytest.raises(CodecError):
        encode(Accepted(2, B, 2**64))  # beyond msgpack's integers
    with pytest.raises(CodecError):
        encode(Forward(1, (Command("c", 1, object()),)))  # type: ignore[arg-type]


def test_encode_validate_catches_mistyped_fields() -> None:
    bad: list[object] = [
        Accepted(True, B, 1),
        Accepted(2, B, -1),
        Accept(1, B, 1, (Command("c", 1, "str payload"),), 0),  # type: ignore[arg-type]
        PreVoteReply(1, B, 1),  # type: ignore[arg-type]
        AcceptRecord(1, Ballot(1, 0), ()),
    ]
    for obj in bad:
        encode(obj)  # no deep check by default (hot path)
        with pytest.raises(CodecError):
            encode(obj, validate=True)


# --------------------------------------------------------------------------- register


@dataclasses.dataclass(frozen=True, slots=True)
class _Submit:
    client: str
    seq: int
    payload: bytes
    note: str | None
    acks: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Empty:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class _Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n == 0:
            raise ValueError("n must not be 0")
        if self.n > 2**32:
            raise ValueError("too big " * 100)


_SUBMIT_SCHEMA = (CLIENT_ID, UINT, BYTES, optional(STR), tuple_of(UINT, max_len=3))
register(200, _Submit, _SUBMIT_SCHEMA)
register(201, _Empty, ())
register(202, _Positive, (UINT,))


def test_registered_types_round_trip() -> None:
    for obj in [
        _Submit("c", 1, b"p", None, ()),
        _Submit("\u00e9", 2, b"", "note", (1, 2, 3)),
        _Empty(),
        _Positive(5),
    ]:
        assert_exact(decode(encode(obj)), obj)
    assert msgpack.unpackb(encode(_Empty())) == [VERSION, 201]


def test_registered_types_are_validated() -> None:
    rejects(frame(VERSION, 200, "c", 1, b"p", None, (1, 2, 3, 4)))  # tuple too long
    rejects(frame(VERSION, 200, "c", 1, b"p", 5, ()))  # int for optional str
    rejects(frame(VERSION, 200, "c", 1, b"p", None, [True]))  # bool in tuple of uint
    rejects(frame(VERSION, 201, 1))  # arity
    # __post_init__ refusing is a CodecError too.
    assert "n must not be 0" in rejects(frame(VERSION, 202, 0))
    assert len(rejects(frame(VERSION, 202, 2**40))) < 200  # long foreign reasons are cut
    with pytest.raises(CodecError):
        decode_message(encode(_Empty()))


def test_register_is_idempotent_and_checks_its_arguments() -> None:
    register(200, _Submit, _SUBMIT_SCHEMA)  # same again: no-op

    @dataclasses.dataclass(frozen=True)
    class Other:
        x: int

    @dataclasses.dataclass
    class Mutable:
        x: int

    with pytest.raises(ValueError):
        register(200, Other, (UINT,))  # code taken
    with pytest.raises(ValueError):
        register(203, _Submit, _SUBMIT_SCHEMA)  # class taken
    with pytest.raises(ValueError):
        register(200, _Submit, (UINT,) * 5)  # same code, different schema
    for code in [0, 4, 63, 256, -1, True]:
        with pytest.raises(ValueError):
            register(code, Other, (UINT,))
    with pytest.raises(ValueError):
        register(204, Other, (UINT, UINT))  # arity mismatch
    with pytest.raises(TypeError):
        register(205, Mutable, (UINT,))
    with pytest.raises(TypeError):
        register(206, int, ())

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class KwOnly:
        x: int

    with pytest.raises(TypeError):
        register(207, KwOnly, (UINT,))
    assert Other not in codec._BY_CLASS


def test_frames_built_around_a_value_encoded_once_are_identical_to_encode() -> None:
    from paxos.codec import accept_value_bytes, encode_accept, encode_accept_record, encode_value

    value = tuple(Command(f"c{i}", i, b"x" * i) for i in range(1, 40))
    cases = [(1, Ballot(1, 1), 5, 3), (3, Ballot(70_000, 3), 2**33, 2**40)]
    for src, ballot, slot, commit in cases:
        msg = Accept(src, ballot, slot, value, commit)
        vb = encode_value(value)
        assert encode_accept(msg, vb) == encode(msg)
        assert encode_accept_record(AcceptRecord(slot, ballot, value), vb) == encode(
            AcceptRecord(slot, ballot, value)
        )
        frame = encode(msg)
        assert accept_value_bytes(frame, decode(frame)) == vb  # type: ignore[arg-type]
    # A frame with a non-canonical encoding around the value is not sliced.
    msg = Accept(1, Ballot(1, 1), 5, value, 3)
    odd = msgpack.packb([VERSION, 3, 1, [1, 1], 5, value, 3])[:-1] + b"\xcc\x03"  # commit as uint8
    assert decode(odd) == msg
    assert accept_value_bytes(odd, msg) is None


def test_rounds_node_ids_and_counters_are_bounded_so_their_successors_encode() -> None:
    """A round near 2**64 would be promised, persisted and then fail every encode of
    the next ballot, for good: the codec refuses what could lead there."""
    assert decode(encode(Prepare(1, Ballot(MAX_ROUND, 1), MAX_UINT))) == Prepare(
        1, Ballot(MAX_ROUND, 1), MAX_UINT
    )
    for bad in (
        frame(VERSION, 1, 1, [MAX_ROUND + 1, 1], 0),  # round beyond the bound
        frame(VERSION, 1, 1, [2**64 - 1, 1], 0),
        frame(VERSION, 1, 1, [1, MAX_NODE_ID + 1], 0),  # ballot's node id
        frame(VERSION, 1, MAX_NODE_ID + 1, [1, 1], 0),  # src
        frame(VERSION, 1, 1, [1, 1], MAX_UINT + 1),  # slot
        frame(VERSION, 13, 1, [["c", MAX_UINT + 1, b""]]),  # a command's seq
        frame(VERSION, 13, 1, [["c", 1, b""], ["c", 2**64 - 1, b""]]),  # ... in a batch
    ):
        rejects(bad)
