"""The coordination service's state machine: sessions with leases, ephemeral keys, locks
with fencing tokens, leader election, barriers and resumable watches, decided by the log.

A :class:`CoordMachine` is the application a runtime replicates::

    node = Node(..., state_machine=CoordMachine())

Its :meth:`~CoordMachine.apply` takes one :class:`~paxos.types.Delivery` (whose payload
is an encoded :mod:`paxos.coord.commands` command) and returns a :class:`Result`; it
is pure and deterministic: every replica that applies the same log holds the same
state, byte for byte (:meth:`~CoordMachine.snapshot`), and returns the same results.

Design
======

**Sessions.** ``Open(name, ttl_ms)`` applied at index ``i`` creates session ``i``
(ids are log indexes: unique, never reused, known to the client from its
acknowledgement). A session's *last* index is where it was last renewed or used:
every command naming a live session counts. A session ends when its client closes
it, or when ``Expire(session, last)`` is applied and the session's last index is
still exactly ``last``. The TTL is recorded, never read here.

**Who decides expiry.** A lease lapses in real time, but no replica's clock may
decide that, because clocks differ and two replicas would end a session at
different points of the order (one would grant a lock that the other still sees
held). So the machine reads no clock and counts nothing but the log: a runtime
whose timer fires (a leader that saw no renewal for ``ttl_ms``, in its own ticks)
*proposes* ``Expire(session, last)`` with the last index it saw, and the log
decides: where the expiry lands, every replica applies it at the same index, and
it takes effect only if nothing renewed or used the session in between (activity
wins the race, as for the broadcast sessions of :mod:`paxos.multi.sessions`). A
stale or duplicate expiry is a no-op everywhere. Nothing is ever expired as a side
effect of time passing or of counting applies; a replica restored from a snapshot
or restarted therefore ends exactly the sessions the others end, at the same index.

**Ending a session** at index ``i`` (close or expire), in this order, each step in
a canonical (sorted) order so that it never depends on how a replica built its
tables: it leaves every lock queue and barrier it was waiting in; its ephemeral
keys are deleted (a ``vanish`` change each, at ``i``); the locks it held are
released, and each goes to the next waiter in its FIFO queue, granted at ``i``.

**Locks and fencing.** A lock's *token* is the log index at which it was granted.
Grants of one lock happen at distinct, increasing indexes, so tokens only grow.
A write may carry ``fence=(lock, token)``; it is applied only if that lock is held
*right now* (at the write's index) with exactly that token. Safety argument: a
holder that pauses (a GC pause, a partition) and loses its lease keeps believing
it holds the lock, and may send writes long after. Those writes are ordered by the
log after the expiry that released the lock (they are chosen later, or they would
have renewed the session first: any command of the session counts as activity,
and the expiry would have been a no-op). Once the lock moved on, its token is a
later index, so the late writes carry a token that no longer matches and are
refused, on every replica, whatever the clocks did. The former holder is
harmless without anything ever having been decided by time.

**Elections** are locks whose holder's value names the leader (``Campaign``,
``Resign``); the grant index is its term, and a fence with the term keeps a
deposed leader's writes out. **Barriers** release when ``parties`` distinct live
sessions entered (ending sessions leave).

**Watches.** Every change (puts, deletes, vanished ephemeral keys, grants,
releases, barrier releases, sessions opened and ended) is appended to a change
log with its index. A watcher asks for the changes under a prefix from an index
(:meth:`~CoordMachine.changes`) and resumes from the ``next`` it was given, with no
gap and no repeat. The log is bounded (count and bytes): its oldest whole indexes
are dropped, and a watcher asking below what is held gets :class:`Compacted` with
the earliest index still held (like etcd's compacted revision), never a silent
gap. The change log is part of the state (and of snapshots), so every replica
answers a watch alike.

**Bounds.** Every size is bounded (:class:`CoordLimits`): key and value length, the
bytes of keys and values together (a quota: a put beyond it is refused with
``quota``), sessions, locks, waiters per lock, barriers and their parties, the
change log. The state grows with the live data only, never with the history.

**Results.** Each command gets a :class:`Result`: ``ok`` or refused with a
``reason``, and the changes it caused (an ``Expire`` lists the keys that vanished
and the locks granted). Malformed bytes are refused (``malformed``), identically
on every replica.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from typing import Final

import msgpack

from paxos.coord.commands import (
    Acquire,
    Campaign,
    Cas,
    Close,
    CoordCommand,
    CoordDecodeError,
    Delete,
    Enter,
    Expire,
    Fence,
    Get,
    Open,
    Put,
    Release,
    Renew,
    Resign,
    decode,
)
from paxos.coord.fields import blob, natural, text
from paxos.types import Delivery

#: Layout of :meth:`CoordMachine.snapshot`; a blob of another one is refused.
SNAPSHOT_FORMAT: Final = 1
#: What a key, its value and its bookkeeping count against the quota, besides their bytes.
ENTRY_OVERHEAD: Final = 32
#: What a change counts against the change log's byte bound, besides key and value.
CHANGE_OVERHEAD: Final = 32

# Change kinds.
PUT: Final = "put"
DELETE: Final = "delete"
VANISH: Final = "vanish"  # an ephemeral key deleted because its session ended
GRANT: Final = "grant"
RELEASE: Final = "release"
BARRIER: Final = "barrier"
OPENED: Final = "open"
EXPIRED: Final = "expire"
CLOSED: Final = "close"


class CoordSnapshotError(ValueError):
    """Bytes that are not a snapshot of a CoordMachine of this format."""


@dataclass(frozen=True, slots=True)
class CoordLimits:
    """Every bound of the machine's state (the defaults suit a small service)."""

    max_key_bytes: int = 512
    max_value_bytes: int = 64 * 1024
    #: Keys and values together (each with ENTRY_OVERHEAD): puts beyond it are refused.
    quota_bytes: int = 8 * 1024 * 1024
    max_sessions: int = 4096
    max_name_bytes: int = 200
    #: Lock and election names held or waited for at once.
    max_locks: int = 4096
    max_waiters: int = 64
    max_barriers: int = 1024
    max_parties: int = 64
    max_changes: int = 4096
    max_change_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class Change:
    """One change at ``index``: ``key`` is a key, or a lock or barrier name ("" for a
    session's own changes); ``session`` whose it was (owner, holder, the session opened
    or ended); ``version`` the key's new version, the lock's token, or the barrier's
    parties; ``value`` a put's value or a leader's identity."""

    index: int
    kind: str
    key: str = ""
    session: int = 0
    version: int = 0
    value: bytes | None = None

    @property
    def size(self) -> int:
        return CHANGE_OVERHEAD + len(self.key.encode()) + (len(self.value) if self.value else 0)


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one command did. ``ok`` False: refused (nothing changed but the
    session's activity), ``reason`` says why. ``session``: the id an Open created;
    ``version``: a key's version after a write or at a read (0: absent); ``value``: a
    read's value; ``token``: a lock's grant token (0 while queued); ``changes``: every
    change the command caused, in order (an Expire's vanished keys and grants too)."""

    index: int
    ok: bool
    reason: str = ""
    session: int = 0
    version: int = 0
    value: bytes | None = None
    token: int = 0
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A live session, for observers: a runtime's lease timer proposes
    ``Expire(id, last)`` when it saw nothing from the session for ``ttl_ms``."""

    id: int
    name: str
    ttl_ms: int
    last: int


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds a lock (or leads an election): ``holder`` session (0: free), the grant
    ``token`` (an election's term), the holder's ``value``, and the queue."""

    holder: int
    token: int
    value: bytes
    waiters: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Changes:
    """A watch answer: the changes matched, and the index to resume from."""

    changes: tuple[Change, ...]
    next: int


@dataclass(frozen=True, slots=True)
class Compacted:
    """The changes asked for are gone from the bounded change log; ``earliest`` is the
    first index still held (start again from a read of the current state)."""

    earliest: int


@dataclass(slots=True)
class _Session:
    name: str
    ttl_ms: int
    last: int
    # What ends with it. Iterated only in sorted order (see _end_session).
    ephemerals: set[str] = field(default_factory=set)
    locks: set[str] = field(default_factory=set)  # held or waited for
    barriers: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Entry:
    value: bytes
    version: int
    owner: int  # 0: persistent


@dataclass(slots=True)
class _Lock:
    holder: int
    token: int
    value: bytes
    waiters: list[tuple[int, bytes]]


@dataclass(slots=True)
class _Barrier:
    parties: int
    entered: list[int]


class CoordMachine:
    """The replicated coordination state. ``apply`` one delivery at a time, in order.

    Queries (:meth:`sessions`, :meth:`lock`, :meth:`leader`, :meth:`read`,
    :meth:`changes`) read the state as applied here so far: possibly behind the
    cluster, never ahead of it, never different from another replica at the same
    index.
    """

    def __init__(self, limits: CoordLimits | None = None) -> None:
        self.limits = limits or CoordLimits()
        #: The last index applied.
        self.index = 0
        self._sessions: dict[int, _Session] = {}
        self._kv: dict[str, _Entry] = {}
        # For keys(): the keys sorted as of some point (None: not built), and the keys
        # added (True) or removed since, in order. Not state: a cache of queries.
        self._sorted_keys: list[str] | None = None
        self._key_edits: list[tuple[bool, str]] = []
        self._kv_bytes = 0
        self._locks: dict[str, _Lock] = {}
        self._barriers: dict[str, _Barrier] = {}
        self._log: deque[Change] = deque()
        self._log_bytes = 0
        #: The first index whose changes are all still in the change log.
        self._log_floor = 1
        self._digest: int | None = None
        # The changes of the command being applied.
        self._out: list[Change] = []

    # ------------------------------------------------------------------ applying

    def apply(self, delivery: Delivery) -> Result:
        """Apply the command delivered at ``delivery.index``; returns its result."""
        index = delivery.index
        assert index > self.index, f"index {index} applied after {self.index}"
        self.index = index
        try:
            command = decode(delivery.command.payload)
        except CoordDecodeError as exc:
            return Result(index, False, f"malformed: {exc}")
        self._digest = None
        self._out = []
        result = self._dispatch(index, command)
        if self._out:
            for change in self._out:
                self._record(change)
            result = _with_changes(result, tuple(self._out))
            self._out = []
        return result

    def _dispatch(self, i: int, command: CoordCommand) -> Result:
        match command:
            case Open(name, ttl_ms):
                return self.on_open(i, name, ttl_ms)
            case Renew(session):
                return self.on_renew(i, session)
            case Close(session):
                if self._touch(i, session) is None:
                    return Result(i, False, "no such session")
                self._end_session(i, session, CLOSED)
                return Result(i, True)
            case Expire(session, last):
                return self.on_expire(i, session, last)
            case Put(key, value, ephemeral, fence):
                return self.on_put(i, key, value, ephemeral, fence)
            case Delete(key, fence):
                return self.on_delete(i, key, fence)
            case Cas(key, expected, value):
                return self.on_cas(i, key, expected, value)
            case Get(key):
                entry = self._kv.get(key)
                if entry is None:
                    return Result(i, True)
                return Result(i, True, version=entry.version, value=entry.value)
            case Acquire(name, session):
                return self.on_acquire(i, name, session, b"")
            case Campaign(name, session, value):
                return self.on_acquire(i, name, session, value)
            case Release(name, session, token):
                return self.on_release(i, name, session, token)
            case Resign(name, session):
                return self.on_release(i, name, session, None)
            case Enter(name, session, parties):
                return self.on_enter(i, name, session, parties)

    def _touch(self, i: int, session: int) -> _Session | None:
        """The live session ``session``, now used at ``i`` (activity: an expiry proposed
        from a last index before ``i`` will be a no-op); None if it is not live."""
        s = self._sessions.get(session)
        if s is not None:
            s.last = i
        return s

    # ------------------------------------------------------------------ sessions

    def on_open(self, i: int, name: str, ttl_ms: int) -> Result:
        if len(name.encode()) > self.limits.max_name_bytes:
            return Result(i, False, "name too long")
        if ttl_ms < 1:
            return Result(i, False, "ttl must be >= 1 ms")
        if len(self._sessions) >= self.limits.max_sessions:
            return Result(i, False, "too many sessions")
        self._sessions[i] = _Session(name, ttl_ms, i)
        self._out.append(Change(i, OPENED, "", i, ttl_ms, name.encode()))
        return Result(i, True, session=i)

    def on_renew(self, i: int, session: int) -> Result:
        if self._touch(i, session) is None:
            return Result(i, False, "no such session")
        return Result(i, True, session=session)

    def on_expire(self, i: int, session: int, last: int) -> Result:
        s = self._sessions.get(session)
        if s is None:
            return Result(i, False, "no such session")
        if not self.expiry_applies(s.last, last):
            # Renewed or used after the proposer looked: activity wins, the lease goes on.
            return Result(i, False, "renewed since")
        self._end_session(i, session, EXPIRED)
        return Result(i, True, session=session)

    @staticmethod
    def expiry_applies(session_last: int, proposed_last: int) -> bool:
        """The race rule: an expiry takes effect only if the session's last activity is
        the one its proposer saw."""
        return session_last == proposed_last

    def _end_session(self, i: int, session: int, kind: str) -> None:
        """End ``session`` at ``i``: out of every queue and barrier, its ephemeral keys
        gone, its locks handed to their next waiters. Sorted orders throughout: the
        sets are built differently on a replica restored from a snapshot."""
        s = self._sessions.pop(session)
        self._out.append(Change(i, kind, "", session))
        for name in sorted(s.barriers):
            barrier = self._barriers[name]
            barrier.entered.remove(session)
            if not barrier.entered:
                del self._barriers[name]
        held = []
        for name in sorted(s.locks):
            lock = self._locks[name]
            if lock.holder == session:
                held.append(name)
            else:
                lock.waiters = [w for w in lock.waiters if w[0] != session]
        self._vanish(i, session, s)
        for name in held:
            self._hand_over(i, name)

    def _vanish(self, i: int, session: int, s: _Session) -> None:
        """Delete the ephemeral keys of ``session``, ending at ``i``."""
        for key in sorted(s.ephemerals):
            self._remove_key(key)
            self._out.append(Change(i, VANISH, key, session))
        s.ephemerals.clear()

    # ------------------------------------------------------------------ keys

    def _fenced(self, fence: Fence | None) -> str:
        """Why a write with ``fence`` is refused ("" if it is not)."""
        if fence is None:
            return ""
        lock = self._locks.get(fence[0])
        if lock is None or lock.holder == 0:
            return "fence: lock not held"
        if lock.token != fence[1]:
            return "fence: stale token"
        return ""

    def _check_key(self, key: str, value: bytes = b"") -> str:
        if not key:
            return "empty key"
        if len(key.encode()) > self.limits.max_key_bytes:
            return "key too long"
        if len(value) > self.limits.max_value_bytes:
            return "value too long"
        return ""

    def on_put(
        self, i: int, key: str, value: bytes, ephemeral: int, fence: Fence | None
    ) -> Result:
        owner = None
        if ephemeral:
            owner = self._touch(i, ephemeral)
            if owner is None:
                return Result(i, False, "no such session")
        refused = self._check_key(key, value) or self._fenced(fence)
        if refused:
            return Result(i, False, refused)
        if not self._fits(key, value):
            return Result(i, False, "quota")
        self._write(i, key, value, ephemeral)
        return Result(i, True, version=i)

    def on_cas(self, i: int, key: str, expected: int, value: bytes) -> Result:
        refused = self._check_key(key, value)
        if refused:
            return Result(i, False, refused)
        entry = self._kv.get(key)
        current = entry.version if entry is not None else 0
        if current != expected:
            return Result(i, False, "version mismatch", version=current)
        if not self._fits(key, value):
            return Result(i, False, "quota")
        # A compare-and-set keeps the key's owner: an ephemeral key stays ephemeral.
        self._write(i, key, value, entry.owner if entry is not None else 0)
        return Result(i, True, version=i)

    def on_delete(self, i: int, key: str, fence: Fence | None) -> Result:
        refused = self._fenced(fence)
        if refused:
            return Result(i, False, refused)
        entry = self._kv.get(key)
        if entry is None:
            return Result(i, False, "no such key")
        self._remove_key(key)
        if entry.owner:
            self._sessions[entry.owner].ephemerals.discard(key)
        self._out.append(Change(i, DELETE, key, entry.owner))
        return Result(i, True, version=entry.version)

    def _fits(self, key: str, value: bytes) -> bool:
        entry = self._kv.get(key)
        old = _entry_bytes(key, entry.value) if entry is not None else 0
        return self._kv_bytes - old + _entry_bytes(key, value) <= self.limits.quota_bytes

    def _write(self, i: int, key: str, value: bytes, owner: int) -> None:
        entry = self._kv.get(key)
        if entry is not None:
            self._kv_bytes -= _entry_bytes(key, entry.value)
            if entry.owner and entry.owner != owner:
                self._sessions[entry.owner].ephemerals.discard(key)
            entry.value, entry.version, entry.owner = value, i, owner
        else:
            self._kv[key] = _Entry(value, i, owner)
            self._key_edit(True, key)
        self._kv_bytes += _entry_bytes(key, value)
        if owner:
            self._sessions[owner].ephemerals.add(key)
        self._out.append(Change(i, PUT, key, owner, i, value))

    def _remove_key(self, key: str) -> None:
        entry = self._kv.pop(key)
        self._key_edit(False, key)
        self._kv_bytes -= _entry_bytes(key, entry.value)

    # ------------------------------------------------------------------ locks, elections

    def on_acquire(self, i: int, name: str, session: int, value: bytes) -> Result:
        s = self._touch(i, session)
        if s is None:
            return Result(i, False, "no such session")
        if not name or len(name.encode()) > self.limits.max_name_bytes:
            return Result(i, False, "bad lock name")
        if len(value) > self.limits.max_value_bytes:
            return Result(i, False, "value too long")
        lock = self._locks.get(name)
        if lock is None:
            if len(self._locks) >= self.limits.max_locks:
                return Result(i, False, "too many locks")
            token = self._token_at(i)
            self._locks[name] = _Lock(session, token, value, [])
            s.locks.add(name)
            self._out.append(Change(i, GRANT, name, session, token, value))
            return Result(i, True, session=session, token=token)
        if lock.holder == session:
            return Result(i, True, session=session, token=lock.token)
        if any(w[0] == session for w in lock.waiters):
            return Result(i, True, "queued", session=session)
        if len(lock.waiters) >= self.limits.max_waiters:
            return Result(i, False, "too many waiters")
        lock.waiters.append((session, value))
        s.locks.add(name)
        return Result(i, True, "queued", session=session)

    def on_release(self, i: int, name: str, session: int, token: int | None) -> Result:
        """Release (``token`` given: it must be the grant's) or resign (None); by a
        waiter, leave the queue."""
        s = self._touch(i, session)
        if s is None:
            return Result(i, False, "no such session")
        lock = self._locks.get(name)
        if lock is None or name not in s.locks:
            return Result(i, False, "not held")
        if lock.holder != session:
            lock.waiters = [w for w in lock.waiters if w[0] != session]
            s.locks.discard(name)
            return Result(i, True, "left the queue", session=session)
        if token is not None and token != lock.token:
            return Result(i, False, "stale token", token=lock.token)
        s.locks.discard(name)
        self._hand_over(i, name)
        return Result(i, True, session=session)

    def _hand_over(self, i: int, name: str) -> None:
        """The holder of ``name`` let go at ``i``: the next waiter gets it, granted at
        ``i`` (its token), or the lock is forgotten. Waiters are live (an ending session
        leaves every queue first)."""
        lock = self._locks[name]
        self._out.append(Change(i, RELEASE, name, lock.holder, lock.token))
        if not lock.waiters:
            del self._locks[name]
            return
        session, value = lock.waiters.pop(0)
        lock.holder, lock.token, lock.value = session, self._token_at(i), value
        self._out.append(Change(i, GRANT, name, session, lock.token, value))

    def _token_at(self, i: int) -> int:
        """The fencing token of a grant at index ``i``: ``i`` itself. The log gives every
        replica the same one, and a later grant of the lock a larger one."""
        return i

    # ------------------------------------------------------------------ barriers

    def on_enter(self, i: int, name: str, session: int, parties: int) -> Result:
        s = self._touch(i, session)
        if s is None:
            return Result(i, False, "no such session")
        if not name or len(name.encode()) > self.limits.max_name_bytes:
            return Result(i, False, "bad barrier name")
        if not 1 <= parties <= self.limits.max_parties:
            return Result(i, False, "bad parties")
        barrier = self._barriers.get(name)
        if barrier is None:
            if len(self._barriers) >= self.limits.max_barriers:
                return Result(i, False, "too many barriers")
            barrier = self._barriers[name] = _Barrier(parties, [])
        elif barrier.parties != parties:
            return Result(i, False, "parties mismatch")
        if session not in barrier.entered:
            barrier.entered.append(session)
            s.barriers.add(name)
        if len(barrier.entered) < parties:
            return Result(i, True, "waiting", session=session, version=len(barrier.entered))
        del self._barriers[name]
        for member in barrier.entered:
            self._sessions[member].barriers.discard(name)
        self._out.append(Change(i, BARRIER, name, session, parties))
        return Result(i, True, session=session, version=parties)

    # ------------------------------------------------------------------ the change log

    def _record(self, change: Change) -> None:
        log = self._log
        log.append(change)
        self._log_bytes += change.size
        limits = self.limits
        while len(log) > limits.max_changes or self._log_bytes > limits.max_change_bytes:
            # Whole indexes at a time: a watcher resuming from an index gets all of its
            # changes or Compacted, never a part.
            gone = log[0].index
            while log and log[0].index == gone:
                self._log_bytes -= log.popleft().size
            self._log_floor = gone + 1

    def changes(self, prefix: str = "", since: int = 1, limit: int = 1000) -> Changes | Compacted:
        """The changes under ``prefix`` at indexes ``>= since``, oldest first, at most
        about ``limit`` (an index's changes are never split); resume from ``next``.
        :class:`Compacted` if some of them are no longer held."""
        since = max(since, 1)
        if since < self._log_floor:
            return Compacted(self._log_floor)
        out: list[Change] = []
        log = self._log
        # The log is in index order: start at ``since`` (a watcher that is up to date,
        # as a held one is, costs a bisection, not a walk over the whole log).
        start = bisect_left(log, since, key=_INDEX_OF)
        for change in islice(log, start, None):
            if not change.key.startswith(prefix):
                continue
            if len(out) >= limit and change.index != out[-1].index:
                return Changes(tuple(out), change.index)
            out.append(change)
        return Changes(tuple(out), self.index + 1)

    # ------------------------------------------------------------------ queries

    def sessions(self) -> list[SessionInfo]:
        """The live sessions, oldest first."""
        return [SessionInfo(k, s.name, s.ttl_ms, s.last) for k, s in self._sessions.items()]

    def session(self, session: int) -> SessionInfo | None:
        s = self._sessions.get(session)
        return None if s is None else SessionInfo(session, s.name, s.ttl_ms, s.last)

    def read(self, key: str) -> tuple[bytes, int, int] | None:
        """``(value, version, owner session or 0)`` of ``key`` as applied here."""
        entry = self._kv.get(key)
        return None if entry is None else (entry.value, entry.version, entry.owner)

    def keys(self, prefix: str = "", limit: int | None = None) -> list[str]:
        """The keys under ``prefix``, sorted (the first ``limit``). Costs a bisection and
        the answer, not a walk over every key: the sorted keys are kept between queries,
        brought up to date with the keys added and removed since."""
        ordered = self._sorted_keys
        if ordered is None:
            ordered = self._sorted_keys = sorted(self._kv)
        else:
            for added, key in self._key_edits:
                if added:
                    insort(ordered, key)
                else:
                    del ordered[bisect_left(ordered, key)]
        self._key_edits.clear()
        out: list[str] = []
        start = bisect_left(ordered, prefix)
        for key in islice(ordered, start, None if limit is None else start + limit):
            if not key.startswith(prefix):
                break
            out.append(key)
        return out

    def _key_edit(self, added: bool, key: str) -> None:
        if self._sorted_keys is None:
            return
        edits = self._key_edits
        edits.append((added, key))
        if len(edits) > _MAX_KEY_EDITS:  # cheaper to sort again than to edit
            self._sorted_keys = None
            edits.clear()

    def lock(self, name: str) -> LockInfo | None:
        lock = self._locks.get(name)
        if lock is None:
            return None
        return LockInfo(lock.holder, lock.token, lock.value, tuple(w[0] for w in lock.waiters))

    def leader(self, name: str) -> tuple[int, bytes, int] | None:
        """Who leads the election ``name``: ``(session, identity, term)``, term being the
        index it was elected at."""
        lock = self._locks.get(name)
        return None if lock is None else (lock.holder, lock.value, lock.token)

    @property
    def change_floor(self) -> int:
        """The first index whose changes are all still in the change log."""
        return self._log_floor

    @property
    def state_bytes(self) -> int:
        """Bytes counted against the quota."""
        return self._kv_bytes

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state, canonical: two replicas at one index give the same bytes."""
        data: bytes = msgpack.packb(
            [SNAPSHOT_FORMAT, self.index, *self._content()], use_bin_type=True
        )
        return data

    def _content(self) -> list[object]:
        sessions = [[k, s.name, s.ttl_ms, s.last] for k, s in self._sessions.items()]
        kv = [[k, e.value, e.version, e.owner] for k, e in self._kv.items()]
        locks = [
            [name, lock.holder, lock.token, lock.value, [[s, v] for s, v in lock.waiters]]
            for name, lock in self._locks.items()
        ]
        barriers = [[name, b.parties, list(b.entered)] for name, b in self._barriers.items()]
        log = [[c.index, c.kind, c.key, c.session, c.version, c.value] for c in self._log]
        return [sessions, kv, locks, barriers, log, self._log_floor]

    def digest(self) -> int:
        """CRC-32 of the state's content: everything in :meth:`snapshot` but the index
        (a command refused as malformed changes nothing). Cached until a command."""
        if self._digest is None:
            self._digest = zlib.crc32(msgpack.packb(self._content(), use_bin_type=True))
        return self._digest

    def restore(self, data: bytes) -> None:
        """Replace the state with one :meth:`snapshot` gave (here or on a peer). Raises
        :class:`CoordSnapshotError` (and changes nothing) if ``data`` is not one."""
        fresh = type(self)(self.limits)
        try:
            fresh._load(msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True))
        except CoordSnapshotError:
            raise
        except Exception as exc:
            raise CoordSnapshotError(f"not a coordination snapshot: {type(exc).__name__}") from None
        self._adopt(fresh)

    def _adopt(self, other: CoordMachine) -> None:
        self.index = other.index
        self._sessions, self._kv, self._kv_bytes = other._sessions, other._kv, other._kv_bytes
        self._locks, self._barriers = other._locks, other._barriers
        self._log, self._log_bytes, self._log_floor = other._log, other._log_bytes, other._log_floor
        self._sorted_keys, self._key_edits = None, []
        self._digest = None

    def _load(self, state: object) -> None:
        if type(state) is not list or len(state) != 8:
            raise CoordSnapshotError("not a coordination snapshot")
        version, index, sessions, kv, locks, barriers, log, floor = state
        if version != SNAPSHOT_FORMAT or type(version) is not int:
            raise CoordSnapshotError(f"unknown coordination snapshot format {version!r}")
        self.index = _nat(index)
        self._log_floor = _nat(floor)
        for sid, name, ttl, last in sessions:
            self._sessions[_nat(sid)] = _Session(_text(name), _nat(ttl), _nat(last))
        for key, value, version_, owner in kv:
            entry = _Entry(_blob(value), _nat(version_), _nat(owner))
            self._kv[_text(key)] = entry
            self._kv_bytes += _entry_bytes(key, entry.value)
            if entry.owner:
                self._sessions[entry.owner].ephemerals.add(key)
        for name, holder, token, value, waiters in locks:
            queue = [(_nat(s), _blob(v)) for s, v in waiters]
            self._locks[_text(name)] = _Lock(_nat(holder), _nat(token), _blob(value), queue)
            for s in (holder, *(w[0] for w in queue)):
                self._sessions[s].locks.add(name)
        for name, parties, entered in barriers:
            members = [_nat(s) for s in entered]
            self._barriers[_text(name)] = _Barrier(_nat(parties), members)
            for s in members:
                self._sessions[s].barriers.add(name)
        for i, kind, key, session, version_, value in log:
            change = Change(
                _nat(i), _text(kind), _text(key), _nat(session), _nat(version_),
                None if value is None else _blob(value),
            )
            self._log.append(change)
            self._log_bytes += change.size


_INDEX_OF = attrgetter("index")
#: Keys added or removed between two keys() queries beyond which it sorts them afresh.
_MAX_KEY_EDITS = 256


def _with_changes(result: Result, changes: tuple[Change, ...]) -> Result:
    return Result(
        result.index, result.ok, result.reason, result.session, result.version,
        result.value, result.token, changes,
    )


def _entry_bytes(key: str, value: bytes) -> int:
    return ENTRY_OVERHEAD + len(key.encode()) + len(value)


def _nat(x: object) -> int:
    return natural(x, CoordSnapshotError)


def _text(x: object) -> str:
    return text(x, CoordSnapshotError)


def _blob(x: object) -> bytes:
    return blob(x, CoordSnapshotError)
