"""Versioned msgpack codec for wire messages, durable records and registered types.

Pure: no I/O. One frame is one msgpack array::

    [VERSION, TYPE_CODE, field1, field2, ...]

with the fields of the frozen dataclass in declaration order. Nested values:

* ``Ballot``  -> ``[round, node]``
* ``Command`` -> ``[client (str), seq (int), payload (bin)]``
* ``Value``   -> ``[command, ...]`` (``NOOP`` is ``[]``)
* Promise entries ``(slot, ballot, value)`` and CatchupReply entries ``(slot, value)``
  are nested arrays.

``decode(encode(m)) == m`` and the decoded object is the exact class, with tuples
(never lists) and real ``Ballot``/``Command`` NamedTuples.

Decoding trusts nothing. Every malformed, truncated, oversized, wrong-version,
unknown-type, wrong-arity or wrong-typed input raises :class:`CodecError` (a
``ValueError``) with a short reason, and nothing else. Validation rules:

* ints are exact ``int`` (a msgpack bool is refused where an int is expected);
* slots, sequence numbers, commit indexes and rounds are ``>= 0``;
* a node id (``src``, a ballot's node) is ``>= 1``; the only ballot with node 0
  is ``ZERO_BALLOT`` ``(0, 0)``, which messages may carry to mean "nothing
  promised yet" (e.g. a Nack from a fresh acceptor);
* client ids are ``str`` of at most :data:`MAX_CLIENT_ID_LEN` characters (may be empty);
  payloads are ``bytes`` (msgpack bin, never str);
* maps, floats, ext types and nil are refused unless a registered field allows them
  (only :func:`optional` allows nil).

Memory is bounded: the frame length is checked against ``max_frame_bytes`` before
unpacking and the unpacker's str/bin/array limits are tied to the frame length,
so a header claiming 2**31 items fails before anything is allocated. Worst-case
expansion of a hostile frame into Python objects is a small constant factor of
its length (tens of times, for arrays of tiny arrays); the runtime should pick a
``max_frame_bytes`` that fits its memory.

Encoding trusts the (type-checked) object and only wraps msgpack errors; pass
``validate=True`` (e.g. for records headed to disk) to also prove the frame
decodes back to an equal object.

Other packages add their own frozen dataclasses with :func:`register`::

    @dataclass(frozen=True, slots=True)
    class ClientSubmit:
        client: str
        seq: int
        payload: bytes

    register(64, ClientSubmit, (CLIENT_ID, UINT, BYTES))

Type codes 1..63 are reserved for the ``paxos`` package (registered below); other
code registers codes 64..255. Adding a type code needs no version bump (old
decoders reject unknown codes); changing the layout of an existing one does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from operator import attrgetter
from operator import call as _call
from typing import Any, Final

import msgpack

from paxos.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    ChosenEntry,
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
    PromiseEntry,
    SnapshotChunk,
    SnapshotRequest,
    TimeoutNow,
)
from paxos.records import AcceptRecord, CommitRecord, PromiseRecord, Record
from paxos.types import MAX_ROUND, Ballot, Command, Value

__all__ = [
    "BALLOT",
    "BOOL",
    "BYTES",
    "CLIENT_ID",
    "COMMAND",
    "INT",
    "MAX_CLIENT_ID_LEN",
    "MAX_FRAME_BYTES",
    "NODE_ID",
    "STR",
    "UINT",
    "VALUE",
    "VERSION",
    "CodecError",
    "Field",
    "accept_value_bytes",
    "decode",
    "decode_message",
    "decode_record",
    "encode",
    "encode_accept",
    "encode_accept_record",
    "encode_value",
    "optional",
    "register",
    "tuple_of",
]

#: Wire/record format version, the first element of every frame. 2: Promise in parts,
#: bounded ballot rounds and integers.
VERSION: Final = 2
#: Default bound on a frame's length, checked before unpacking (and after packing).
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
#: Longest client id (in characters) a Command may carry.
MAX_CLIENT_ID_LEN: Final = 256
#: Largest slot, seq, index or count: far from msgpack's 2**64 - 1, so that the next one
#: (x + 1) always encodes.
MAX_UINT: Final = 2**63 - 1
#: Largest node id (fits a signed 32-bit int everywhere it goes).
MAX_NODE_ID: Final = 2**31 - 1
#: First type code available to :func:`register`; lower codes belong to ``paxos``.
FIRST_USER_TYPE_CODE: Final = 64
#: Highest type code (keeps every code a one- or two-byte msgpack int).
LAST_TYPE_CODE: Final = 255


class CodecError(ValueError):
    """The bytes are not a valid frame, or the object cannot be encoded."""


# ---------------------------------------------------------------------------
# Field checks: take what msgpack produced, return the Python value or raise.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """How one dataclass field travels.

    ``check`` receives the raw unpacked msgpack object (tuples for arrays, ``str``,
    ``bytes``, ``int``, ``bool``, ``None``, ...), and returns the value to store in
    the field, or raises :class:`CodecError`. On encode the field's value is packed
    as is, so it must be msgpack-native (int, bool, str, bytes, None, or tuples /
    NamedTuples of those).
    """

    name: str
    check: Callable[[Any], Any]


def _uint(x: object) -> int:
    # Slots, seqs, rounds and commit indexes are never negative; a bool is not an int.
    # Below 2**63, so that x + 1 (the next slot, seq or index) still encodes.
    if type(x) is not int or not 0 <= x <= MAX_UINT:
        raise CodecError(f"expected int in 0..2**63-1, got {_describe(x)}")
    return x


def _int(x: object) -> int:
    if type(x) is not int:  # a bool is not an int here
        raise CodecError(f"expected int, got {_describe(x)}")
    return x


def _node_id(x: object) -> int:
    # Node ids start at 1; 0 only appears inside ZERO_BALLOT.
    if type(x) is not int or not 0 < x <= MAX_NODE_ID:
        raise CodecError(f"expected node id >= 1, got {_describe(x)}")
    return x


def _bool(x: object) -> bool:
    if type(x) is not bool:
        raise CodecError(f"expected bool, got {_describe(x)}")
    return x


def _str(x: object) -> str:
    if type(x) is not str:
        raise CodecError(f"expected str, got {_describe(x)}")
    return x


def _bytes(x: object) -> bytes:
    if type(x) is not bytes:
        raise CodecError(f"expected bytes, got {_describe(x)}")
    return x


def _client_id(x: object) -> str:
    # Bounded so a peer cannot make every replica keep huge session keys.
    if type(x) is not str or len(x) > MAX_CLIENT_ID_LEN:
        raise CodecError(f"expected client id (str <= {MAX_CLIENT_ID_LEN}), got {_describe(x)}")
    return x


_new_tuple = tuple.__new__


def _ballot(x: object) -> Ballot:
    if type(x) is not tuple or len(x) != 2:
        raise CodecError(f"expected ballot [round, node], got {_describe(x)}")
    r, n = x
    # Rounds are in [0, MAX_ROUND] (the rules never promise MAX_ROUND itself, so the next
    # ballot always encodes) and node ids >= 1; (0, 0) is ZERO_BALLOT, the only ballot
    # with node 0.
    if (
        type(r) is not int
        or type(n) is not int
        or not 0 <= r <= MAX_ROUND
        or n > MAX_NODE_ID
        or (n <= 0 and not (n == 0 and r == 0))
    ):
        raise CodecError(f"bad ballot {_describe(x)}")
    b: Ballot = _new_tuple(Ballot, x)
    return b


def _command(t: object) -> Command:
    if type(t) is not tuple or len(t) != 3:
        raise CodecError(f"expected command [client, seq, payload], got {_describe(t)}")
    c, s, p = t
    if (
        type(c) is not str
        or len(c) > MAX_CLIENT_ID_LEN  # bounded session keys
        or type(s) is not int
        or not 0 <= s <= MAX_UINT  # seqs are never negative, and seq + 1 encodes
        or type(p) is not bytes
    ):
        raise CodecError(f"bad command {_describe(t)}")
    cmd: Command = _new_tuple(Command, t)
    return cmd


#: Builds a Command from a checked 3-tuple without a Python-level call (a C partial).
_make_command: Callable[[tuple[Any, ...]], Command] = partial(_new_tuple, Command)
_TUPLE_ONLY = {tuple}
_THREE_ONLY = {3}
_STR_ONLY = {str}
_INT_ONLY = {int}
_BYTES_ONLY = {bytes}


def _value(x: object) -> Value:
    if type(x) is not tuple:
        raise CodecError(f"expected value (array of commands), got {_describe(x)}")
    if not x:
        return ()
    # Hot path (Accept batches of hundreds of commands): whole-batch checks whose
    # loops run in C (map/set/zip/min/max), then one C-level constructor per command.
    if set(map(type, x)) == _TUPLE_ONLY and set(map(len, x)) == _THREE_ONLY:
        clients, seqs, payloads = zip(*x, strict=True)
        if (
            set(map(type, clients)) == _STR_ONLY
            and set(map(type, seqs)) == _INT_ONLY  # exact int: a bool is refused
            and set(map(type, payloads)) == _BYTES_ONLY
            and min(seqs) >= 0  # seqs are never negative
            and max(seqs) <= MAX_UINT  # and seq + 1 still encodes
            and max(map(len, clients)) <= MAX_CLIENT_ID_LEN  # bounded session keys
        ):
            return tuple(map(_make_command, x))
    # Something is wrong: find the first bad command and say what it is.
    for t in x:
        _command(t)
    raise CodecError("bad value")  # unreachable: _command raised


def _promise_entries(x: object) -> tuple[PromiseEntry, ...]:
    if type(x) is not tuple:
        raise CodecError(f"expected promise entries array, got {_describe(x)}")
    out: list[PromiseEntry] = []
    for e in x:
        if type(e) is not tuple or len(e) != 3:
            raise CodecError(f"expected [slot, ballot, value], got {_describe(e)}")
        out.append((_uint(e[0]), _ballot(e[1]), _value(e[2])))
    return tuple(out)


def _chosen_entries(x: object) -> tuple[ChosenEntry, ...]:
    if type(x) is not tuple:
        raise CodecError(f"expected chosen entries array, got {_describe(x)}")
    out: list[ChosenEntry] = []
    for e in x:
        if type(e) is not tuple or len(e) != 2:
            raise CodecError(f"expected [slot, value], got {_describe(e)}")
        out.append((_uint(e[0]), _value(e[1])))
    return tuple(out)


def _short(text: str, limit: int = 160) -> str:
    """Bound a reason built from foreign text (exception messages)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(x: object) -> str:
    """A short, bounded description of a bad input for error messages."""
    if isinstance(x, tuple):
        return f"array[{len(x)}]"
    if isinstance(x, str | bytes):
        return f"{type(x).__name__}[{len(x)}]"
    if isinstance(x, bool | int | float) or x is None:
        text = repr(x)
        return text if len(text) <= 24 else text[:21] + "..."
    return type(x).__name__


#: int >= 0 (slots, seqs, rounds, commit indexes, counts).
UINT: Final = Field("uint", _uint)
#: Any 64-bit int (never a bool).
INT: Final = Field("int", _int)
#: A node id, >= 1.
NODE_ID: Final = Field("node_id", _node_id)
#: A bool.
BOOL: Final = Field("bool", _bool)
#: Any str (bounded only by the frame size).
STR: Final = Field("str", _str)
#: Any bytes (msgpack bin).
BYTES: Final = Field("bytes", _bytes)
#: A client id: str of at most MAX_CLIENT_ID_LEN characters.
CLIENT_ID: Final = Field("client_id", _client_id)
#: A Ballot.
BALLOT: Final = Field("ballot", _ballot)
#: A Command.
COMMAND: Final = Field("command", _command)
#: A Value (tuple of Commands, possibly empty).
VALUE: Final = Field("value", _value)
_PROMISE_ENTRIES: Final = Field("promise_entries", _promise_entries)
_CHOSEN_ENTRIES: Final = Field("chosen_entries", _chosen_entries)


def optional(field: Field) -> Field:
    """``field`` or nil (``None``)."""
    inner = field.check

    def check(x: object) -> Any:
        return None if x is None else inner(x)

    return Field(f"optional[{field.name}]", check)


def tuple_of(field: Field, max_len: int | None = None) -> Field:
    """A tuple of ``field`` items, at most ``max_len`` of them if given."""
    inner = field.check

    def check(x: object) -> tuple[Any, ...]:
        if type(x) is not tuple:
            raise CodecError(f"expected array, got {_describe(x)}")
        if max_len is not None and len(x) > max_len:
            raise CodecError(f"array of {len(x)} items exceeds {max_len}")
        return tuple([inner(i) for i in x])

    return Field(f"tuple[{field.name}]", check)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_Decoder = Callable[[tuple[Any, ...]], object]


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    code: int
    cls: type
    schema: tuple[Field, ...]
    fields_of: Callable[[Any], tuple[Any, ...]]  # obj -> field values in order
    decode: _Decoder  # full frame (VERSION, code, *fields) -> obj


_BY_CODE: dict[int, _Spec] = {}
_BY_CLASS: dict[type, _Spec] = {}


def _fields_getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    if not names:
        return lambda _obj: ()
    if len(names) == 1:
        get_one = attrgetter(names[0])
        return lambda obj: (get_one(obj),)
    getter: Callable[[Any], tuple[Any, ...]] = attrgetter(*names)
    return getter


def _generic_decoder(cls: type, names: Sequence[str], schema: Sequence[Field]) -> _Decoder:
    arity = 2 + len(schema)
    names = tuple(names)
    checks = tuple(f.check for f in schema)

    def decode_frame(frame: tuple[Any, ...]) -> object:
        if len(frame) != arity:
            raise CodecError(f"expected {arity - 2} fields, got {len(frame) - 2}")
        try:
            # map(call, ...) runs the checks in C: as fast as a hand-unrolled decoder.
            return cls(*map(_call, checks, frame[2:]))
        except CodecError as e:
            raise CodecError(f"{_failed_field(names, checks, frame[2:])}: {e}") from None

    return decode_frame


def _failed_field(
    names: Sequence[str], checks: Sequence[Callable[[Any], Any]], raw: Sequence[Any]
) -> str:
    """Error path only: the name of the first field whose check fails."""
    for name, check, value in zip(names, checks, raw, strict=True):
        try:
            check(value)
        except CodecError:
            return name
    return "?"


def _register(
    code: int, cls: type, schema: Sequence[Field], decoder: _Decoder | None = None
) -> None:
    if type(code) is not int or not 1 <= code <= LAST_TYPE_CODE:
        raise ValueError(f"type code must be an int in 1..{LAST_TYPE_CODE}, got {code!r}")
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    fields = dataclasses.fields(cls)
    if any(not f.init or f.kw_only for f in fields):
        # Decoding calls cls(*fields): every field must be a positional __init__ argument.
        raise TypeError(f"{cls.__name__}: every field must be a positional __init__ field")
    schema = tuple(schema)
    if len(schema) != len(fields) or not all(isinstance(f, Field) for f in schema):
        raise ValueError(
            f"{cls.__name__}: schema needs one Field per dataclass field "
            f"({len(fields)}), got {len(schema)}"
        )
    existing = _BY_CODE.get(code)
    if existing is not None:
        if existing.cls is cls and existing.schema == schema:
            return  # idempotent re-registration
        raise ValueError(f"type code {code} already registered to {existing.cls.__name__}")
    if cls in _BY_CLASS:
        raise ValueError(f"{cls.__name__} already registered with code {_BY_CLASS[cls].code}")
    names = [f.name for f in fields]
    spec = _Spec(
        code=code,
        cls=cls,
        schema=schema,
        fields_of=_fields_getter(names),
        decode=decoder or _generic_decoder(cls, names, schema),
    )
    _BY_CODE[code] = spec
    _BY_CLASS[cls] = spec


def register(type_code: int, cls: type, schema: Sequence[Field]) -> None:
    """Make the frozen dataclass ``cls`` encodable as ``type_code``.

    ``schema`` holds one :class:`Field` per dataclass field, in declaration
    order (e.g. ``(NODE_ID, CLIENT_ID, UINT, BYTES)``); decoding builds
    ``cls(*checked_fields)``, so a ``__post_init__`` that raises turns into a
    :class:`CodecError`. ``type_code`` must be in 64..255 (1..63 are the
    ``paxos`` package's). Registering the same class with the same code and
    schema again is a no-op; any other clash raises ``ValueError``. Call it when
    your module is imported (the registry is not locked).
    """
    if type(type_code) is not int or not FIRST_USER_TYPE_CODE <= type_code <= LAST_TYPE_CODE:
        raise ValueError(
            f"type code must be in {FIRST_USER_TYPE_CODE}..{LAST_TYPE_CODE}, got {type_code!r}"
        )
    _register(type_code, cls, schema)


# Hand-written decoders for the two hottest messages (~30% faster than the generic one).
_ACCEPTED_FIELDS = ("src", "ballot", "slot")
_ACCEPTED_CHECKS = (_node_id, _ballot, _uint)
_ACCEPT_FIELDS = ("src", "ballot", "slot", "value", "commit")
_ACCEPT_CHECKS = (_node_id, _ballot, _uint, _value, _uint)


def _decode_accepted(frame: tuple[Any, ...]) -> object:
    if len(frame) != 5:
        raise CodecError(f"expected 3 fields, got {len(frame) - 2}")
    _, _, src, ballot, slot = frame
    try:
        return Accepted(_node_id(src), _ballot(ballot), _uint(slot))
    except CodecError as e:
        field = _failed_field(_ACCEPTED_FIELDS, _ACCEPTED_CHECKS, frame[2:])
        raise CodecError(f"{field}: {e}") from None


def _decode_accept(frame: tuple[Any, ...]) -> object:
    if len(frame) != 7:
        raise CodecError(f"expected 5 fields, got {len(frame) - 2}")
    _, _, src, ballot, slot, value, commit = frame
    try:
        return Accept(_node_id(src), _ballot(ballot), _uint(slot), _value(value), _uint(commit))
    except CodecError as e:
        field = _failed_field(_ACCEPT_FIELDS, _ACCEPT_CHECKS, frame[2:])
        raise CodecError(f"{field}: {e}") from None


# Paxos type codes (1..63). Never renumber: they are on the wire and on disk.
_register(1, Prepare, (NODE_ID, BALLOT, UINT))
_register(2, Promise, (NODE_ID, BALLOT, UINT, _PROMISE_ENTRIES, UINT, UINT))
_register(3, Accept, (NODE_ID, BALLOT, UINT, VALUE, UINT), _decode_accept)
_register(4, Accepted, (NODE_ID, BALLOT, UINT), _decode_accepted)
_register(5, Nack, (NODE_ID, BALLOT, BALLOT))
_register(6, Commit, (NODE_ID, BALLOT, UINT))
_register(7, Heartbeat, (NODE_ID, BALLOT, UINT))
_register(8, HeartbeatReply, (NODE_ID, BALLOT, UINT))
_register(9, PreVote, (NODE_ID, BALLOT))
_register(10, PreVoteReply, (NODE_ID, BALLOT, BOOL))
_register(11, CatchupRequest, (NODE_ID, UINT, UINT))
_register(12, CatchupReply, (NODE_ID, _CHOSEN_ENTRIES, UINT))
_register(13, Forward, (NODE_ID, VALUE))
_register(14, SnapshotChunk, (NODE_ID, UINT, UINT, UINT, UINT, BYTES, UINT))
_register(15, SnapshotRequest, (NODE_ID, UINT, UINT, UINT))
_register(16, TimeoutNow, (NODE_ID, BALLOT, NODE_ID, UINT))
_register(32, PromiseRecord, (BALLOT,))
_register(33, AcceptRecord, (UINT, BALLOT, VALUE))
_register(34, CommitRecord, (UINT,))


# ---------------------------------------------------------------------------
# encode / decode
# ---------------------------------------------------------------------------

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def encode(obj: object, *, max_frame_bytes: int = MAX_FRAME_BYTES, validate: bool = False) -> bytes:
    """Encode a message, record or registered object as one frame.

    Raises :class:`CodecError` if the class is not registered, a field is not
    msgpack-encodable (e.g. an int beyond 64 bits), the frame would exceed
    ``max_frame_bytes`` (a receiver would refuse it), or ``validate`` is set and
    the frame does not decode back to an equal object.
    """
    spec = _BY_CLASS.get(type(obj))
    if spec is None:
        raise CodecError(f"cannot encode unregistered type {type(obj).__name__}")
    try:
        data: bytes = _packb((VERSION, spec.code, *spec.fields_of(obj)), use_bin_type=True)
    except Exception as e:  # msgpack raises TypeError/OverflowError/ValueError
        reason = _short(f"{type(e).__name__}: {e}")
        raise CodecError(f"cannot encode {spec.cls.__name__}: {reason}") from None
    if len(data) > max_frame_bytes:
        raise CodecError(f"frame of {len(data)} bytes exceeds {max_frame_bytes}")
    if validate and decode(data, max_frame_bytes=max_frame_bytes) != obj:
        raise CodecError(f"{spec.cls.__name__} does not round-trip (wrong field types?)")
    return data


# ---------------------------------------------------------------------------
# Encoding a slot's value once: a leader sends the same value in its Accept and
# writes it in its AcceptRecord; a follower writes the value it just received.
# These build those frames around value bytes encoded (or received) once. The
# frames are byte-identical to what encode() produces.
# ---------------------------------------------------------------------------

_ACCEPT_CODE: Final = 3
_ACCEPT_RECORD_CODE: Final = 33


def encode_value(value: Value) -> bytes:
    """The msgpack bytes of a slot's value, for :func:`encode_accept` and friends."""
    try:
        data: bytes = _packb(value, use_bin_type=True)
    except Exception as e:
        raise CodecError(_short(f"cannot encode value: {type(e).__name__}: {e}")) from None
    return data


def encode_accept(msg: Accept, value_bytes: bytes) -> bytes:
    """``encode(msg)``, with ``msg.value`` already encoded as ``value_bytes``."""
    head: bytes = _packb((VERSION, _ACCEPT_CODE, msg.src, msg.ballot, msg.slot))
    tail: bytes = _packb(msg.commit)
    data = b"\x97" + head[1:] + value_bytes + tail
    if len(data) > MAX_FRAME_BYTES:
        raise CodecError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return data


def encode_accept_record(record: AcceptRecord, value_bytes: bytes) -> bytes:
    """``encode(record)``, with ``record.value`` already encoded as ``value_bytes``."""
    head: bytes = _packb((VERSION, _ACCEPT_RECORD_CODE, record.slot, record.ballot))
    return b"\x95" + head[1:] + value_bytes


def accept_value_bytes(frame: bytes, msg: Accept) -> bytes | None:
    """The bytes of ``msg.value`` inside ``frame``, the frame ``msg`` was decoded from.

    Only for canonically encoded frames (what :func:`encode` writes): any other
    encoding of the fields around the value gives None, and the caller encodes
    the value itself.
    """
    fields: bytes = _packb((VERSION, _ACCEPT_CODE, msg.src, msg.ballot, msg.slot))
    head = b"\x97" + fields[1:]
    tail: bytes = _packb(msg.commit)
    if len(frame) <= len(head) + len(tail) or not frame.startswith(head):
        return None
    # Find where the value ends by skipping over it (in C), so that whatever encoding
    # the sender used inside or after it, the slice is exactly the value.
    unpacker = msgpack.Unpacker(max_buffer_size=len(frame))
    unpacker.feed(frame[len(head) :])
    try:
        unpacker.skip()
    except Exception:
        return None
    end = len(head) + unpacker.tell()
    if frame[end:] != tail:
        return None
    return frame[len(head) : end]


def decode(
    data: bytes | bytearray | memoryview, *, max_frame_bytes: int = MAX_FRAME_BYTES
) -> object:
    """Decode one frame into a Message, a Record or a registered object.

    Raises :class:`CodecError` (and nothing else) on any invalid input.
    """
    if type(data) is bytes or isinstance(data, bytes | bytearray):
        size = len(data)
    elif isinstance(data, memoryview):
        size = data.nbytes
    else:
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    # Size check before unpacking: never parse (or allocate for) an oversized frame.
    if size > max_frame_bytes:
        raise CodecError(f"frame of {size} bytes exceeds {max_frame_bytes}")
    if size == 0:
        raise CodecError("empty frame")
    try:
        # Length limits tied to the frame size: a header claiming more items/bytes
        # than the frame holds fails before allocation. No maps or ext types are
        # ever valid, so their limits are 0 (an empty map still parses, and is
        # refused by the field checks).
        frame = _unpackb(
            data,
            use_list=False,
            raw=False,
            strict_map_key=True,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as e:  # OutOfData, ExtraData, FormatError, StackError, UnicodeDecodeError...
        raise CodecError(f"malformed msgpack: {type(e).__name__}") from None
    if type(frame) is not tuple or len(frame) < 2:
        raise CodecError(f"expected frame [version, type, ...], got {_describe(frame)}")
    version, code = frame[0], frame[1]
    if type(version) is not int or version != VERSION:
        raise CodecError(f"unsupported version {_describe(version)}")
    spec = _BY_CODE.get(code) if type(code) is int else None
    if spec is None:
        raise CodecError(f"unknown type code {_describe(code)}")
    try:
        return spec.decode(frame)
    except CodecError as e:
        raise CodecError(f"{spec.cls.__name__}: {e}") from None
    except Exception as e:  # e.g. a registered class's __post_init__ refusing the values
        raise CodecError(_short(f"{spec.cls.__name__}: {type(e).__name__}: {e}")) from None


def decode_message(
    data: bytes | bytearray | memoryview, *, max_frame_bytes: int = MAX_FRAME_BYTES
) -> Message:
    """:func:`decode`, but the result must be a protocol :data:`~paxos.messages.Message`."""
    obj = decode(data, max_frame_bytes=max_frame_bytes)
    if not isinstance(obj, Message):
        raise CodecError(f"expected a protocol message, got {type(obj).__name__}")
    return obj


def decode_record(
    data: bytes | bytearray | memoryview, *, max_frame_bytes: int = MAX_FRAME_BYTES
) -> Record:
    """:func:`decode`, but the result must be a durable :data:`~paxos.records.Record`."""
    obj = decode(data, max_frame_bytes=max_frame_bytes)
    if not isinstance(obj, Record):
        raise CodecError(f"expected a record, got {type(obj).__name__}")
    return obj
