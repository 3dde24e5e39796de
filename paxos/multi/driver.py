"""The one place that keeps the Ready contract, in every world that runs a replica.

A replica's :meth:`~paxos.multi.replica.Replica.step`, ``tick`` and ``propose``
return a :class:`~paxos.multi.ready.Ready`. The runtime (:mod:`broadcast.node`),
the simulator (:mod:`paxos.sim.node`), the hand-driven test clusters and the
core benchmark all hand those Readies to a :class:`ReadyDriver`; each world
supplies only its :class:`Storage` (where records go, how they are synced), its
:class:`Outbox` (how messages leave) and its :class:`Applier` (what chosen
values, deliveries and session events mean there). So the simulator checks the
very code that orders disk and network in production.

**Turn-level batching.** A driver collects every Ready of one turn
(:meth:`ReadyDriver.take`) and handles them together (:meth:`ReadyDriver.flush`):

1. the eager messages of all of them;
2. the records of all of them, appended and then synced once (group commit);
3. the other messages of all of them;
4. what they applied (chosen values, opened sessions, deliveries, ended
   sessions), in the order the replica produced it.

Why the merge is safe. Each Ready alone requires: its records durable before
its messages leave, its eager messages free to leave at any time. In the
merged order every message leaves after *all* the turn's records are durable,
which is later than its own Ready required: still safe. Eager messages leave
before any of the turn's records are durable; each Ready guarantees that its
eager messages vouch for nothing in its own records (the leader's Accepts at a
ballot whose promise became durable in an earlier turn), but not for records
of *earlier Readies of the same turn*. The only record an eager Accept could
depend on is the promise of its own ballot: if a turn holds a
:class:`~paxos.records.PromiseRecord`, the eager messages of every later Ready
of that turn are demoted to ordinary messages (they wait for the sync). That
costs nothing in steady state (promises are written only around elections).
What is applied is in the replica's own order, after everything is durable.

**Installed snapshots.** A Ready may carry a snapshot the replica installed
from a peer (``installed``). It is saved (durably, atomically) before that
Ready's records, which may rely on it, and the application restores from it
before that Ready's deliveries. A turn never merges such a Ready behind
earlier Readies: :meth:`ReadyDriver.take` flushes the turn first, so the
deliveries before the install are applied before the state is replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from paxos.messages import Message
from paxos.multi.ready import Ready
from paxos.multi.snapshot import Snapshot
from paxos.records import PromiseRecord, Record


class Storage(Protocol):
    """Stable storage: ``append`` may buffer; after ``sync`` all appended records are durable."""

    def append(self, records: Sequence[Record]) -> None: ...

    def sync(self) -> None: ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Make a snapshot installed from a peer durable (returns once it is)."""
        ...


class Outbox(Protocol):
    """Sends ``(destination node id, message)`` pairs; may lose them (Paxos retransmits)."""

    def send(self, messages: Sequence[tuple[int, Message]]) -> None: ...


class Applier(Protocol):
    """Consumes what a flushed turn applied: ``chosen``, ``opened``, ``deliveries``
    (with ``runs``) and ``ended`` of the merged Ready, in that order of concern."""

    def apply(self, ready: Ready) -> None: ...


class ReadyDriver:
    """Collects a turn's Readies and handles them in the contract's order (see the module
    docstring). Not thread-safe: one turn at a time, from one thread."""

    __slots__ = ("_promising", "_taken", "applier", "outbox", "pending", "storage")

    def __init__(self, storage: Storage, outbox: Outbox, applier: Applier) -> None:
        self.storage = storage
        self.outbox = outbox
        self.applier = applier
        #: The merged Ready of the current turn.
        self.pending = Ready()
        # True once the current turn holds a PromiseRecord: later eager messages wait.
        self._promising = False
        # Readies taken this turn (the first is kept as it is: no copy).
        self._taken = 0

    def take(self, ready: Ready) -> None:
        """Add one Ready to the current turn (it is consumed: do not use it afterwards)."""
        if not ready:
            return
        if ready.installed is not None and self._taken:
            # The install replaces the state the earlier Readies' deliveries apply to:
            # those go first, in a turn of their own.
            self.flush()
        if self._promising and ready.eager:
            # Safety: an eager Accept may be at the ballot promised earlier in this same
            # turn; that promise is not durable until the turn's sync. Let it wait.
            ready.messages[:0] = ready.eager
            ready.eager = []
        elif not self._promising and ready.records:
            self._promising = any(type(r) is PromiseRecord for r in ready.records)
        if self._taken:
            self.pending.extend(ready)
        else:
            self.pending = ready
        self._taken += 1

    def flush(self) -> None:
        """Handle the turn: eager messages, records and one sync, messages, what applied."""
        if not self._taken:
            return
        ready = self.pending
        self.pending = Ready()
        self._promising = False
        self._taken = 0
        self.handle(ready)

    def handle(self, ready: Ready) -> None:
        """The contract itself, for one (merged) Ready. Tests plant bugs by overriding it."""
        if ready.eager:
            # Vouch for nothing in ready.records: they may leave before the sync, so that
            # the followers' fsync overlaps ours.
            self.outbox.send(ready.eager)
        if ready.installed is not None:
            # Before the records: a CommitRecord at or above its slot is replayed from it.
            self.storage.save_snapshot(ready.installed)
        if ready.records:
            # The vow before the word: a promise or an accept must survive a crash
            # before anyone hears of it.
            self.storage.append(ready.records)
            self.storage.sync()
        if ready.messages:
            self.outbox.send(ready.messages)
        self.applier.apply(ready)
