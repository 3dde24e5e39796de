"""The coordination service a node replicates: :class:`CoordService`.

It is the node's state machine (``Node(state_machine=CoordService())``, or ``paxos
kv serve``): the deterministic :class:`~paxos.coord.machine.CoordMachine` (sessions
with leases, ephemeral keys, locks with fencing tokens, elections, barriers,
watches), plus what a runtime adds around it:

* **answers** for remote callers (:mod:`broadcast.answers`): each command's
  :class:`~paxos.coord.machine.Result` goes back to the client that sent it, and
  read-only queries (a stale ``get``, a lock's holder, the sessions, a watch)
  are answered from the state applied here;
* **the lease timer** (:meth:`CoordService.due`): on the leader only, a session
  idle for its TTL *by this node's clock* gets ``Expire(session, last)``
  proposed. The log decides: if anything of the session lands before the expiry,
  the expiry is a no-op on every replica (see the machine). A clock that runs
  fast can end a lease early, never make two replicas disagree; a paused lock
  holder whose lease ended is kept out by its fencing token, whatever the clocks.
  A node that becomes leader starts every session's timer afresh: it cannot tell
  how long the previous leader had been waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broadcast.kv.wire import (
    MAX_LISTED,
    WATCH_ANSWER_BYTES,
    CompactedPage,
    Cursor,
    WireError,
    encode_page,
    encode_result,
    pack,
    page_of,
    session_row,
    unpack,
)
from paxos.coord.commands import Expire, encode
from paxos.coord.machine import Compacted, CoordLimits, CoordMachine
from paxos.types import Delivery

#: Expiries proposed per timer run at most (the rest wait for the next run).
MAX_EXPIRIES_PER_RUN = 256
#: An expiry proposed, not yet applied, is proposed again after this long.
REPROPOSE_S = 2.0
#: Changes read from the machine per watch answer at most (then cut by bytes).
WATCH_CHANGES = 1000
#: Watches remembered as "nothing under the prefix before index N" (as many as a node
#: holds): a held watch is asked again after every delivery, and must not walk again
#: the part of the change log it walked before.
MAX_SCANNED = 4096


def _cut(items: list[Any], size: Callable[[Any], int]) -> list[Any]:
    """The first of ``items`` within WATCH_ANSWER_BYTES (``size``: an item's packed bytes
    at most): a listing the node can always send, never refused as larger than a
    payload. Like the cut at MAX_LISTED, a caller sees fewer, never an error."""
    total = 0
    for k, item in enumerate(items):
        total += size(item)
        if total > WATCH_ANSWER_BYTES:
            return items[:k]
    return items


class CoordService:
    """A node's coordination state machine, with answers and a lease timer."""

    def __init__(self, limits: CoordLimits | None = None) -> None:
        self.machine = CoordMachine(limits)
        # session -> (last index seen, local time it was first seen): the lease timer.
        self._seen: dict[int, tuple[int, float]] = {}
        # session -> (last index the expiry named, when it was proposed).
        self._proposed: dict[int, tuple[int, float]] = {}
        self._leading = False
        # (prefix, index, skip) of a watch -> the index up to which it is known to have
        # nothing (see _watch); most recently used last.
        self._scanned: dict[tuple[str, int, int], int] = {}

    # ------------------------------------------------------------------ the state machine

    def apply(self, delivery: Delivery) -> Any:
        return self.machine.apply(delivery)

    def snapshot(self) -> bytes:
        return self.machine.snapshot()

    def restore(self, data: bytes) -> None:
        self.machine.restore(data)
        self._seen.clear()  # every timer starts afresh
        self._proposed.clear()
        self._scanned.clear()

    def encode_result(self, result: Any) -> bytes:
        return encode_result(result)

    # ------------------------------------------------------------------ the lease timer

    def due(self, now: float, leading: bool) -> list[bytes]:
        """Expiries to propose: sessions idle for their TTL, as this node saw them."""
        if not leading:
            self._leading = False
            return []
        if not self._leading:
            # Just became leader: nobody knows how long the sessions were idle before.
            self._leading = True
            self._seen.clear()
            self._proposed.clear()
        out: list[bytes] = []
        seen: dict[int, tuple[int, float]] = {}
        for info in self.machine.sessions():
            mark = self._seen.get(info.id)
            if mark is None or mark[0] != info.last:
                mark = (info.last, now)  # active (or new to us) since the last look
            seen[info.id] = mark
            if now - mark[1] < info.ttl_ms / 1000.0 or len(out) >= MAX_EXPIRIES_PER_RUN:
                continue
            proposed = self._proposed.get(info.id)
            if (
                proposed is not None
                and proposed[0] == info.last
                and now - proposed[1] < REPROPOSE_S
            ):
                continue  # on its way
            self._proposed[info.id] = (info.last, now)
            out.append(encode(Expire(info.id, info.last)))
        self._seen = seen
        for session in [s for s in self._proposed if s not in seen]:
            del self._proposed[session]
        return out

    # ------------------------------------------------------------------ queries

    def query(self, payload: bytes, final: bool) -> bytes | None:
        """Answer a query (:mod:`broadcast.kv.wire`) from the state applied here; None
        (hold it) for a watch with nothing new yet, unless ``final``."""
        try:
            f = unpack(payload)
            kind = f[1]
            m = self.machine
            if kind == "get" and len(f) == 3 and type(f[2]) is str:
                entry = m.read(f[2])
                return pack([1, None] if entry is None else [1, *entry])
            if kind == "lock" and len(f) == 3 and type(f[2]) is str:
                lock = m.lock(f[2])
                if lock is None:
                    return pack([1, None])
                return pack([1, lock.holder, lock.token, lock.value, list(lock.waiters)])
            if kind == "sessions" and len(f) == 2:
                rows = [session_row(s) for s in m.sessions()[:MAX_LISTED]]
                return pack([1, _cut(rows, lambda row: len(row[1].encode()) + 40)])
            if kind == "keys" and len(f) == 3 and type(f[2]) is str:
                return pack([1, _cut(m.keys(f[2], MAX_LISTED), lambda k: len(k.encode()) + 8)])
            if kind == "changes" and len(f) == 5:
                return self._watch(f[2], f[3], f[4], final)
        except WireError:
            raise
        except (IndexError, TypeError) as exc:
            raise WireError(f"malformed query: {type(exc).__name__}") from None
        raise WireError("unknown query")

    def _watch(self, prefix: object, index: object, skip: object, final: bool) -> bytes | None:
        if type(prefix) is not str or type(index) is not int or type(skip) is not int:
            raise WireError("changes takes a prefix, an index and a skip")
        if index < 1 or skip < 0:
            raise WireError("changes from index >= 1, skip >= 0")
        m = self.machine
        if index < m.change_floor:  # (as the machine says, whatever was walked before)
            return encode_page(CompactedPage(m.change_floor))
        limits = m.limits
        if len(prefix) > max(limits.max_key_bytes, limits.max_name_bytes):
            # Longer than any key or name (in bytes, so in characters too): nothing
            # under it, ever; and the cache below holds only prefixes up to that size.
            if not final:
                return None
            return encode_page(page_of((), Cursor(index, skip), m.index + 1))
        # Asked again (a held watch, after each delivery): resume the walk where the
        # last one ended with nothing under the prefix. The answer is the same: the
        # changes under the prefix from the cursor on are those from there on.
        key = (prefix, index, skip)
        cursor = Cursor(index, skip)
        resume = self._scanned.pop(key, 0)
        if resume > index:
            cursor = Cursor(resume, 0)
        found = m.changes(prefix, cursor.index, WATCH_CHANGES)
        if isinstance(found, Compacted):
            return encode_page(CompactedPage(found.earliest))
        page = page_of(found.changes, cursor, found.next)
        if not page.changes:
            if page.next.index > index:
                scanned = self._scanned
                scanned[key] = page.next.index
                if len(scanned) > MAX_SCANNED:
                    del scanned[next(iter(scanned))]
            if not final:
                return None  # nothing new under the prefix: the node holds the watch
        return encode_page(page)
