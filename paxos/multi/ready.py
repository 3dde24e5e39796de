"""What one call into a replica hands back to its driver (etcd-raft's Ready)."""

from __future__ import annotations

from dataclasses import dataclass, field

from paxos.messages import Message
from paxos.multi.membership import Membership
from paxos.multi.snapshot import Snapshot
from paxos.records import Record
from paxos.types import Delivery, Value


@dataclass(slots=True)
class Ready:
    """The output of :meth:`Replica.step`, :meth:`Replica.tick` and :meth:`Replica.propose`.

    The driver must handle the parts in this order:

    0. ``eager``: messages that vouch for nothing in ``records`` and may leave
       before the records are durable (or at the same time). These are the
       leader's phase-2 Accepts: its ballot's promise is durable from an
       earlier Ready, and its own vote in ``records`` counts towards a majority
       only once other votes arrive, which is after this Ready was handled.
       Sending them first overlaps the leader's fsync with the followers'.
    1. ``records``: append to stable storage and sync. Nothing below may happen
       before they are durable: a promise or an accept is a vow that must
       survive a crash before anyone hears of it.
    2. ``messages``: ``(destination node id, message)`` pairs to send.
    3. ``deliveries``: committed commands, in total order, each exactly once.

    ``chosen`` lists the ``(slot, value)`` pairs this replica learned as chosen
    during the call, in slot order (no-ops included); checkers and the
    application's audit use it, the protocol does not need it.

    ``runs`` summarises ``deliveries`` per client: ``(client, first_seq,
    first_index, count)`` for each run of one client's consecutive seqs at
    consecutive indexes, so a driver can acknowledge a batch without touching
    each command.

    ``opened`` lists the sessions that applying the log opened during the call,
    ``(name, nonce, key)`` (a retried open again names the session it opened
    the first time), and ``ended`` the sessions it ended, ``(key, last seq,
    reason)``: a driver answers the clients waiting on them.

    ``installed`` is a snapshot received from a peer and installed by the replica
    during the call. The driver makes it durable *before* the records (they may
    rely on it: a CommitRecord at or above its slot), restores the application
    from it before the deliveries (which continue after its index), and never
    merges a Ready that has one behind another one's deliveries.

    ``configs`` lists the membership changes applied during the call: ``(slot it
    was chosen at, first slot it governs, the new membership)``; ``governed`` pairs
    ``(slot, epoch)``: the epoch of the membership this replica counted a quorum in
    (leading) or applied (delivering) for that slot. Checkers use both; a driver
    uses ``configs`` to connect to new members.
    """

    eager: list[tuple[int, Message]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    messages: list[tuple[int, Message]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    chosen: list[tuple[int, Value]] = field(default_factory=list)
    runs: list[tuple[str, int, int, int]] = field(default_factory=list)
    opened: list[tuple[str, bytes, str]] = field(default_factory=list)
    ended: list[tuple[str, int, str]] = field(default_factory=list)
    installed: Snapshot | None = None
    configs: list[tuple[int, int, Membership]] = field(default_factory=list)
    governed: list[tuple[int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.records
            or self.messages
            or self.eager
            or self.deliveries
            or self.chosen
            or self.opened
            or self.ended
            or self.configs
            or self.installed is not None
        )

    def extend(self, other: Ready) -> None:
        """Append ``other``'s parts after this one's (order is kept per part)."""
        self.eager.extend(other.eager)
        self.records.extend(other.records)
        self.messages.extend(other.messages)
        self.deliveries.extend(other.deliveries)
        self.chosen.extend(other.chosen)
        self.runs.extend(other.runs)
        self.opened.extend(other.opened)
        self.ended.extend(other.ended)
        self.configs.extend(other.configs)
        self.governed.extend(other.governed)
        if other.installed is not None:
            # (the driver flushes before taking a Ready with an install: see take())
            self.installed = other.installed
