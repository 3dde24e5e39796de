"""The node driver: runs one Replica on a virtual disk and network, crashes and restarts it.

The Ready contract is kept by the same :class:`~paxos.multi.driver.ReadyDriver`
the runtime uses, with the same turn-level batching: every Ready of a node's
tick (the messages delivered to it, client requests, its own tick) is taken,
then flushed once. This module supplies the driver's storage (the virtual
:class:`~paxos.sim.disk.Disk`), outbox (the virtual network) and applier (the
checkers and the clients' answers). A test plants a bug in the contract by
passing a ReadyDriver subclass (``SimConfig.ready_driver``).

Crash points: a crash can be armed to strike in the middle of a flush, after
the disk write, after the sync or after any single send. That is what makes
"send before persist" observable: a crash between the two loses a vow that a
peer has already heard. Snapshot-then-compact has a crash point after each of
its steps too (snapshot temp file written, renamed, promise re-recorded, log
floor set, each segment deleted), and so has saving a snapshot installed from
a peer.

Snapshots: every ``snapshot_every`` chosen slots, at the end of a turn (a
delivery boundary), the node snapshots its replica and its application
(:class:`~paxos.sim.app.SimApp`) and compacts its log by the rule the runtime
uses (:mod:`paxos.multi.compaction`). A restart starts from the durable
snapshot and the log segments left.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from paxos.coord.machine import CoordMachine
from paxos.messages import Message
from paxos.multi.compaction import keep_from
from paxos.multi.config import ReplicaConfig
from paxos.multi.driver import ReadyDriver
from paxos.multi.membership import Membership, Op
from paxos.multi.ready import Ready
from paxos.multi.sessions import Sessions, close_command, open_command
from paxos.multi.snapshot import Snapshot, read_snapshot
from paxos.records import AcceptRecord, Record
from paxos.sim.app import SimApp
from paxos.sim.checkers import Checkers
from paxos.sim.disk import Disk, DiskCorruption
from paxos.sim.events import EventLog, ballot_list, ranges
from paxos.sim.invariants import Invariants
from paxos.sim.network import (
    Address,
    ClientReply,
    ClientRequest,
    CloseRequest,
    Network,
    OpenReply,
    OpenRequest,
    Payload,
    SessionEnded,
)
from paxos.types import Command, Delivery, Value


class ReplicaLike(Protocol):
    """What the driver needs of a replica (see paxos/multi/replica.py)."""

    @property
    def leader(self) -> int | None: ...

    commit: int
    floor: int
    sessions: Sessions

    def take_snapshot(self, app: bytes = b"") -> Snapshot: ...

    def compacted(self, snapshot: Snapshot) -> Ready: ...

    def step(self, msg: Message) -> Ready: ...

    def tick(self) -> Ready: ...

    def propose(self, commands: Sequence[Command]) -> Ready: ...

    def outcome(self, client: str, seq: int) -> int | None: ...

    def session_status(self, key: str) -> tuple[str, int | None]: ...

    def session_key(self, name: str, nonce: bytes) -> str | None: ...

    @property
    def is_leader(self) -> bool: ...

    @property
    def latest(self) -> Membership: ...

    configs: list[tuple[int, Membership]]
    current: Membership

    def reconfigure(self, op: Op, node: int) -> tuple[Ready, str | None]: ...

    def transfer_leadership(self, target: int) -> tuple[Ready, str | None]: ...


#: Builds a replica: (node id, config, rng, durable records in write order, durable
#: snapshot or None). ``paxos.multi.replica.Replica`` itself is one; tests pass subclasses.
ReplicaFactory = Callable[
    [int, ReplicaConfig, random.Random, Sequence[Record], Snapshot | None], ReplicaLike
]


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
        ready_driver: type[ReadyDriver] = ReadyDriver,
        *,
        snapshot_every: int = 0,
        segment_records: int = 1 << 62,
        coord_factory: Callable[[], CoordMachine] | None = None,
    ) -> None:
        self.node_id = node_id
        #: Builds this node's coordination state machine (part of its application).
        self.coord_factory = coord_factory
        self.ready_driver = ready_driver
        self.driver = ready_driver(self, self, self)
        self.config = config
        self.replica_factory = replica_factory
        self.network = network
        self.checkers = checkers
        #: State invariants, checked at every step (if the run checks them).
        self.invariants = next(
            (c for c in checkers.checkers if isinstance(c, Invariants)), None
        )
        self.trace = trace
        self.disk = Disk(segment_records)
        #: Snapshot (and compact) every this many chosen slots; 0: never.
        self.snapshot_every = snapshot_every
        self._pad = bytes((node_id,)) * node_id  # this node's own snapshot bytes (SimApp)
        self.snapshots_taken = 0
        self.installs = 0
        self._installing = 0
        #: Crashes that struck during snapshot-then-compact, and while saving an install.
        self.snapshot_crashes = 0
        self.install_crashes = 0
        self._stage = ""
        self.app = self._new_app()
        self.replica: ReplicaLike | None = None
        self.incarnation = 0
        #: Client commands proposed here and not yet answered: (session key, seq) ->
        #: the client's address. Volatile: lost in a crash (the client retries).
        self.pending: dict[tuple[str, int], Address] = {}
        #: Session opens proposed here and not yet answered: (name, nonce) -> address.
        self.pending_opens: dict[tuple[str, bytes], Address] = {}
        #: Crash at the n-th crash point from now; 0 = not armed.
        self.crash_countdown = 0
        self.armed_at = 0
        self.crashes = 0
        self._vowing = False
        self._leader: int | None = None
        #: Structured events (the visualiser's), if the run records them.
        self.events: EventLog | None = None
        #: What the last role event said: (role, ballot, leader).
        self._role: tuple[str, list[int] | None, int | None] | None = None
        #: Accepts appended and not yet synced (only while recording events).
        self._unsynced_accepts: list[AcceptRecord] = []
        #: The chosen prefix this node's application has seen (the last chosen slot
        #: applied; what it started from after a restart or an install).
        self.chosen_upto = 0

    @property
    def up(self) -> bool:
        return self.replica is not None

    @property
    def coord_view(self) -> CoordMachine | None:
        """This node's coordination state as applied here (None while it is down)."""
        return self.app.coord if self.replica is not None else None

    @property
    def leads(self) -> bool:
        replica = self.replica
        return replica is not None and replica.leader == self.node_id

    @property
    def amnesiac(self) -> bool:
        """Its disk was lost after it had run: it forgot what it promised and accepted."""
        return self.incarnation > 0 and not self.disk.identity

    # ------------------------------------------------------------------ life cycle

    def may_start(self) -> bool:
        """The identity rule that ships (tests plant bugs by overriding it): a node whose
        data directory lost the record of who it is never starts under its old id. It
        forgot its promises and votes; voting again as that acceptor could choose a
        second value in a slot. An operator replaces it with a new member (a new id)."""
        return not self.amnesiac

    def wipe(self) -> None:
        """Disk loss: the node goes down and everything on its disk is gone."""
        if self.up:
            self.crash()
        self.disk = Disk(self.disk.segment_records)
        self._log("disk lost")
        if self.events is not None:
            self.events.emit(self.network.now, "wipe", node=self.node_id)

    def reconfigure(self, op: Op, node: int) -> str | None:
        """Ask this node's replica for a membership change (an operator's command)."""
        replica = self.replica
        if replica is None:
            return "down"
        try:
            ready, refused = replica.reconfigure(op, node)
            self._handle(ready)
        except CrashNow:
            self.crash()
            return "crashed"
        return refused

    def transfer(self, target: int) -> str | None:
        """Ask this node's replica to hand leadership over to ``target``."""
        replica = self.replica
        if replica is None:
            return "down"
        try:
            ready, refused = replica.transfer_leadership(target)
            self._handle(ready)
        except CrashNow:
            self.crash()
            return "crashed"
        return refused

    def start(self, rng: random.Random) -> None:
        """(Re)start: a new Replica built from the disk's durable snapshot and records only."""
        if not self.may_start():
            self._log("refuses to start: its disk was lost (a new member must replace it)")
            return
        self.disk.identity = True
        self.incarnation += 1
        try:
            records = self.disk.records()
        except DiskCorruption as exc:
            # What the runtime would refuse to start from: compaction lost data.
            if self.invariants is not None:
                self.invariants.report(self.network.now, f"node {self.node_id}: {exc}")
            self._log(f"cannot start: {exc}")
            return
        snapshot = self.disk.snapshot
        self.pending = {}
        self.pending_opens = {}
        self.crash_countdown = 0
        self._leader = None
        self.driver = self.ready_driver(self, self, self)
        self.replica = replica = self.replica_factory(
            self.node_id, self.config, rng, records, snapshot
        )
        self.checkers.on_incarnation(self.node_id, self.incarnation, self.network.now)
        self.app = self._new_app()
        if snapshot is not None:
            self._restore(snapshot)
        if self.invariants is not None:
            self.invariants.started(
                self.node_id,
                self.incarnation,
                replica,
                records,
                self.network.now,
                snapshot.slot if snapshot is not None else 0,
            )
        # (a replica starts from its snapshot's chosen prefix; it replays the rest of its
        # log as chosen on its first tick)
        self.chosen_upto = snapshot.slot if snapshot is not None else 0
        self._log(f"start incarnation {self.incarnation} from {len(records)} durable records")
        events = self.events
        if events is not None:
            if self.incarnation > 1:
                events.emit(
                    self.network.now,
                    "restart",
                    node=self.node_id,
                    chosen=self.chosen_upto,
                    delivered=self.app.index,
                )
            self._role = None
            self._observe_role(replica)

    def _new_app(self) -> SimApp:
        factory = self.coord_factory
        return SimApp(self._pad, factory() if factory is not None else None)

    def crash(self) -> None:
        """Power loss: the replica and all volatile state go, unsynced writes too."""
        lost = self.disk.crash()
        self.replica = None
        self.driver = self.ready_driver(self, self, self)  # the turn's Readies die with it
        self.pending = {}
        self.pending_opens = {}
        self.crash_countdown = 0
        self._installing = 0
        self.crashes += 1
        if self._stage == "snapshot":
            self.snapshot_crashes += 1
        elif self._stage == "install":
            self.install_crashes += 1
        self._stage = ""
        self._log(f"crash ({lost} unsynced records lost)")
        if self.events is not None:
            self._unsynced_accepts = []
            self.events.emit(self.network.now, "crash", node=self.node_id)

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

    def tick(self, ticks: int = 1) -> None:
        """The end of this node's turn: ``ticks`` ticks of its clock (0, 1 or more: clocks
        run at different rates), then one flush of everything taken."""
        replica = self.replica
        if replica is None:
            return
        try:
            for _ in range(ticks):
                self._handle(replica.tick())
            self._vowing = bool(self.driver.pending.records)
            self.driver.flush()
            self.maybe_snapshot(replica)
        except CrashNow:
            self.crash()
        if self.events is not None and self.replica is not None:
            self._observe_role(self.replica)
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
            if self.events is not None:
                self.events.drop(self.network.now, src, self.node_id, payload, "crashed")
            return
        try:
            if isinstance(payload, ClientRequest):
                self.on_client_request(replica, payload)
            elif isinstance(payload, OpenRequest):
                self.on_open_request(replica, payload)
            elif isinstance(payload, CloseRequest):
                self._handle(replica.propose([close_command(payload.key)]))
            elif not isinstance(payload, ClientReply | OpenReply | SessionEnded):
                self._handle(replica.step(payload))
        except CrashNow:
            self.crash()

    def on_open_request(self, replica: ReplicaLike, request: OpenRequest) -> None:
        """Answer an open applied here already; propose it otherwise (applying it twice
        opens one session)."""
        key = replica.session_key(request.name, request.nonce)
        if key is not None:
            reply = OpenReply(self.node_id, request.nonce, key)
            self.network.send(self.node_id, request.client, reply)
            return
        self.pending_opens[(request.name, request.nonce)] = request.client
        self._handle(replica.propose([open_command(request.name, request.nonce)]))

    def on_client_request(self, replica: ReplicaLike, request: ClientRequest) -> None:
        """Answer what is already delivered here (or a session that ended); propose the
        rest and remember it."""
        known: list[tuple[int, int]] = []
        new: list[Command] = []
        key = ""
        for command in request.commands:
            key = command.client
            state, last = replica.session_status(key)
            if state == "ended":
                ended = SessionEnded(self.node_id, key, last)
                self.network.send(self.node_id, request.client, ended)
                return
            index = replica.outcome(key, command.seq)
            if index is not None:
                known.append((command.seq, index))
            else:
                self.pending[(key, command.seq)] = request.client
                new.append(command)
        if known:
            self.reply(request.client, key, known)
        if new:
            self._handle(replica.propose(new))

    # ------------------------------------------------------------------ the driver's hooks

    def _handle(self, ready: Ready) -> None:
        if ready.installed is not None:
            # The replica took it in memory already; it is saved before anything of this
            # Ready is handled (the invariants allow the floor up to it meanwhile).
            self._installing = max(self._installing, ready.installed.slot)
        self.driver.take(ready)

    def append(self, records: Sequence[Record]) -> None:
        """Storage: write to the virtual disk (lost in a crash until synced)."""
        if self.invariants is not None:
            self.invariants.appended(
                self.node_id, self.incarnation, self.replica, records, self.network.now
            )
        self.disk.write(records)
        if self.events is not None:
            self._unsynced_accepts.extend(r for r in records if isinstance(r, AcceptRecord))
        self.crash_point()

    def sync(self) -> None:
        self.disk.sync()
        if self.events is not None and self._unsynced_accepts:
            self._accept_events(self._unsynced_accepts)
            self._unsynced_accepts = []
        self.crash_point()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Storage: a snapshot installed from a peer, written atomically."""
        self._vowing = True
        self._stage = "install"
        self.disk.write_snapshot(snapshot)
        self.crash_point()
        self.disk.rename_snapshot()
        if self._installing <= snapshot.slot:
            self._installing = 0  # (a later install may be taken already, not saved yet)
        self.crash_point()
        self._stage = ""

    # ------------------------------------------------------------------ snapshots

    def maybe_snapshot(self, replica: ReplicaLike) -> None:
        """Snapshot-then-compact, if ``snapshot_every`` slots were chosen since the last
        snapshot; a crash may strike after every step."""
        if not self.snapshot_every:
            return
        durable = self.disk.snapshot
        if replica.commit - (durable.slot if durable is not None else 0) < self.snapshot_every:
            return
        self._vowing = True
        self._stage = "snapshot"
        snapshot = replica.take_snapshot(self.app.snapshot())
        self.disk.write_snapshot(snapshot)
        self.crash_point()
        self.disk.rename_snapshot()
        self.crash_point()
        self.snapshots_taken += 1
        self._log(f"snapshot at slot {snapshot.slot} (index {snapshot.index})")
        if self.events is not None:
            self.events.emit(self.network.now, "snapshot", node=self.node_id, slot=snapshot.slot)
        self._handle(replica.compacted(snapshot))
        self._vowing = True
        self.driver.flush()  # the re-recorded promise and prefix, synced
        keep = self.keep_from(self.disk.segment_tops(), replica.floor, self.disk.current)
        if keep > self.disk.floor:
            self.disk.set_floor(keep)
            self.crash_point()
            for number in sorted(n for n in self.disk.segments if n < keep):
                self.disk.delete_segment(number)
                self.crash_point()
            self._log(f"log compacted below segment {keep} (floor slot {replica.floor})")
        self._stage = ""

    def keep_from(self, tops: Sequence[tuple[int, int]], floor: int, current: int) -> int:
        """The compaction rule that ships (tests plant bugs by overriding it)."""
        return keep_from(tops, floor, current)

    def _restore(self, snapshot: Snapshot) -> None:
        """The application takes the snapshot's state; the checkers are told."""
        state = read_snapshot(snapshot.blob, self.config.max_sessions, self.config.session_window)
        self.app.restore(state.app)
        if self.app.index != state.index and self.invariants is not None:
            self.invariants.report(
                self.network.now,
                f"node {self.node_id}: snapshot at index {state.index} holds an application "
                f"state of index {self.app.index}",
            )
        self.checkers.on_restore(
            self.node_id,
            self.incarnation,
            state.index,
            self.app.digest,
            dict(state.sessions.last),
            self.network.now,
        )
        if self.app.coord is not None:
            self.checkers.on_coord_restore(
                self.node_id, self.incarnation, state.index, self.app.coord.digest(),
                self.network.now,
            )

    def apply(self, ready: Ready) -> None:
        """Applier: what the turn chose, opened, delivered and ended, to the checkers and
        the clients waiting for it."""
        events = self.events
        if ready.installed is not None:
            self.installs += 1
            self._log(f"installed a snapshot at slot {ready.installed.slot}")
            self._restore(ready.installed)
            self.chosen_upto = ready.installed.slot
            if events is not None:
                events.emit(
                    self.network.now,
                    "install",
                    node=self.node_id,
                    slot=ready.installed.slot,
                    index=self.app.index,
                )
        if ready.chosen:
            self.chosen_upto = ready.chosen[-1][0]
            self.observe_chosen(ready.chosen)
            if events is not None:
                for first, last in ranges([slot for slot, _ in ready.chosen]):
                    events.emit(self.network.now, "chosen", node=self.node_id, slot=first, to=last)
        if ready.opened:
            self.sessions_opened(ready.opened)
        if ready.deliveries:
            self.deliver(ready.deliveries)
            if events is not None:
                for client, seq, index, count in ready.runs:
                    events.emit(
                        self.network.now,
                        "deliver",
                        node=self.node_id,
                        index=index,
                        count=count,
                        client=client,
                        seq=seq,
                    )
        if ready.ended:
            self.sessions_ended(ready.ended)
        if ready.configs or ready.governed:
            self.observe_membership(ready)
        if self.invariants is not None:
            slots = {slot for slot, _ in ready.chosen}
            slots.update(r.slot for r in ready.records if isinstance(r, AcceptRecord))
            durable = self.disk.snapshot
            self.invariants.flushed(
                self.node_id,
                self.incarnation,
                self.replica,
                slots,
                self.network.now,
                max(durable.slot if durable is not None else 0, self._installing),
            )

    def send(self, messages: Sequence[tuple[int, Message]]) -> None:
        network = self.network
        src = self.node_id
        invariants = self.invariants
        for dst, msg in messages:
            network.send(src, dst, msg)
            if invariants is not None:
                invariants.sent(src, ((dst, msg),))
            self.crash_point()

    def observe_membership(self, ready: Ready) -> None:
        checkers, node, now = self.checkers, self.node_id, self.network.now
        for chosen_slot, start, members in ready.configs:
            checkers.on_config(node, chosen_slot, start, members, now)
            self._log(f"membership {members} chosen at slot {chosen_slot}, from slot {start}")
            if self.events is not None:
                self.events.emit(
                    now,
                    "members",
                    node=node,
                    epoch=members.epoch,
                    voters=list(members.voters),
                    learners=list(members.learners),
                    slot=start,
                )
        for slot, epoch in ready.governed:
            checkers.on_governed(node, slot, epoch, now)

    def observe_chosen(self, chosen: Sequence[tuple[int, Value]]) -> None:
        on_chosen = self.checkers.on_chosen
        node, incarnation, now = self.node_id, self.incarnation, self.network.now
        for slot, value in chosen:
            on_chosen(node, incarnation, slot, value, now)

    def sessions_opened(self, opened: Sequence[tuple[str, bytes, str]]) -> None:
        node, incarnation, now = self.node_id, self.incarnation, self.network.now
        for name, nonce, key in opened:
            self.checkers.on_session_opened(node, incarnation, name, nonce, key, now)
            self._log(f"session {key} opened")
            client = self.pending_opens.pop((name, nonce), None)
            if client is not None:
                self.network.send(node, client, OpenReply(node, nonce, key))

    def sessions_ended(self, ended: Sequence[tuple[str, int, str]]) -> None:
        node, incarnation, now = self.node_id, self.incarnation, self.network.now
        for key, last, reason in ended:
            self.checkers.on_session_ended(node, incarnation, key, last, reason, now)
            self._log(f"session {key} {reason} at seq {last}")
            waiting = {c for (k, _), c in self.pending.items() if k == key}
            for client in waiting:
                self.network.send(node, client, SessionEnded(node, key, last))
            self.pending = {k: c for k, c in self.pending.items() if k[0] != key}

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Hand deliveries to the checkers and answer the clients waiting for them."""
        on_delivery = self.checkers.on_delivery
        node, incarnation, now = self.node_id, self.incarnation, self.network.now
        states = self.app.apply(deliveries)
        if self.checkers.wants_state:
            on_state = self.checkers.on_state
            for index, digest in states:
                on_state(node, incarnation, index, digest, now)
        if self.app.coord is not None and self.checkers.wants_coord:
            on_coord = self.checkers.on_coord
            for delivery, result, digest in self.app.coord_results:
                on_coord(node, incarnation, delivery, result, digest, now)
        pending = self.pending
        answers: dict[tuple[Address, str], list[tuple[int, int]]] = {}
        for delivery in deliveries:
            on_delivery(node, incarnation, delivery, now)
            command = delivery.command
            if self.trace is not None:
                self._log(
                    f"deliver #{delivery.index} {command.client}#{command.seq} "
                    f"(slot {delivery.slot})"
                )
            client = pending.pop((command.client, command.seq), None)
            if client is not None:
                answers.setdefault((client, command.client), []).append(
                    (command.seq, delivery.index)
                )
        for (client, key), acks in answers.items():
            self.reply(client, key, acks)

    def reply(self, client: Address, key: str, acks: Sequence[tuple[int, int]]) -> None:
        leader = self.replica.leader if self.replica is not None else None
        self.network.send(self.node_id, client, ClientReply(self.node_id, key, tuple(acks), leader))

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.network.now} node {self.node_id} {text}")

    # ------------------------------------------------------------------ events

    def _observe_role(self, replica: ReplicaLike) -> None:
        """A ``role`` event if the replica's role, promised ballot or leader changed
        since the last one (looked at the end of each turn, like the text trace's
        "believes leader is")."""
        assert self.events is not None
        role = getattr(replica, "role", None)
        name = str(getattr(role, "value", role or "unknown"))
        state = (name, ballot_list(getattr(replica, "ballot", None)), replica.leader)
        if state != self._role:
            self._role = state
            self.events.emit(
                self.network.now,
                "role",
                node=self.node_id,
                role=state[0],
                ballot=state[1],
                leader=state[2],
            )

    def _accept_events(self, records: Sequence[AcceptRecord]) -> None:
        """``accept`` events for synced AcceptRecords: a range per run of consecutive
        slots accepted at one ballot."""
        assert self.events is not None
        now, node = self.network.now, self.node_id
        run: tuple[int, int, list[int]] | None = None
        for record in records:
            ballot = [record.ballot.round, record.ballot.node]
            if run is not None and record.slot == run[1] + 1 and ballot == run[2]:
                run = (run[0], record.slot, ballot)
                continue
            if run is not None:
                self._accept_event(now, node, run)
            run = (record.slot, record.slot, ballot)
        if run is not None:
            self._accept_event(now, node, run)

    def _accept_event(self, now: int, node: int, run: tuple[int, int, list[int]]) -> None:
        assert self.events is not None
        first, last, ballot = run
        if first == last:
            self.events.emit(now, "accept", node=node, slot=first, ballot=ballot)
        else:
            self.events.emit(now, "accept", node=node, slot=first, ballot=ballot, to=last)
