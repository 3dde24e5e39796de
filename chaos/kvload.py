"""Client load on the coordination service (``paxos chaos --service kv``): traced clients,
sequential workers and watchers.

Every worker is a sequential client of the service through its own
:class:`~broadcast.kv.KvClient` (a :class:`TracedKv`). An operation is one call of the
client's API (``put``, ``get``, ``delete``, ``cas``, an ephemeral ``put``, ``lock`` with a
bounded wait, a fenced ``put`` of the key a lock guards, the lock's ``release``, ``close``,
a stale ``get``), recorded in the :class:`~chaos.history.History` with what the API
returned. Below the API, :class:`TracingClient` records every command the call sent
through the log: its payload, the broadcast session key and seq it went under, the
index it committed at and the result the client got back (the
:class:`~paxos.coord.machine.Result` fields, the index it names included). The checkers
(:mod:`chaos.kvcheck`) judge those records against the agreed log, never the client's
own bookkeeping.

Sessions are short (``ttl_ms`` 1.5-3 s by default), so they expire under pauses and
partitions. A worker whose call timed out abandons its client without closing its
session (its outcome is unknown; the lease ends the session, and with it the client's
ephemeral keys and locks) and starts a new one. A worker that holds a lock sometimes
pauses *itself* (:meth:`KvWorker.pause`): its renewals stop for longer than its TTL, as
in a long GC pause, and then it writes with the fencing token it was given; the service
must refuse what the token no longer covers.

:class:`Watcher` follows the service's own account of what changed under a prefix (a
watch from index 1), for the checkers to compare with the log.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broadcast.client import Answered, Client, ClusterUnavailable, Committed
from broadcast.errors import QueryFailed, SessionExpired
from broadcast.kv import KvClient
from broadcast.kv.errors import (
    OutcomeUnknown,
    Refused,
    SessionLost,
    WaitTimeout,
    WatchCompacted,
)
from broadcast.kv.wire import Cursor, WireError, decode_result
from broadcast.logs import get_logger
from broadcast.spec import Cluster
from chaos.history import History, Kind, Op, Outcome

if TYPE_CHECKING:
    from chaos.harness import ChaosRun

log = get_logger("chaos")

#: Key names by role: plain keys (checked for linearizability), ephemeral keys, locks and
#: the key each lock guards (fenced writes only; checked for linearizability too).
PLAIN_PREFIX = "k"
EPHEMERAL_PREFIX = "e/"
LOCK_PREFIX = "lock/"
GUARDED_PREFIX = "g/"
PROBE_KEY = "probe"
#: The watchers' prefixes: what ephemeral keys and locks did, as the service reports it.
WATCHED = (EPHEMERAL_PREFIX, LOCK_PREFIX)
#: Changes a watcher keeps at most (then it stops recording and says so).
MAX_WATCHED_CHANGES = 1_000_000
#: What a call can fail with short of a bug: the outcome is then unknown.
CALL_ERRORS = (ClusterUnavailable, SessionExpired, QueryFailed, WireError, TimeoutError, OSError)


@dataclass(frozen=True)
class KvLoad:
    """The workload's knobs (``ChaosConfig`` passes its own)."""

    keys: int = 4
    ephemeral_keys: int = 3
    locks: int = 1
    ttl_ms: tuple[int, int] = (1500, 3000)
    #: How long a worker waits for a lock: one that mostly takes locks, and the others.
    lock_wait_s: tuple[float, float] = (0.2, 1.0)
    short_lock_wait_s: tuple[float, float] = (0.05, 0.3)
    #: How often a worker that obtained a lock pauses itself past its TTL before writing.
    pause_chance: float = 0.25

    @property
    def plain(self) -> list[str]:
        return [f"{PLAIN_PREFIX}{i}" for i in range(self.keys)]

    @property
    def ephemeral(self) -> list[str]:
        return [f"{EPHEMERAL_PREFIX}{i}" for i in range(self.ephemeral_keys)]

    @property
    def lock_names(self) -> list[str]:
        return [f"{LOCK_PREFIX}{i}" for i in range(self.locks)]


def guarded_key(lock: str) -> str:
    """The key the lock ``lock`` guards (written with its fencing token only)."""
    return GUARDED_PREFIX + lock.removeprefix(LOCK_PREFIX)


def result_row(data: bytes | None) -> dict[str, Any] | None:
    """A result as the client got it, for the history (None: the node no longer knew it)."""
    if data is None:
        return None
    try:
        r = decode_result(data)
    except WireError:
        return {"undecodable": data[:200].hex()}
    return {
        "index": r.index,
        "ok": r.ok,
        "reason": r.reason,
        "session": r.session,
        "version": r.version,
        "value": None if r.value is None else r.value.hex(),
        "token": r.token,
    }


class TracingClient(Client):
    """The connection a :class:`TracedKv` sends its commands on: records each call.

    A call's record is appended before it is sent (``payload``, and the session key and
    seq it is about to go under), completed with ``index`` (and the key and seq it really
    went under) once it committed, and with ``result`` once the result came back."""

    def __init__(self, owner: TracedKv, cluster: Cluster | str, **kwargs: Any) -> None:
        super().__init__(cluster, **kwargs)
        self.owner = owner
        self._record: dict[str, Any] | None = None

    def call(self, payload: bytes) -> Answered:
        record: dict[str, Any] = {
            "payload": payload.hex(),
            "client": self.session or "",
            "seq": self._next_seq if self.session else 1,
        }
        self.owner.trace.append(record)
        self._record = record
        try:
            answered = super().call(payload)
        finally:
            self._record = None
        record["index"] = answered.index
        record["result"] = result_row(answered.result)
        return answered

    def broadcast(self, payload: bytes) -> Committed:
        committed = super().broadcast(payload)
        if self._record is not None:
            self._record.update(client=committed.client, seq=committed.seq, index=committed.index)
        return committed


class PausableClient(Client):
    """The renewal connection: a call waits while the client is paused."""

    def __init__(self, running: threading.Event, cluster: Cluster | str, **kwargs: Any) -> None:
        super().__init__(cluster, **kwargs)
        self.running = running

    def call(self, payload: bytes) -> Answered:
        self.running.wait()
        return super().call(payload)


class TracedKv(KvClient):
    """A :class:`~broadcast.kv.KvClient` whose commands are traced (:attr:`trace`) and
    whose renewals can be paused (:attr:`running`)."""

    def __init__(self, cluster: Cluster | str, **kwargs: Any) -> None:
        # (before KvClient's __init__, which connects)
        self.trace: list[dict[str, Any]] = []
        self.running = threading.Event()
        self.running.set()
        super().__init__(cluster, **kwargs)

    def _connect(self, role: str) -> Client:
        client_id = f"{self.name}-{role}"[:100]
        if role == "call":
            return TracingClient(self, self.cluster, client_id=client_id, **self._args)
        if role == "renew":
            return PausableClient(self.running, self.cluster, client_id=client_id, **self._args)
        return super()._connect(role)

    def abandon(self) -> None:
        """Stop using this client without closing its session: the lease ends it."""
        self.running.set()
        self.session = None  # (close() then sends no Close)
        self.close()

    def close(self) -> None:
        self.running.set()  # (a paused renewal would hold close() up)
        super().close()


class KvWorker(threading.Thread):
    """A sequential client of the coordination service; every operation is recorded."""

    def __init__(self, run: ChaosRun, process: int, load: KvLoad) -> None:
        super().__init__(name=f"chaos-kv-client-{process}", daemon=True)
        self.run_ = run
        self.history: History = run.history
        self.stop = run.stop_clients
        self.load = load
        self.process = process
        #: Every third worker mostly takes locks.
        self.locker = process % 3 == 1
        self.rng = random.Random(f"{run.seed}-kv-{process}")
        self.kv: TracedKv | None = None
        self.generation = 0
        self.count = 0
        #: The last version this worker saw of each key (what its compare-and-sets expect).
        self.versions: dict[str, int] = {}

    # ------------------------------------------------------------------ clients

    def client(self) -> TracedKv:
        if self.kv is None or self.kv.lost:
            self.drop()
            self.generation += 1
            r = self.run_
            self.kv = TracedKv(
                r.cluster,
                name=f"w{self.process}.{self.generation}",
                ttl_ms=self.rng.randint(*self.load.ttl_ms),
                timeout=r.config.op_timeout,
                insecure=r.config.insecure,
            )
        return self.kv

    def drop(self) -> None:
        """Abandon the client (a timed-out call may still commit; its session ends by
        its lease)."""
        if self.kv is not None:
            self.kv.abandon()
            self.kv = None

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
            if self.kv is not None:
                self.close()
        except Exception as exc:  # a bug of the harness: say so, do not hide it
            log.error("chaos.kv_worker_failed", process=self.process, error=repr(exc))
            self.run_.notes.append(f"kv worker {self.process} failed: {exc!r}"[:300])
            raise
        finally:
            if self.kv is not None:
                self.kv.abandon()

    def step(self) -> None:
        """One operation. Lockers take a lock every other time (so that locks are
        contended); the others mostly read and write keys, and now and then take a lock
        with a short wait."""
        self.count += 1
        load, rng = self.load, self.rng
        if self.locker and rng.random() < 0.5:
            self.lock_cycle(rng.choice(load.lock_names), load.lock_wait_s)
            return
        draw = rng.random()
        key = rng.choice(load.plain)
        if draw < 0.24:
            self.put(key)
        elif draw < 0.50:
            self.get(key)
        elif draw < 0.56:
            self.delete(key)
        elif draw < 0.65:
            self.cas(key)
        elif draw < 0.70:
            self.stale_get(key)
        elif draw < 0.80:
            self.ephemeral_put(rng.choice(load.ephemeral))
        elif draw < 0.87:
            ekey = rng.choice(load.ephemeral)
            if rng.random() < 0.8:
                self.get(ekey)
            else:
                self.delete(ekey)
        elif draw < 0.92:
            self.get(guarded_key(rng.choice(load.lock_names)))
        elif draw < 0.95:
            self.lock_cycle(rng.choice(load.lock_names), load.short_lock_wait_s)
        else:
            self.close()

    def value(self) -> str:
        return f"v{self.process}-{self.count}"

    def _op(
        self,
        kind: Kind,
        key: str,
        value: str | None,
        action: Callable[[TracedKv], Any],
        **extra: Any,
    ) -> tuple[Op, Any]:
        """Run ``action`` as one operation, recorded with its calls and outcome."""
        kv = self.client()
        kv.trace = []
        op = self.history.invoke(self.process, kind, key, value, client=kv.name)
        op.extra.update(extra)
        outcome: Outcome = "ok"
        error: str | None = None
        returned: Any = None
        try:
            returned = action(kv)
        except WaitTimeout:
            op.extra["waited"] = True  # not obtained in time (the request was withdrawn)
        except Refused as exc:
            op.extra["refused"] = exc.reason
        except SessionLost as exc:
            op.extra["lost"] = True
            error = str(exc)[:200]
            if not kv.trace:
                outcome = "failed"  # never sent: the session was known to be gone
            self.drop()
        except OutcomeUnknown as exc:
            outcome, error = "unknown", str(exc)[:200]  # applied at exc.index, result unknown
        except CALL_ERRORS as exc:
            outcome, error = "unknown", repr(exc)[:200]
            self.drop()
        op.calls = kv.trace
        indexes = [c["index"] for c in kv.trace if "index" in c]
        self.history.complete(
            op, outcome, index=indexes[-1] if indexes else None, error=error
        )
        return op, returned

    # ------------------------------------------------------------------ operations

    def put(self, key: str) -> None:
        value = self.value()
        op, version = self._op("put", key, value, lambda kv: kv.put(key, value.encode()))
        self._saw(op, key, version)

    def get(self, key: str) -> None:
        op, got = self._op("get", key, None, lambda kv: kv.get(key))
        if op.outcome == "ok" and "refused" not in op.extra:
            op.value = None if got is None else got[0].decode("utf-8", "replace")
            self._saw(op, key, 0 if got is None else got[1])

    def stale_get(self, key: str) -> None:
        op, got = self._op("stale_get", key, None, lambda kv: kv.get(key, stale=True))
        if op.outcome == "ok":
            op.value = None if got is None else got[0].decode("utf-8", "replace")
            op.extra["version"] = 0 if got is None else got[1]

    def delete(self, key: str) -> None:
        op, deleted = self._op("delete", key, None, lambda kv: kv.delete(key))
        if op.outcome == "ok" and deleted is not None:
            op.extra["deleted"] = deleted

    def cas(self, key: str) -> None:
        expected = self.versions.get(key, 0) if self.rng.random() < 0.8 else 0
        value = self.value()
        op, got = self._op(
            "cas", key, value, lambda kv: kv.cas(key, expected, value.encode()),
            expected=expected,
        )
        if got is not None:
            swapped, version = got
            op.extra["swapped"] = swapped
            self._saw(op, key, version)

    def ephemeral_put(self, key: str) -> None:
        value = self.value()
        op, version = self._op(
            "eput", key, value, lambda kv: kv.put(key, value.encode(), ephemeral=True)
        )
        if self.kv is not None:
            op.extra["session"] = self.kv.session
        self._saw(op, key, version)

    def lock_cycle(self, name: str, wait_s: tuple[float, float]) -> None:
        """Obtain ``name`` (a bounded wait), write the key it guards with its fencing
        token, maybe pause past the lease, write again, release it."""
        wait = self.rng.uniform(*wait_s)
        op, lock = self._op("lock", name, None, lambda kv: kv.lock(name, timeout=wait))
        if lock is None:
            return
        kv = self.kv
        assert kv is not None
        op.extra.update(token=lock.token, session=kv.session)
        key = guarded_key(name)
        paused = 0.0
        for write in range(2):
            if write and self.rng.random() < self.load.pause_chance:
                paused = self.pause(kv)
            value = self.value()
            self.count += 1

            def put(kv: TracedKv, value: str = value) -> int:
                return kv.put(key, value.encode(), fence=lock.fence)

            self._op(
                "fput", key, value, put, fence=[name, lock.token], paused_s=round(paused, 3)
            )
            if self.kv is not kv:
                return  # the client was dropped: its lock goes with its session
        self._op("unlock", name, None, lambda kv: lock.release(), token=lock.token)

    def pause(self, kv: TracedKv) -> float:
        """Stop renewing for longer than the TTL (a long GC pause of a lock holder)."""
        seconds = kv.ttl_ms / 1000.0 * self.rng.uniform(1.3, 2.2)
        kv.running.clear()
        try:
            self.stop.wait(seconds)
        finally:
            kv.running.set()
        return seconds

    def close(self) -> None:
        op, _ = self._op("close", "", None, lambda kv: kv.close())
        if op.calls and "result" not in op.calls[-1]:
            op.outcome = "unknown"  # (close() swallows what its Close call raised)
        self.kv = None

    def _saw(self, op: Op, key: str, version: Any) -> None:
        if op.outcome == "ok" and isinstance(version, int):
            self.versions[key] = version
            op.extra.setdefault("version", version)


class Watcher(threading.Thread):
    """Follows the service's report of the changes under ``prefix`` (a watch from index
    1, resumed across node failures). ``changes`` are rows ``[index, kind, key, session,
    version, value hex]``; ``gaps`` the ranges the service had compacted away before this
    watcher read them."""

    def __init__(self, run: ChaosRun, prefix: str) -> None:
        super().__init__(name=f"chaos-kv-watch-{prefix}", daemon=True)
        self.run_ = run
        self.prefix = prefix
        self.stop = run.stop_followers
        self.lock = threading.Lock()
        self.changes: list[list[Any]] = []
        self.gaps: list[tuple[int, int]] = []
        self.cursor = Cursor(1)
        self.errors = 0
        self.full = False

    def done_through(self) -> int:
        """The last index whose changes this watcher has read."""
        with self.lock:
            return self.cursor.index - 1

    def run(self) -> None:
        r = self.run_
        while not self.stop.is_set():
            kv = KvClient(
                r.cluster, name=f"watch-{self.prefix}", timeout=r.config.op_timeout,
                insecure=r.config.insecure,
            )
            try:
                watch = kv.watch(self.prefix, since=self.cursor)
                try:
                    while not self.stop.is_set():
                        changes = watch.poll(500)
                        with self.lock:
                            for c in changes:
                                if len(self.changes) >= MAX_WATCHED_CHANGES:
                                    self.full = True
                                    break
                                self.changes.append([
                                    c.index, c.kind, c.key, c.session, c.version,
                                    None if c.value is None else c.value.hex(),
                                ])
                            self.cursor = watch.cursor
                finally:
                    watch.close()
            except WatchCompacted as exc:
                with self.lock:
                    self.gaps.append((exc.since, exc.earliest))
                    self.cursor = Cursor(exc.earliest)
            except CALL_ERRORS as exc:
                self.errors += 1
                log.warning("chaos.watch_error", prefix=self.prefix, error=repr(exc)[:200])
                self.stop.wait(0.3)
            finally:
                kv.close()

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "prefix": self.prefix,
                "changes": list(self.changes),
                "gaps": [list(g) for g in self.gaps],
                "through": self.cursor.index - 1,
                "full": self.full,
            }


def probe(history: History, cluster: Cluster, insecure: bool, timeout: float) -> str | None:
    """A put after healing (the proof of progress), recorded like any operation; the
    error if it did not commit."""
    op = history.invoke(0, "put", PROBE_KEY, "final")
    kv = TracedKv(cluster, name="probe", timeout=timeout, insecure=insecure)
    error: str | None = None
    try:
        op.extra = {"version": kv.put(PROBE_KEY, b"final")}
        outcome: Outcome = "ok"
    except (Refused, OutcomeUnknown, *CALL_ERRORS) as exc:
        outcome, error = "unknown", repr(exc)[:200]
    finally:
        kv.abandon()
    op.calls = kv.trace
    indexes = [c["index"] for c in kv.trace if "index" in c]
    history.complete(op, outcome, index=indexes[-1] if indexes else None, error=error)
    return error
