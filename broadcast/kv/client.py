"""The coordination client: keys, sessions, locks, elections, barriers and watches.

::

    from broadcast.kv import KvClient

    with KvClient("cluster.toml") as kv:
        kv.put("config/mode", b"fast")
        with kv.lock("jobs") as lock:              # FIFO, with a fencing token
            kv.put("jobs/last", b"me", fence=lock.fence)
        for change in kv.watch("config/", since=1):  # resumable, no gap, no repeat
            print(change)

Every write goes through the log, exactly once (the broadcast session drops
repeats), and its result comes back from the replicated state machine
(:class:`~broadcast.kv.service.CoordService`). Reads are linearizable by default
(a ``Get`` through the log); ``stale=True`` reads one replica's applied state.

**Sessions.** Ephemeral keys, locks, elections and barriers belong to the
client's *session*, opened on first need with a lease of ``ttl_ms``. A thread
renews it through the log every ``ttl_ms / 3``. If the client stops (a crash, a
pause, a partition) for longer than its TTL, the leader proposes its expiry: its
ephemeral keys vanish and its locks pass to the next waiter. A paused holder may
not notice; that is what fencing tokens are for: a lock's token is the log index
at which it was granted, and a write carrying ``fence=lock.fence`` is refused
(``Refused``, ``fence: stale token``) once the lock moved on.

The client is thread-safe: calls are serialised on one connection; renewals and
each watch use connections of their own.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broadcast.client import Client, ClusterUnavailable
from broadcast.kv.errors import (
    OutcomeUnknown,
    Refused,
    SessionLost,
    WaitTimeout,
    WatchCompacted,
)
from broadcast.kv.wire import (
    CompactedPage,
    Cursor,
    WatchPage,
    decode_get,
    decode_keys,
    decode_lock,
    decode_page,
    decode_result,
    decode_sessions,
    encode_query,
)
from broadcast.spec import Cluster
from paxos.coord.commands import (
    Acquire,
    Campaign,
    Cas,
    Close,
    CoordCommand,
    Delete,
    Enter,
    Fence,
    Get,
    Open,
    Put,
    Release,
    Renew,
    Resign,
    encode,
)
from paxos.coord.machine import Change, LockInfo, Result, SessionInfo

__all__ = ["Election", "KvClient", "Lock", "Watch"]

#: How long one long poll of a lock, an election or a watch waits at a node.
POLL_MS = 1000
DEFAULT_TTL_MS = 10_000
#: How long :meth:`KvClient.close` tries to close the session (best effort: its lease
#: ends it anyway), and waits for the renewing thread.
CLOSE_TIMEOUT_S = 2.0


class KvClient:
    """A client of a cluster running the coordination service (``paxos kv serve``).

    ``cluster``: a :class:`~broadcast.spec.Cluster` or SPEC (the cluster file);
    ``name`` labels the session (shown by ``paxos kv sessions``); ``ttl_ms`` is the
    session's lease; the other arguments are :class:`~broadcast.client.Client`'s.
    """

    def __init__(
        self,
        cluster: Cluster | str,
        *,
        name: str | None = None,
        ttl_ms: int = DEFAULT_TTL_MS,
        timeout: float = 30.0,
        key_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
    ) -> None:
        if ttl_ms < 100:
            raise ValueError("ttl_ms must be >= 100")
        self.name = name or f"kv-{os.getpid()}"
        self.ttl_ms = ttl_ms
        self.timeout = timeout
        self._args: dict[str, Any] = {
            "timeout": timeout,
            "key_file": Path(key_file) if key_file is not None else None,
            "insecure": insecure,
        }
        self.cluster = cluster
        self._client = self._connect("call")
        self._mutex = threading.RLock()
        #: The session id (the index it was opened at), once opened.
        self.session: int | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        # Lock name -> (a mutex among this client's threads, threads using it): the
        # session holds a lock for all of them, so they queue here first.
        self._local_locks: dict[str, tuple[threading.Lock, int]] = {}
        self._local_mutex = threading.Lock()

    def _connect(self, role: str) -> Client:
        return Client(self.cluster, client_id=f"{self.name}-{role}"[:100], **self._args)

    def close(self) -> None:
        """Close the session (its ephemeral keys vanish, its locks pass on) and the
        connections."""
        self._stop.set()
        if self._keeper is not None:
            # (a daemon thread: one stuck in a renewal while no node answers is left)
            self._keeper.join(timeout=CLOSE_TIMEOUT_S)
        with self._mutex:
            if self.session is not None and not self._lost.is_set():
                # Best effort, and briefly: with no node answering, the lease ends it.
                self._client.timeout = min(self._client.timeout, CLOSE_TIMEOUT_S)
                with contextlib.suppress(Exception):
                    self._call(Close(self.session), "close")
            self.session = None
            self._client.close()

    def __enter__(self) -> KvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _call(self, command: CoordCommand, what: str, refuse: bool = True) -> Result:
        with self._mutex:
            answer = self._client.call(encode(command))
        if answer.result is None:
            raise OutcomeUnknown(answer.index)
        result = decode_result(answer.result)
        if refuse and not result.ok:
            if result.reason == "no such session" and self.session is not None:
                self._lost.set()
                raise SessionLost(f"session {self.session} is gone ({what})")
            raise Refused(what, result.reason, result.index)
        return result

    def _query(
        self, payload: bytes, *, min_index: int = 0, wait_ms: int = 0, timeout: float | None = None
    ) -> tuple[int, bytes]:
        with self._mutex:
            answer = self._client.query(
                payload, min_index=min_index, wait_ms=wait_ms, timeout=timeout
            )
        return answer.index, answer.payload

    # ------------------------------------------------------------------ the session

    def open_session(self) -> int:
        """The session's id, opening it (and starting its renewals) if need be. Raises
        :class:`SessionLost` once it ended: the caller opens a new client."""
        with self._mutex:
            if self._lost.is_set():
                raise SessionLost(f"session {self.session} is gone")
            if self.session is None:
                result = self._call(Open(self.name[:200], self.ttl_ms), "open")
                self.session = result.session
                self._keeper = threading.Thread(
                    target=self._keep_alive, name=f"kv-renew-{self.session}", daemon=True
                )
                self._keeper.start()
            return self.session

    @property
    def lost(self) -> bool:
        """Whether the session ended under this client (its lease ran out)."""
        return self._lost.is_set()

    def _keep_alive(self) -> None:
        session = self.session
        assert session is not None
        period = self.ttl_ms / 3000.0
        with self._connect("renew") as client:
            while not self._stop.wait(period):
                try:
                    answer = client.call(encode(Renew(session)))
                except (ClusterUnavailable, OSError):
                    continue  # the cluster is away: try again; the lease may end
                if answer.result is not None and not decode_result(answer.result).ok:
                    self._lost.set()  # expired: renewals cannot bring it back
                    return

    def applied_index(self) -> int:
        """The index one node has applied (a watch "from now on" starts after it)."""
        return self._query(encode_query("sessions"))[0]

    def sessions(self) -> list[SessionInfo]:
        """The live sessions (stale: one replica's view)."""
        return decode_sessions(self._query(encode_query("sessions"))[1])

    # ------------------------------------------------------------------ keys

    def put(
        self, key: str, value: bytes, *, ephemeral: bool = False, fence: Fence | None = None
    ) -> int:
        """Set ``key``; returns its new version (the index of the write). ``ephemeral``:
        the key vanishes when this client's session ends. ``fence``: refused unless
        that lock is held right now with that token (``lock.fence``)."""
        owner = self.open_session() if ephemeral else 0
        return self._call(Put(key, bytes(value), owner, fence), f"put {key!r}").version

    def get(self, key: str, *, stale: bool = False) -> tuple[bytes, int] | None:
        """``(value, version)`` of ``key``, or None. Linearizable (through the log)
        unless ``stale``: then one replica's applied state, possibly behind."""
        if stale:
            entry = decode_get(self._query(encode_query("get", key))[1])
            return None if entry is None else (entry[0], entry[1])
        result = self._call(Get(key), f"get {key!r}")
        if result.version == 0:
            return None
        return (result.value or b"", result.version)

    def delete(self, key: str, *, fence: Fence | None = None) -> bool:
        """Delete ``key``; False if there was none."""
        result = self._call(Delete(key, fence), f"delete {key!r}", refuse=False)
        if result.ok:
            return True
        if result.reason == "no such key":
            return False
        raise Refused(f"delete {key!r}", result.reason, result.index)

    def cas(self, key: str, expected: int, value: bytes) -> tuple[bool, int]:
        """Set ``key`` iff its version is ``expected`` (0: iff absent). ``(True, new
        version)``, or ``(False, current version)``."""
        result = self._call(Cas(key, expected, bytes(value)), f"cas {key!r}", refuse=False)
        if result.ok:
            return True, result.version
        if result.reason == "version mismatch":
            return False, result.version
        raise Refused(f"cas {key!r}", result.reason, result.index)

    def keys(self, prefix: str = "") -> list[str]:
        """The keys under ``prefix`` (stale: one replica's view; at most 10,000,
        and at most 256 KiB of them)."""
        return decode_keys(self._query(encode_query("keys", prefix))[1])

    # ------------------------------------------------------------------ recipes

    def lock(self, name: str, timeout: float | None = None) -> Lock:
        """Take the lock ``name`` (FIFO), waiting up to ``timeout`` seconds (None: for
        ever); raises :class:`WaitTimeout` (having left the queue). Use it as a
        context manager, and pass ``lock.fence`` with the writes it protects. It
        excludes this client's other threads too; it is not re-entrant."""
        # The lock is the session's, so this client's other threads would get it at
        # once: they take turns on a local mutex first (exclusion across threads too).
        deadline = None if timeout is None else time.monotonic() + timeout
        local = self._local_lock(name, +1)
        if not local.acquire(timeout=-1 if timeout is None else timeout):
            self._local_lock(name, -1)
            raise WaitTimeout(f"lock {name!r} not obtained within {timeout}s")
        try:
            session = self.open_session()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            token = self._obtain(Acquire(name, session), name, session, left, "lock")
        except BaseException:
            local.release()
            self._local_lock(name, -1)
            raise
        return Lock(self, name, token)

    def _local_lock(self, name: str, users: int) -> threading.Lock:
        """The local mutex of lock ``name``, counting ``users`` more (+1) or fewer (-1)
        threads using it; forgotten when none does (bounded by the threads)."""
        with self._local_mutex:
            mutex, count = self._local_locks.get(name, (None, 0))
            if mutex is None:
                mutex = threading.Lock()
            count += users
            if count > 0:
                self._local_locks[name] = (mutex, count)
            else:
                self._local_locks.pop(name, None)
            return mutex

    def lock_info(self, name: str) -> LockInfo | None:
        """Who holds ``name`` and who waits (stale: one replica's view)."""
        return decode_lock(self._query(encode_query("lock", name))[1])

    def _obtain(
        self, ask: CoordCommand, name: str, session: int, timeout: float | None, what: str
    ) -> int:
        """Acquire or campaign; wait for the grant; the token (the grant's index)."""
        result = self._call(ask, f"{what} {name!r}")
        if result.token:
            return result.token
        deadline = None if timeout is None else time.monotonic() + timeout
        # Watch the lock's changes after the request for our grant: a poll ends at its
        # wait when nothing happens (a query for an index nobody writes would not).
        cursor = Cursor(result.index + 1)
        while deadline is None or time.monotonic() < deadline:
            if self._lost.is_set():
                raise SessionLost(f"session {session} ended while waiting for {name!r}")
            wait = POLL_MS if deadline is None else int(
                max(1, min(POLL_MS, (deadline - time.monotonic()) * 1000))
            )
            try:
                with self._mutex:
                    page = _read_page(
                        self._client, name, cursor, wait, timeout=wait / 1000.0 + 1.0
                    )
            except ClusterUnavailable:
                continue  # no node answered this poll: our own deadline decides
            if isinstance(page, CompactedPage):
                # Gone from the bounded change log: read the lock, watch from there.
                index, data = self._query(encode_query("lock", name), min_index=cursor.index - 1)
                info = decode_lock(data)
                if info is not None and info.holder == session:
                    return info.token
                cursor = Cursor(index + 1)
                continue
            for change in page.changes:
                if change.kind == "grant" and change.key == name and change.session == session:
                    return change.version
            cursor = _after(cursor, page)
        # Withdraw. If the grant came meanwhile, the release names a token that is not
        # ours to give up blindly: the machine answers "stale token" and we hold it.
        left = self._call(Release(name, session, 0), f"leave {name!r}", refuse=False)
        if not left.ok and left.reason == "stale token":
            return left.token
        raise WaitTimeout(f"{what} {name!r} not obtained within {timeout}s")

    def election(self, name: str, identity: bytes) -> Election:
        """Leader election ``name``, standing as ``identity`` (an address, say)."""
        return Election(self, name, bytes(identity))

    def leader(self, name: str) -> tuple[bytes, int] | None:
        """Who leads election ``name`` and since when: ``(identity, term)`` (stale)."""
        info = self.lock_info(name)
        return None if info is None or not info.holder else (info.value, info.token)

    def barrier(self, name: str, parties: int, timeout: float | None = None) -> int:
        """Wait until ``parties`` sessions entered barrier ``name``; the index at which
        it released. Raises :class:`WaitTimeout`."""
        session = self.open_session()
        result = self._call(Enter(name, session, parties), f"enter {name!r}")
        if result.reason != "waiting":
            return result.index
        watch = self.watch(name, since=result.index + 1)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while deadline is None or time.monotonic() < deadline:
                left_ms = POLL_MS if deadline is None else (deadline - time.monotonic()) * 1000
                for change in watch.poll(int(max(1, min(POLL_MS, left_ms)))):
                    if change.kind == "barrier" and change.key == name:
                        return change.index
                if self._lost.is_set():
                    raise SessionLost(f"session {session} ended in barrier {name!r}")
        finally:
            watch.close()
        raise WaitTimeout(f"barrier {name!r} not released within {timeout}s")

    def watch(self, prefix: str = "", since: int | Cursor = 1) -> Watch:
        """The changes under ``prefix`` from index ``since`` (or a cursor a watch gave),
        in log order, without gap or repeat across node failures. Iterate it, or call
        :meth:`Watch.poll`; raises :class:`~broadcast.kv.errors.WatchCompacted` when
        the start is older than the bounded change log keeps."""
        cursor = since if isinstance(since, Cursor) else Cursor(max(1, since))
        return Watch(self._connect("watch"), prefix, cursor)


class Lock:
    """A held lock: ``token`` is the index at which it was granted (the fencing token)."""

    def __init__(self, kv: KvClient, name: str, token: int) -> None:
        self.kv = kv
        self.name = name
        self.token = token
        self.released = False

    @property
    def fence(self) -> Fence:
        """Pass with each write the lock protects: refused once the lock moved on."""
        return (self.name, self.token)

    def release(self) -> bool:
        """Give it back; False if it was no longer ours (our session ended)."""
        if self.released:
            return False
        self.released = True
        try:
            session = self.kv.session
            if session is None or self.kv.lost:
                return False
            result = self.kv._call(
                Release(self.name, session, self.token), "release", refuse=False
            )
            return result.ok
        finally:  # the next of this client's threads may take it
            self.kv._local_lock(self.name, -1).release()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Election:
    """Stand for leader of ``name``: :meth:`campaign` waits until elected and returns
    the term (the index of the election: pass ``fence`` with the leader's writes)."""

    def __init__(self, kv: KvClient, name: str, identity: bytes) -> None:
        self.kv = kv
        self.name = name
        self.identity = identity
        self.term = 0

    def campaign(self, timeout: float | None = None) -> int:
        session = self.kv.open_session()
        self.term = self.kv._obtain(
            Campaign(self.name, session, self.identity), self.name, session, timeout, "campaign"
        )
        return self.term

    @property
    def fence(self) -> Fence:
        return (self.name, self.term)

    def resign(self) -> None:
        """Step down (or stop campaigning); the next candidate in line is elected."""
        session = self.kv.session
        if session is not None and not self.kv.lost:
            self.kv._call(Resign(self.name, session), "resign", refuse=False)
        self.term = 0

    def leader(self) -> tuple[bytes, int] | None:
        return self.kv.leader(self.name)

    def observe(self, since: int = 1) -> Iterator[tuple[bytes, int] | None]:
        """Each change of leader from index ``since``: ``(identity, term)``, or None
        when nobody leads."""
        with self.kv.watch(self.name, since=since) as watch:
            for change in watch:
                if change.key != self.name:
                    continue
                if change.kind == "grant":
                    yield (change.value or b"", change.version)
                elif change.kind == "release":
                    yield None


class Watch:
    """Changes under a prefix, resumable: :attr:`cursor` says where it stands."""

    def __init__(self, client: Client, prefix: str, cursor: Cursor) -> None:
        self.client = client
        self.prefix = prefix
        self.cursor = cursor
        self.closed = False

    def poll(self, wait_ms: int = POLL_MS) -> list[Change]:
        """The next changes (maybe none after ``wait_ms``); the cursor moves past them."""
        page = _read_page(self.client, self.prefix, self.cursor, wait_ms)
        if isinstance(page, CompactedPage):
            raise WatchCompacted(self.cursor.index, page.earliest)
        self.cursor = _after(self.cursor, page)
        return list(page.changes)

    def __iter__(self) -> Iterator[Change]:
        while not self.closed:
            yield from self.poll()

    def close(self) -> None:
        self.closed = True
        self.client.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_page(
    client: Client, prefix: str, cursor: Cursor, wait_ms: int, timeout: float | None = None
) -> WatchPage | CompactedPage:
    """One long poll of the changes under ``prefix`` from ``cursor``. A node answers only
    once it has applied what came before the cursor: one that is behind waits, or the
    client tries another (no gap, no repeat either way)."""
    payload = encode_query("changes", prefix, cursor.index, cursor.skip)
    answer = client.query(payload, min_index=cursor.index - 1, wait_ms=wait_ms, timeout=timeout)
    return decode_page(answer.payload)


def _after(cursor: Cursor, page: WatchPage) -> Cursor:
    """The cursor past ``page`` (never back: a replica behind answers with less)."""
    if (page.next.index, page.next.skip) > (cursor.index, cursor.skip):
        return page.next
    return cursor
