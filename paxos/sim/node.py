"""The node driver: runs one Replica on a virtual disk and network, crashes and restarts it.

The driver is where the Ready contract is kept (see :class:`~paxos.multi.ready.Ready`):
records are written and synced, only then are messages sent, then deliveries
are handed out. Each step is its own method (:meth:`NodeDriver.handle_ready`,
:meth:`~NodeDriver.persist`, :meth:`~NodeDriver.send`, :meth:`~NodeDriver.deliver`)
so that a test can subclass the driver to plant a bug, e.g. send before persist.

Crash points: a crash can be armed to strike in the middle of handling a Ready,
after the disk write, after the sync or after any single send. That is what
makes "send before persist" observable: a crash between the two loses a vow
that a peer has already heard.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from paxos.messages import Message
from paxos.multi.config import ReplicaConfig
from paxos.multi.ready import Ready
from paxos.records import Record
from paxos.sim.checkers import Checkers
from paxos.sim.disk import Disk
from paxos.sim.network import Address, ClientReply, ClientRequest, Network, Payload
from paxos.types import Command, Delivery, Value


class ReplicaLike(Protocol):
    """What the driver needs of a replica (see paxos/multi/replica.py)."""

    @property
    def leader(self) -> int | None: ...

    def step(self, msg: Message) -> Ready: ...

    def tick(self) -> Ready: ...

    def propose(self, commands: Sequence[Command]) -> Ready: ...

    def outcome(self, client: str, seq: int) -> int | None: ...


#: Builds a replica: (node id, config, rng, durable records in write order).
#: ``paxos.multi.replica.Replica`` itself is one; tests pass subclasses.
ReplicaFactory = Callable[[int, ReplicaConfig, random.Random, Sequence[Record]], ReplicaLike]


class CrashNow(Exception):
    """Raised at an armed crash point; the driver catches it and crashes the node."""


class NodeDriver:
    """Runs one node of the simulated cluster."""

    def __init__(
        self,
        node_id: int,
        config: ReplicaConfig,
        replica_factory: ReplicaFactory,
        network: Network,
        checkers: Checkers,
        trace: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.replica_factory = replica_factory
        self.network = network
        self.checkers = checkers
        self.trace = trace
        self.disk = Disk()
        self.replica: ReplicaLike | None = None
        self.incarnation = 0
        #: Client commands proposed here and not yet answered: (client, seq).
        #: Volatile: lost in a crash (the client retries).
        self.pending: dict[tuple[str, int], None] = {}
        #: Crash at the n-th crash point from now; 0 = not armed.
        self.crash_countdown = 0
        self.armed_at = 0
        self.crashes = 0
        self._vowing = False
        self._leader: int | None = None

    @property
    def up(self) -> bool:
        return self.replica is not None

    # ------------------------------------------------------------------ life cycle

    def start(self, rng: random.Random) -> None:
        """(Re)start: a new Replica built from the disk's durable records only."""
        records = self.disk.records()
        self.incarnation += 1
        self.pending = {}
        self.crash_countdown = 0
        self._leader = None
        self.replica = self.replica_factory(self.node_id, self.config, rng, records)
        self.checkers.on_incarnation(self.node_id, self.incarnation, self.network.now)
        self._log(f"start incarnation {self.incarnation} from {len(records)} durable records")

    def crash(self) -> None:
        """Power loss: the replica and all volatile state go, unsynced writes too."""
        lost = self.disk.crash()
        self.replica = None
        self.pending = {}
        self.crash_countdown = 0
        self.crashes += 1
        self._log(f"crash ({lost} unsynced records lost)")

    def arm_crash(self, points: int) -> None:
        """Crash at the ``points``-th crash point from now (mid-Ready)."""
        self.crash_countdown = points
        self.armed_at = self.network.now
        self._log(f"crash armed ({points} crash points)")

    def crash_point(self) -> None:
        """A place where an armed crash may strike (between disk and network effects).

        Only Readies that carry records count: the interesting crashes are the
        ones around a vow (a promise or an accept) being written and announced.
        """
        if self.crash_countdown and self._vowing:
            self.crash_countdown -= 1
            if not self.crash_countdown:
                raise CrashNow

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        replica = self.replica
        if replica is None:
            return
        try:
            self._handle(replica.tick())
        except CrashNow:
            self.crash()
        if self.trace is not None and self.replica is not None:
            leader = self.replica.leader
            if leader != self._leader:
                self._leader = leader
                self._log(f"believes leader is {leader}")

    def receive(self, src: Address, payload: Payload) -> None:
        replica = self.replica
        if replica is None:
            if self.trace is not None:
                self._log(f"down, drops {payload!r} from {src}")
            return
        try:
            if isinstance(payload, ClientRequest):
                self.on_client_request(replica, payload)
            elif not isinstance(payload, ClientReply):
                self._handle(replica.step(payload))
        except CrashNow:
            self.crash()

    def on_client_request(self, replica: ReplicaLike, request: ClientRequest) -> None:
        """Answer what is already delivered here; propose the rest and remember it."""
        known: list[tuple[int, int]] = []
        new: list[Command] = []
        for command in request.commands:
            index = replica.outcome(command.client, command.seq)
            if index is not None:
                known.append((command.seq, index))
            else:
                self.pending[(command.client, command.seq)] = None
                new.append(command)
        if known:
            self.reply(request.client, known)
        if new:
            self._handle(replica.propose(new))

    # ------------------------------------------------------------------ the Ready contract

    def _handle(self, ready: Ready) -> None:
        self._vowing = bool(ready.records)
        self.handle_ready(ready)

    def handle_ready(self, ready: Ready) -> None:
        # Eager messages vouch for nothing in this Ready: they may leave first
        # (and a crash may strike before the records below are durable).
        if ready.eager:
            self.send(ready.eager)
        # Records must be durable before any other message leaves: a Promise or
        # an Accepted is a vow, and a vow forgotten in a crash breaks agreement.
        if ready.records:
            self.persist(ready.records)
        if ready.messages:
            self.send(ready.messages)
        if ready.chosen:
            self.observe_chosen(ready.chosen)
        if ready.deliveries:
            self.deliver(ready.deliveries)

    def persist(self, records: Sequence[Record]) -> None:
        self.disk.write(records)
        self.crash_point()
        self.disk.sync()
        self.crash_point()

    def send(self, messages: Sequence[tuple[int, Message]]) -> None:
        network = self.network
        src = self.node_id
        for dst, msg in messages:
            network.send(src, dst, msg)
            self.crash_point()

    def observe_chosen(self, chosen: Sequence[tuple[int, Value]]) -> None:
        on_chosen = self.checkers.on_chosen
        node, incarnation, now = self.node_id, self.incarnation, self.network.now
        for slot, value in chosen:
            on_chosen(node, incarnation, slot, value, now)

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Hand deliveries to the checkers and answer the clients waiting for them."""
        on_delivery = self.checkers.on_delivery
        node, incarnation, now = self.node_id, self.incarnation, self.network.now
        pending = self.pending
        answers: dict[str, list[tuple[int, int]]] = {}
        for delivery in deliveries:
            on_delivery(node, incarnation, delivery, now)
            command = delivery.command
            if self.trace is not None:
                self._log(
                    f"deliver #{delivery.index} {command.client}#{command.seq} "
                    f"(slot {delivery.slot})"
                )
            key = (command.client, command.seq)
            if key in pending:
                del pending[key]
                answers.setdefault(command.client, []).append((command.seq, delivery.index))
        for client, acks in answers.items():
            self.reply(client, acks)

    def reply(self, client: str, acks: Sequence[tuple[int, int]]) -> None:
        leader = self.replica.leader if self.replica is not None else None
        self.network.send(self.node_id, client, ClientReply(self.node_id, tuple(acks), leader))

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.network.now} node {self.node_id} {text}")
