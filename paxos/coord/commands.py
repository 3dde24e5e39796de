"""Coordination commands: frozen values and their versioned msgpack encoding.

A command is what a client broadcasts through the log; :class:`~paxos.coord.machine.
CoordMachine` applies it. One encoded command is one msgpack array::

    [FORMAT, tag, field, field, ...]

``FORMAT`` comes first so that a later layout can be told apart (and refused by an
older reader) before anything else is read. Decoding is strict: ints are ``int``
(never ``bool``), text is ``str``, values are ``bytes``, every field is checked
for its type and for the structural bounds below, and anything else (an unknown
format or tag, a wrong arity, garbage, a frame too large) raises
:class:`CoordDecodeError`, never something else. The *semantic* bounds (a key too
long, a quota reached, a session that does not exist) are the machine's to refuse,
with a reason, since they may depend on its configuration and state.

Never pickle: the bytes come from the network and from other processes' logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgpack

from paxos.coord.fields import blob, text

#: The layout of an encoded command; the first element of every one.
FORMAT: Final = 1
#: Largest encoded command read at all (before unpacking): the largest key and value
#: the machine could accept, and room for the rest.
MAX_COMMAND_BYTES: Final = 1 << 20
#: Largest index, session id, token, version or TTL a command may carry.
MAX_UINT: Final = 2**63 - 1


class CoordDecodeError(ValueError):
    """The bytes are not a coordination command of a format this code reads."""


class UnknownFormat(CoordDecodeError):
    """A well-formed frame of another (newer) format version."""

    def __init__(self, version: object) -> None:
        super().__init__(f"unknown coordination command format {version!r}")
        self.version = version


#: A fence on a write: (lock name, token). The write is refused unless that lock is
#: held right now with exactly that token.
Fence = tuple[str, int]


# ---------------------------------------------------------------------------
# Commands. Session ids are the log indexes of the opens that created them.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Open:
    """Open a session: ``name`` is the client's own label and ``ttl_ms`` its lease,
    both recorded for observers (a runtime's lease timer reads the TTL; the machine
    never does). The session's id is the index at which this is applied."""

    name: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Renew:
    """A heartbeat through the log: the session's lease starts again at this index."""

    session: int


@dataclass(frozen=True, slots=True)
class Close:
    """The client ends its own session."""

    session: int


@dataclass(frozen=True, slots=True)
class Expire:
    """End ``session`` unless it was renewed or used after ``last``: proposed by a
    runtime whose lease timer saw the session idle since ``last`` (its last-renewal
    index, read from the machine). Activity applied in between wins the race."""

    session: int
    last: int


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``; owned by ``ephemeral`` (a session id: the key vanishes
    when that session ends) or persistent (0); fenced by ``fence`` if given."""

    key: str
    value: bytes
    ephemeral: int = 0
    fence: Fence | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    fence: Fence | None = None


@dataclass(frozen=True, slots=True)
class Cas:
    """Set ``key`` to ``value`` iff its version is ``expected`` (0: iff it is absent)."""

    key: str
    expected: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Get:
    """Read ``key`` at this point of the log (a linearizable read, at the cost of a slot)."""

    key: str


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take the lock ``name`` for ``session``, or queue for it (FIFO)."""

    name: str
    session: int


@dataclass(frozen=True, slots=True)
class Release:
    """Give the lock back (``token``: the grant's); by a waiter (token 0): leave the queue."""

    name: str
    session: int
    token: int


@dataclass(frozen=True, slots=True)
class Campaign:
    """Stand for leader of ``name``: a lock whose holder's ``value`` (its identity, an
    address) is who leads; the grant index is the term."""

    name: str
    session: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Resign:
    """Step down as leader of ``name``, or stop campaigning for it."""

    name: str
    session: int


@dataclass(frozen=True, slots=True)
class Enter:
    """Enter the barrier ``name``; it releases when ``parties`` live sessions are in."""

    name: str
    session: int
    parties: int


CoordCommand = (
    Open | Renew | Close | Expire | Put | Delete | Cas | Get | Acquire | Release | Campaign
    | Resign | Enter
)

# Tags: stable numbers, never reused for another meaning within a format.
_TAGS: Final[dict[type, int]] = {
    Open: 1,
    Renew: 2,
    Close: 3,
    Expire: 4,
    Put: 5,
    Delete: 6,
    Cas: 7,
    Get: 8,
    Acquire: 9,
    Release: 10,
    Campaign: 11,
    Resign: 12,
    Enter: 13,
}


def _fence_out(fence: Fence | None) -> list[object] | None:
    return None if fence is None else [fence[0], fence[1]]


def encode(command: CoordCommand) -> bytes:
    """The bytes of ``command`` (for a broadcast payload)."""
    tag = _TAGS[type(command)]
    match command:
        case Open(name, ttl_ms):
            fields: list[object] = [name, ttl_ms]
        case Renew(session) | Close(session):
            fields = [session]
        case Expire(session, last):
            fields = [session, last]
        case Put(key, value, ephemeral, fence):
            fields = [key, value, ephemeral, _fence_out(fence)]
        case Delete(key, fence):
            fields = [key, _fence_out(fence)]
        case Cas(key, expected, value):
            fields = [key, expected, value]
        case Get(key):
            fields = [key]
        case Acquire(name, session) | Resign(name, session):
            fields = [name, session]
        case Release(name, session, token):
            fields = [name, session, token]
        case Campaign(name, session, value):
            fields = [name, session, value]
        case Enter(name, session, parties):
            fields = [name, session, parties]
    data: bytes = msgpack.packb([FORMAT, tag, *fields], use_bin_type=True)
    return data


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _uint(x: object) -> int:
    if type(x) is not int or not 0 <= x <= MAX_UINT:
        raise CoordDecodeError(f"expected an int in 0..2**63-1, got {type(x).__name__}")
    return x


def _str(x: object) -> str:
    return text(x, CoordDecodeError)


def _bytes(x: object) -> bytes:
    return blob(x, CoordDecodeError)


def _fence(x: object) -> Fence | None:
    if x is None:
        return None
    if type(x) is not list or len(x) != 2:
        raise CoordDecodeError("a fence is [lock name, token]")
    return _str(x[0]), _uint(x[1])


def decode(data: bytes) -> CoordCommand:
    """The command ``data`` encodes. Raises :class:`CoordDecodeError` (or its subclass
    :class:`UnknownFormat`) for anything else; never another exception."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CoordDecodeError("not bytes")
    if len(data) > MAX_COMMAND_BYTES:
        raise CoordDecodeError(f"command of {len(data)} bytes, more than {MAX_COMMAND_BYTES}")
    # Cheap refusal of what is plainly not one of ours (most of a mixed log's payloads).
    if not data or not 0x91 <= data[0] <= 0x9F:
        raise CoordDecodeError("not a coordination command")
    try:
        frame = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types, utf-8 errors included
        raise CoordDecodeError(f"not msgpack: {type(exc).__name__}") from None
    if type(frame) is not list or len(frame) < 2:
        raise CoordDecodeError("not a coordination command")
    if frame[0] != FORMAT or type(frame[0]) is not int:
        raise UnknownFormat(frame[0])
    tag, fields = frame[1], frame[2:]
    try:
        return _decode_fields(tag, fields)
    except (ValueError, TypeError) as exc:  # ValueError: a wrong arity in unpacking
        if isinstance(exc, CoordDecodeError):
            raise
        raise CoordDecodeError(f"bad fields for tag {tag!r}") from None


def _decode_fields(tag: object, f: list[object]) -> CoordCommand:
    if type(tag) is not int:
        raise CoordDecodeError("bad tag")
    match tag, len(f):
        case 1, 2:
            return Open(_str(f[0]), _uint(f[1]))
        case 2, 1:
            return Renew(_uint(f[0]))
        case 3, 1:
            return Close(_uint(f[0]))
        case 4, 2:
            return Expire(_uint(f[0]), _uint(f[1]))
        case 5, 4:
            return Put(_str(f[0]), _bytes(f[1]), _uint(f[2]), _fence(f[3]))
        case 6, 2:
            return Delete(_str(f[0]), _fence(f[1]))
        case 7, 3:
            return Cas(_str(f[0]), _uint(f[1]), _bytes(f[2]))
        case 8, 1:
            return Get(_str(f[0]))
        case 9, 2:
            return Acquire(_str(f[0]), _uint(f[1]))
        case 10, 3:
            return Release(_str(f[0]), _uint(f[1]), _uint(f[2]))
        case 11, 3:
            return Campaign(_str(f[0]), _uint(f[1]), _bytes(f[2]))
        case 12, 2:
            return Resign(_str(f[0]), _uint(f[1]))
        case 13, 3:
            return Enter(_str(f[0]), _uint(f[1]), _uint(f[2]))
    raise CoordDecodeError(f"unknown tag {tag} with {len(f)} fields")
