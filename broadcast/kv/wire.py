"""The coordination service's answers on the wire: results of commands and queries.

Versioned msgpack, like the commands (:mod:`paxos.coord.commands`); never pickle.
Decoding checks every field's type and raises :class:`WireError` for anything else:
an answer comes from the network.

* a command's result: ``[1, ok, reason, session, version, value|nil, token, index]``
  (:func:`encode_result`, :func:`decode_result`);
* a query: ``[1, kind, args...]`` (:func:`encode_query`), kinds ``get``, ``lock``,
  ``session``, ``sessions``, ``keys`` and ``changes``; each answer starts with the
  format version too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from paxos.coord.fields import blob, natural, text
from paxos.coord.machine import Change, LockInfo, Result, SessionInfo

FORMAT: Final = 1
#: About this many bytes of changes per watch answer (one index's changes may be split).
WATCH_ANSWER_BYTES: Final = 256 * 1024
#: Most keys or sessions per listing answer.
MAX_LISTED: Final = 10_000


class WireError(ValueError):
    """Bytes that are not an answer of this format."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a watch resumes: the changes at ``index`` after the first ``skip`` of them
    (those under the watched prefix), then every later index."""

    index: int
    skip: int = 0


@dataclass(frozen=True, slots=True)
class WatchPage:
    """Changes under a prefix, oldest first, and the cursor after them."""

    changes: tuple[Change, ...]
    next: Cursor


@dataclass(frozen=True, slots=True)
class CompactedPage:
    """The changes asked for are gone from the bounded change log; ``earliest`` is the
    first index still held (read the current state, then watch from there)."""

    earliest: int


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(data: bytes) -> list[Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:
        raise WireError(f"not msgpack: {type(exc).__name__}") from None
    if type(obj) is not list or not obj or obj[0] != FORMAT or type(obj[0]) is not int:
        raise WireError("not an answer of format 1")
    return obj


def _int(x: object) -> int:
    return natural(x, WireError)


def _str(x: object) -> str:
    return text(x, WireError)


def _blob(x: object) -> bytes:
    return blob(x, WireError)


def _opt_blob(x: object) -> bytes | None:
    return None if x is None else _blob(x)


# ---------------------------------------------------------------------- results


def encode_result(result: object) -> bytes:
    """What a replica's ``apply`` returned, for the caller: a :class:`Result`, or the
    exception ``apply`` raised (a bug: refused with its name)."""
    if isinstance(result, Result):
        r = result
        return pack([FORMAT, r.ok, r.reason, r.session, r.version, r.value, r.token, r.index])
    return pack([FORMAT, False, f"error: {type(result).__name__}"[:200], 0, 0, None, 0, 0])


def decode_result(data: bytes) -> Result:
    f = unpack(data)
    if len(f) != 8 or type(f[1]) is not bool:
        raise WireError("not a result")
    return Result(
        _int(f[7]), f[1], _str(f[2]), _int(f[3]), _int(f[4]), _opt_blob(f[5]), _int(f[6])
    )


# ---------------------------------------------------------------------- queries


def encode_query(kind: str, *args: object) -> bytes:
    return pack([FORMAT, kind, *args])


def change_row(c: Change) -> list[object]:
    return [c.index, c.kind, c.key, c.session, c.version, c.value]


def change_of(row: object) -> Change:
    if type(row) is not list or len(row) != 6:
        raise WireError("not a change")
    i, kind, key, session, version, value = row
    return Change(_int(i), _str(kind), _str(key), _int(session), _int(version), _opt_blob(value))


def decode_get(data: bytes) -> tuple[bytes, int, int] | None:
    """``(value, version, owner session)`` or None (no such key)."""
    f = unpack(data)
    if len(f) == 2 and f[1] is None:
        return None
    if len(f) != 4:
        raise WireError("not a get answer")
    return _blob(f[1]), _int(f[2]), _int(f[3])


def decode_lock(data: bytes) -> LockInfo | None:
    f = unpack(data)
    if len(f) == 2 and f[1] is None:
        return None
    if len(f) != 5 or type(f[4]) is not list:
        raise WireError("not a lock answer")
    return LockInfo(_int(f[1]), _int(f[2]), _blob(f[3]), tuple(_int(w) for w in f[4]))


def session_row(s: SessionInfo) -> list[object]:
    return [s.id, s.name, s.ttl_ms, s.last]


def decode_sessions(data: bytes) -> list[SessionInfo]:
    f = unpack(data)
    if len(f) != 2 or type(f[1]) is not list:
        raise WireError("not a sessions answer")
    out = []
    for row in f[1]:
        if type(row) is not list or len(row) != 4:
            raise WireError("not a session")
        out.append(SessionInfo(_int(row[0]), _str(row[1]), _int(row[2]), _int(row[3])))
    return out


def decode_keys(data: bytes) -> list[str]:
    f = unpack(data)
    if len(f) != 2 or type(f[1]) is not list:
        raise WireError("not a keys answer")
    return [_str(k) for k in f[1]]


def encode_page(page: WatchPage | CompactedPage) -> bytes:
    if isinstance(page, CompactedPage):
        return pack([FORMAT, "compacted", page.earliest])
    rows = [change_row(c) for c in page.changes]
    return pack([FORMAT, "changes", rows, page.next.index, page.next.skip])


def decode_page(data: bytes) -> WatchPage | CompactedPage:
    f = unpack(data)
    if len(f) == 3 and f[1] == "compacted":
        return CompactedPage(_int(f[2]))
    if len(f) != 5 or f[1] != "changes" or type(f[2]) is not list:
        raise WireError("not a watch answer")
    return WatchPage(tuple(change_of(r) for r in f[2]), Cursor(_int(f[3]), _int(f[4])))


def page_of(
    changes: Sequence[Change], cursor: Cursor, end: int, budget: int = WATCH_ANSWER_BYTES
) -> WatchPage:
    """The changes from ``cursor`` (all at indexes >= cursor.index, oldest first, whole
    indexes, as the machine gave them, ending before index ``end``), at most about
    ``budget`` bytes; the cursor after them."""
    out: list[Change] = []
    size = 0
    skipped = 0
    for k, change in enumerate(changes):
        if change.index == cursor.index and skipped < cursor.skip:
            skipped += 1
            continue
        if out and size + change.size > budget:
            # Cut here: resume at this change (within its index if need be).
            same = [c for c in changes[:k] if c.index == change.index]
            return WatchPage(tuple(out), Cursor(change.index, len(same)))
        out.append(change)
        size += change.size
    if end <= cursor.index:
        return WatchPage(tuple(out), cursor)  # (a replica behind the cursor: no step back)
    return WatchPage(tuple(out), Cursor(end, 0))
