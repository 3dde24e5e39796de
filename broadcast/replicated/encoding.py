"""The wire format of replicated calls and of object states: msgpack, versioned, never pickle.

A call is one broadcast payload::

    MAGIC + msgpack([CALL_FORMAT, object name, method name, [args...], {kwargs...}])

``MAGIC`` starts with 0xC1, the one byte msgpack never uses and UTF-8 text never
starts with, so a payload of another application (JSON, msgpack, text) is never
taken for a call: the dispatcher ignores payloads without it. A payload with it that
does not decode is a :class:`~broadcast.replicated.errors.MalformedCall`. The format
version is read before anything else, so a future format can change the rest.

A method name of ``""`` is a read barrier (:data:`BARRIER`): it changes nothing and
answers the index it was applied at.

Values are what msgpack carries: None, bool, int (64-bit), float, str, bytes, lists
(tuples are sent as lists) and dicts of those. Anything else is a ``TypeError`` in
the caller's thread, before anything is sent. What an apply sees is the *decoded*
call, on the caller's replica as on every other.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from broadcast.replicated.errors import MalformedCall, UnsupportedVersion

#: Marks a payload as a replicated call. 0xC1 is never used by msgpack.
MAGIC = b"\xc1RO"
#: The version of the call layout after MAGIC.
CALL_FORMAT = 1
#: The method name of a read barrier.
BARRIER = ""
#: Object and method names are at most this many characters.
MAX_NAME_LEN = 64


class Call(NamedTuple):
    """A decoded call."""

    obj: str
    method: str
    args: list[Any]
    kwargs: dict[str, Any]


def pack(value: Any, what: str = "value") -> bytes:
    """``value`` in msgpack, or a ``TypeError`` that says what could not be encoded."""
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, OverflowError, ValueError) as exc:
        raise TypeError(
            f"{what} cannot be sent: only msgpack values (None, bool, int of 64 bits, "
            f"float, str, bytes, list, tuple, dict) can ({exc})"
        ) from None
    return data


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def unpack(data: bytes) -> Any:
    """The value ``pack`` made (tuples come back as lists). Raises ``ValueError`` (or
    another ``Exception``) on bytes that are not one whole msgpack value."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_no_ext)


def check_name(name: str, what: str) -> None:
    """Refuse an object or method name the format cannot carry (``ValueError``)."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LEN:
        raise ValueError(f"{what} must be a non-empty str of at most {MAX_NAME_LEN} characters")


def encode_call(obj: str, method: str, args: tuple[Any, ...] | list[Any],
                kwargs: dict[str, Any]) -> bytes:
    """The payload of one call; ``TypeError`` if an argument is not a msgpack value."""
    body = pack(list(args), f"an argument of {obj}.{method}()")
    extra = pack(kwargs, f"a keyword argument of {obj}.{method}()")
    head = pack([CALL_FORMAT, obj, method])
    # One msgpack array of five: the three fields of ``head`` and the two packed parts.
    return MAGIC + b"\x95" + head[1:] + body + extra


def encode_barrier(obj: str) -> bytes:
    """The payload of a read barrier for ``obj`` (``""``: the whole group)."""
    return MAGIC + pack([CALL_FORMAT, obj, BARRIER, [], {}])


def is_call(payload: bytes) -> bool:
    """Whether ``payload`` is marked as a replicated call (decoding may still fail)."""
    return payload[:3] == MAGIC


def decode_call(payload: bytes) -> Call:
    """The call in ``payload`` (which :func:`is_call`).

    Raises :class:`UnsupportedVersion` for a format version other than
    :data:`CALL_FORMAT`, :class:`MalformedCall` for anything else that is not a call.
    """
    try:
        fields = unpack(payload[len(MAGIC):])
    except Exception as exc:  # msgpack raises several kinds on garbage
        raise MalformedCall(f"not msgpack ({type(exc).__name__})") from None
    if not isinstance(fields, list) or not fields:
        raise MalformedCall("a call is a msgpack array")
    version = fields[0]
    if type(version) is not int:
        raise MalformedCall("the call's format version is not an int")
    if version != CALL_FORMAT:
        raise UnsupportedVersion(version)
    if len(fields) != 5:
        raise MalformedCall(f"a version {CALL_FORMAT} call has 5 fields, not {len(fields)}")
    _, obj, method, args, kwargs = fields
    if type(obj) is not str or len(obj) > MAX_NAME_LEN:
        raise MalformedCall("the object name is not a str of at most 64 characters")
    if type(method) is not str or len(method) > MAX_NAME_LEN:
        raise MalformedCall("the method name is not a str of at most 64 characters")
    if type(args) is not list:
        raise MalformedCall("the arguments are not an array")
    if type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
        raise MalformedCall("the keyword arguments are not a map of str")
    return Call(obj, method, args, kwargs)
