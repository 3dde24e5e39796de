"""A Multi-Paxos replica: acceptor, proposer (distinguished leader) and learner over a log of slots.

The replica is a pure state machine (etcd-raft's ``RawNode``, h11's protocol
object): :meth:`Replica.step`, :meth:`Replica.tick` and :meth:`Replica.propose`
each return a :class:`~paxos.multi.ready.Ready` saying what to persist, then
what to send, then what to deliver. It never touches a disk, socket or clock.

How the protocol runs:

* **Leader election.** A follower that hears no leader for a randomised
  election timeout first asks the others whether they would promise a higher
  ballot (:class:`PreVote`, nothing persisted). Only with a majority of yes
  does it raise its ballot, persist its own promise and run phase 1
  (:class:`Prepare`) once, for every slot from its first unchosen one.
* **Stickiness.** A replica that heard from a live leader within the minimum
  election timeout refuses pre-votes and ignores Prepares from anybody else,
  so a node that comes back from a partition cannot depose a healthy leader.
  A leader that stops hearing from a majority steps down (check-quorum), so
  stickiness cannot keep a dead or cut-off leader in place.
* **Taking over.** With a majority of promises, the new leader adopts, for
  every open slot, the value accepted at the highest ballot (it may be chosen
  already), fills real gaps with no-ops and proposes them all at its ballot.
  Slots up to the highest chosen prefix a promiser reports are learnt by
  catch-up; a candidate more than ``slots_ahead`` behind it catches up first.
* **Phase 2.** The leader batches queued commands into slots (at most
  ``batch_max`` per slot, at most ``window`` slots in flight) and counts
  :class:`Accepted` replies; a majority makes a slot chosen.
* **Learning.** Chosen prefixes travel in Accept/Commit/Heartbeat. A replica
  that accepted a slot at the announcing leader's ballot holds its chosen
  value; for any other slot it asks peers (:class:`CatchupRequest`).
* **Sessions.** Each command carries ``(session key, seq)``. A client opens its
  session through the log (:mod:`paxos.multi.sessions`); a command is delivered
  iff its session is live and it is the session's next sequence number, so
  retries are never delivered twice and each client's commands are delivered
  in the order it sent them. The leader expires idle sessions through the log.
* **Bounded sizes.** Every message a replica builds is bounded in bytes: slots
  hold at most ``batch_max_bytes`` of commands (or one command), catch-up
  replies ``catchup_max_bytes``, and a Promise too large for one frame comes
  in parts. An acceptor accepts nothing beyond ``slots_ahead`` of its chosen
  prefix, and has a prefix that close on disk before it accepts or promises,
  so what it reports stays in that range. Intake refuses payloads above
  ``max_payload_bytes`` and commands that are already queued or proposed
  here, so a client resending a large payload costs one copy, not one per
  resend.
"""

from __future__ import annotations

import enum
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import accumulate
from operator import itemgetter

from paxos.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Commit,
    Forward,
    Heartbeat,
    HeartbeatReply,
    Message,
    Nack,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    PromiseEntry,
    SnapshotChunk,
    SnapshotRequest,
    TimeoutNow,
)
from paxos.multi.config import COMMAND_OVERHEAD, ReplicaConfig
from paxos.multi.membership import (
    Change,
    Membership,
    Op,
    change_command,
    is_change,
    read_change,
)
from paxos.multi.ready import Ready
from paxos.multi.sessions import Sessions, expire_command
from paxos.multi.snapshot import (
    Snapshot,
    SnapshotFormatError,
    SnapshotState,
    build_snapshot,
    read_snapshot,
    verify,
)
from paxos.records import AcceptRecord, CommitRecord, PromiseRecord, Record
from paxos.single.rules import may_accept, may_promise, pick_value
from paxos.types import (
    MAX_ROUND,
    MAX_ROUND_STEP,
    NOOP,
    ZERO_BALLOT,
    Ballot,
    Command,
    Delivery,
    Value,
)


class StepFailed(Exception):
    """step, tick or propose raised (a bug: no input should make one). ``ready`` is the
    part of the call's Ready built before it did, its messages removed: its records
    match the state changes already made in memory, so the driver persists them (and
    delivers its deliveries), and sends nothing; losing messages is always safe."""

    def __init__(self, ready: Ready) -> None:
        super().__init__("replica handler failed")
        self.ready = ready


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


class _Proposal:
    """A slot the leader proposed and has not yet seen chosen."""

    __slots__ = ("acks", "members", "sent_tick", "value", "wait")

    def __init__(
        self, value: Value, acks: set[int], sent_tick: int, wait: int, members: Membership
    ) -> None:
        self.value = value
        #: Votes counted: only voters of the membership governing the slot.
        self.acks = acks
        #: That membership (its voters choose; its voters and learners are sent to).
        self.members = members
        self.sent_tick = sent_tick
        #: Ticks until the next retransmission: doubles each time (up to a bound), so a
        #: slow follower gets a few copies of a large value, not one every few ticks.
        self.wait = wait


class _Install:
    """A snapshot arriving from a peer, in order, one chunk at a time."""

    __slots__ = ("crc", "data", "last_tick", "size", "slot", "src")

    def __init__(self, slot: int, size: int, crc: int, src: int, now: int) -> None:
        self.slot = slot
        self.size = size
        self.crc = crc
        self.src = src
        self.data = bytearray()
        self.last_tick = now


#: A snapshot being sent to a peer is kept (and the log above it) through at most this
#: many newer snapshots (see Replica.compacted).
_MAX_HELD = 8
#: Retransmissions back off up to this many times ``retransmit_ticks``.
_MAX_BACKOFF = 8
#: The default of ReplicaConfig.slots_ahead: an acceptor accepts no slot further than
#: this beyond its chosen prefix.
MAX_SLOTS_AHEAD = 2**14


class Replica:
    """One member of a Multi-Paxos cluster. See the module docstring for the protocol."""

    def __init__(
        self,
        node_id: int,
        config: ReplicaConfig,
        rng: random.Random,
        records: Iterable[Record] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        if node_id <= 0:
            raise ValueError("node ids must be positive integers")
        # (A node id outside the starting membership is a node that joins later: it
        # votes in nothing until the log makes it a voter.)
        self.node_id = node_id
        self.config = config
        self.rng = rng

        # --- snapshot: the durable state of every slot <= its slot, if any. Slots at or
        # below the floor are compacted: no chosen value or accepted record of theirs is
        # kept; a peer that needs one gets the snapshot instead.
        restored: SnapshotState | None = None
        if snapshot is not None:
            restored = read_snapshot(snapshot.blob, config.max_sessions, config.session_window)
        base = restored.slot if restored is not None else 0
        self.snapshot: Snapshot | None = snapshot
        self.floor = base
        # --- membership: (first slot governed, membership), ascending; the first entry
        # governs commit + 1 (see paxos.multi.membership).
        self.configs: list[tuple[int, Membership]] = (
            restored.configs
            if restored is not None and restored.configs is not None
            else [(1, Membership.genesis(config.nodes, config.phase2_quorum))]
        )
        self.current: Membership = self.configs[0][1]
        #: Every member (voter or learner) of a membership governing a slot after our
        #: chosen prefix, but us: the peers we talk to.
        self.peers: tuple[int, ...] = ()
        #: The epoch of a change this leader proposed and has not seen applied.
        self.change_pending: int | None = None
        #: Leader: the chosen prefix each follower last reported (learner promotion,
        #: leadership transfer).
        self.match: dict[int, int] = {}
        #: Leader: handing over to this voter (no new slots meanwhile), until a tick.
        self.transfer_to: int | None = None
        self.transfer_until = 0
        self.handover_sent_tick: int | None = None
        #: Follower: the voter our leader handed over to (its Prepare is promised
        #: although our leader is live), while nothing was chosen after the handover.
        self.handed_to: int | None = None
        self.handed_commit = 0
        #: A snapshot being received from a peer (see on_snapshot_chunk).
        self.installing: _Install | None = None
        # Peers we are sending self.snapshot to -> tick of the last (not final) chunk sent.
        self._serving: dict[int, int] = {}
        # Snapshots taken since we last switched the one we serve (see compacted).
        self._held = 0

        # --- acceptor state: rebuilt from durable records, never from memory alone.
        self.ballot: Ballot = ZERO_BALLOT  # highest ballot promised
        self.accepted: dict[int, tuple[Ballot, Value]] = {}
        durable_commit = base
        for record in records:
            if isinstance(record, PromiseRecord):
                self.ballot = max(self.ballot, record.ballot)
            elif isinstance(record, AcceptRecord):
                # Accepting at b implies having promised b.
                self.ballot = max(self.ballot, record.ballot)
                if record.slot > base:  # below: covered by the snapshot
                    self.accepted[record.slot] = (record.ballot, record.value)
            else:
                durable_commit = max(durable_commit, record.commit)
        # The highest round seen anywhere. A new ballot goes above it, and since
        # our own promise of every ballot we used is durable, a restarted node
        # never reuses one of its ballots.
        self.max_round = self.ballot.round

        # --- learner state. The chosen prefix named by the last CommitRecord is
        # replayed from our own accepted values (delivered again on the first
        # tick); anything after it is re-learned from peers.
        self.chosen: dict[int, Value] = {}
        for slot in range(base + 1, durable_commit + 1):
            entry = self.accepted.get(slot)
            if entry is None:
                durable_commit = slot - 1  # cannot happen with an intact log; be safe
                break
            self.chosen[slot] = entry[1]
        # Every slot <= commit is chosen (and in self.chosen, or at or below the floor).
        self.commit = base
        self.known_commit = durable_commit  # highest chosen prefix anybody announced
        self.recorded_commit = durable_commit
        if restored is not None:
            self.delivered_index = restored.index
            self.sessions = restored.sessions
        else:
            self.delivered_index = 0
            self.sessions = Sessions(config.max_sessions, config.session_window)

        # --- failure detector and roles.
        self.now = 0
        self.role = Role.FOLLOWER
        self.leader: int | None = None
        self.election_elapsed = 0
        self.election_timeout = self._random_election_timeout()
        self.prevote_ballot: Ballot | None = None
        self.prevote_grants: set[int] = set()

        # --- proposer state (meaningful while CANDIDATE or LEADER).
        self.my_ballot: Ballot = ZERO_BALLOT
        self.prepare_from = 1
        self.prepare_sent_tick = 0
        # Phase 1, per acceptor: what it reported so far, its chosen prefix, and (while
        # its report comes in parts) the slot its next part starts at. An acceptor
        # counts towards the quorum once its report is complete (in ``promised_by``).
        self.promise_entries: dict[int, list[PromiseEntry]] = {}
        self.promise_commit: dict[int, int] = {}
        self.promise_next: dict[int, int] = {}
        self.promised_by: set[int] = set()
        #: Acceptor -> the first slot its complete report covers (it promised our
        #: ballot for every slot from there). A slot may be proposed only once a
        #: phase-1 quorum of the voters governing it is in here at or below it.
        self.promised_from: dict[int, int] = {}
        #: Acceptors asked to promise our ballot from a slot after we lead (a new
        #: membership's voters) -> that slot.
        self.prepare_start: dict[int, int] = {}
        #: What the promisers reported for slots not proposed yet: slot -> (ballot,
        #: value) pairs; the leader adopts from them slot by slot (see _fill_window).
        self.reports: dict[int, list[tuple[Ballot, Value]]] = {}
        self.reported_upto = 0
        self.next_slot = 1
        self.inflight: dict[int, _Proposal] = {}
        self.queue: deque[Command] = deque()
        self.queue_bytes = 0
        # Intake dedup: session key -> highest seq queued or proposed here (contiguously)
        # since this replica last changed role. A resend of a command at or below it is
        # already on its way; it is not queued (or proposed, or sent) again.
        self.queued_upto: dict[str, int] = {}
        self.heartbeat_elapsed = 0
        self.heard_from: set[int] = set()
        self.quorum_elapsed = 0
        self.quorum_ok = False

        # --- session expiry (decided by the leader, applied through the log).
        #: Live session key -> tick of its last activity seen here (deliveries, intake).
        self.session_seen: dict[str, int] = {}
        #: Sessions whose expiry this leader proposed and has not seen applied.
        self.expiring: set[str] = set()
        self.lead_start = 0

        # --- catch-up.
        self.catchup_sent_tick: int | None = None
        self.catchup_wait = config.retransmit_ticks

        self._out = Ready()
        # True while this call's Ready carries our own new ballot's PromiseRecord:
        # Accepts at that ballot must then wait for it (no eager send).
        self._ballot_in_flight = False
        self.extend_sent_tick = 0
        self._refresh_members()

    # ------------------------------------------------------------------ public API

    def step(self, msg: Message) -> Ready:
        """Handle one message from a peer; returns what to persist, send and deliver.

        Raises :class:`StepFailed` (with what can be salvaged) if a handler fails.
        """
        self._out = out = Ready()
        self._ballot_in_flight = False
        src = msg.src
        if src == self.node_id or src <= 0:
            return out  # (the runtime authenticates members; a joining one may be unknown here)
        try:
            self._dispatch(msg)
        except Exception as exc:
            raise self._failed(out) from exc
        return out

    def _failed(self, out: Ready) -> StepFailed:
        """What a call that raised can still hand back: its records (they match what it
        already changed in memory, so they must be persisted), its deliveries; none of
        its messages (losing messages is always safe)."""
        out.eager.clear()
        out.messages.clear()
        return StepFailed(out)

    def _dispatch(self, msg: Message) -> None:
        """Check the ballot once on the way in (as etcd-raft checks the term once in
        Step), then hand the message to the handler named after it."""
        match msg:
            case Accept() | Prepare() | Commit() | Heartbeat():
                self._see_round(msg.ballot)
                if not self._ballot_ok(msg):
                    # A ballot we promised to leave behind (or one no election makes):
                    # tell its leader or candidate how high it must go.
                    self._send(msg.src, Nack(self.node_id, msg.ballot, self.ballot))
                    return
        match msg:
            case Accept():
                self.on_accept(msg)
            case Accepted():
                self.on_accepted(msg)
            case Heartbeat():
                self.on_heartbeat(msg)
            case HeartbeatReply():
                self.on_heartbeat_reply(msg)
            case Commit():
                self.on_commit(msg)
            case Forward():
                self.on_forward(msg)
            case CatchupRequest():
                self.on_catchup_request(msg)
            case CatchupReply():
                self.on_catchup_reply(msg)
            case Prepare():
                self.on_prepare(msg)
            case Promise():
                self.on_promise(msg)
            case Nack():
                self.on_nack(msg)
            case PreVote():
                self.on_pre_vote(msg)
            case PreVoteReply():
                self.on_pre_vote_reply(msg)
            case SnapshotChunk():
                self.on_snapshot_chunk(msg)
            case SnapshotRequest():
                self.on_snapshot_request(msg)
            case TimeoutNow():
                self.on_timeout_now(msg)

    def _ballot_ok(self, msg: Accept | Prepare | Commit | Heartbeat) -> bool:
        """May this message's ballot be acted on, given our promise?"""
        if isinstance(msg, Prepare):
            return may_promise(self.ballot, msg.ballot)
        if isinstance(msg, Accept):
            return may_accept(self.ballot, msg.ballot)
        # A commit notice of a leader we promised to leave behind is still true (a
        # leader announces only what it saw chosen), but that leader must learn it is
        # deposed.
        return msg.ballot >= self.ballot

    def tick(self) -> Ready:
        """Advance logical time by one tick: timeouts, heartbeats, retransmissions."""
        self._out = out = Ready()
        self._ballot_in_flight = False
        self.now += 1
        try:
            if self.role is Role.LEADER:
                self._tick_leader()
            else:
                self._tick_follower()
            self._tick_catchup()
            if self.installing is not None:
                self._tick_install()
            if self.role is Role.CANDIDATE:
                self._lead_if_ready()  # a candidate that had to catch up first
        except Exception as exc:
            raise self._failed(out) from exc
        if self.commit > self.recorded_commit and self.now % self.config.commit_record_ticks == 0:
            self.recorded_commit = self.commit
            out.records.append(CommitRecord(self.commit))
        return out

    def propose(self, commands: Sequence[Command]) -> Ready:
        """Submit client commands here. A leader batches them into slots; a follower
        forwards them to the leader it knows, or queues them until it knows one.

        Commands beyond ``queue_max`` are dropped: they are not acknowledged, and
        the client retries them. Nothing is delivered twice either way.
        """
        self._out = out = Ready()
        self._ballot_in_flight = False
        try:
            self._enqueue(commands)
        except Exception as exc:
            raise self._failed(out) from exc
        return out

    def reconfigure(
        self, op: Op, node: int, address: str = "", key: str = ""
    ) -> tuple[Ready, str | None]:
        """Propose a membership change (see paxos.multi.membership); only a leader does.

        Returns the Ready and None once the change is queued for the log, or a reason
        it is refused now: not the leader, a change still in progress, a change that
        would not apply, a learner not caught up yet (try again). It is made against the
        latest membership, so it applies only if no other change lands first.
        """
        self._out = out = Ready()
        self._ballot_in_flight = False
        if self.role is not Role.LEADER:
            return out, "not the leader"
        if self.change_pending is not None:
            return out, "a membership change is in progress"
        latest = self.latest
        change = Change(latest.epoch, op, node, address, key)
        if latest.apply(change) is None:
            return out, f"{op.name.lower()} {node} does not apply to membership {latest}"
        if op is Op.PROMOTE and (
            node not in self.match or self.match[node] < self.commit - self.config.promote_lag
        ):
            # Liveness: a voter far behind (or never heard from: not even started) would
            # make quorums wait for it; promoting a dead learner in a cluster of three
            # makes it one of four, where one more failure stops the cluster.
            return out, f"learner {node} is not caught up yet"
        self.change_pending = latest.epoch
        try:
            self._enqueue_system([change_command(change)])
        except Exception as exc:
            raise self._failed(out) from exc
        return out, None

    def transfer_leadership(self, target: int | None = None) -> tuple[Ready, str | None]:
        """Hand leadership over to the voter ``target`` (default: the one furthest along):
        stop proposing, wait until every open slot is chosen and ``target`` knows the
        chosen prefix, then tell it to campaign at once (:class:`TimeoutNow`). If that
        does not happen within an election timeout, go on leading. Returns the Ready and
        None, or why not."""
        self._out = out = Ready()
        self._ballot_in_flight = False
        if self.role is not Role.LEADER:
            return out, "not the leader"
        if target is None:
            target = self._successor()
            if target is None:
                return out, "no other voter"
        if target == self.node_id:
            return out, "already the leader"
        if target not in self.current.voters or target not in self.latest.voters:
            return out, f"node {target} is not a voter"
        try:
            self._start_transfer(target)
        except Exception as exc:
            raise self._failed(out) from exc
        return out, None

    def outcome(self, client: str, seq: int) -> int | None:
        """Where ``(client, seq)`` stands here: its 1-based index in the total order,
        0 if delivered but older than the session window, None if not delivered."""
        return self.sessions.outcome(client, seq)

    def session_status(self, key: str) -> tuple[str, int | None]:
        """``("live", last seq)``, ``("ended", last seq or None)`` or ``("unknown", None)``:
        see :meth:`paxos.multi.sessions.Sessions.status`."""
        return self.sessions.status(key)

    def session_key(self, name: str, nonce: bytes) -> str | None:
        """The key of the live session that ``open(name, nonce)`` opened, if applied here."""
        return self.sessions.key_for(name, nonce)

    def session_count(self) -> int:
        """Live client sessions in the replicated table."""
        return len(self.sessions)

    def backlog(self) -> tuple[int, int]:
        """Commands queued here and their bytes (for the runtime's backpressure)."""
        return len(self.queue), self.queue_bytes

    def take_snapshot(self, app: bytes = b"") -> Snapshot:
        """The snapshot of everything applied so far: every slot <= ``commit``, the
        session table, and ``app``, the application's state after the same deliveries.

        Call it between calls (at a delivery boundary: every chosen slot up to
        ``commit`` has been delivered, and the driver applied those deliveries). It
        changes nothing; once the snapshot is durable, pass it to :meth:`compacted`.
        """
        return build_snapshot(
            self.commit, self.delivered_index, self.sessions, app, list(self.configs)
        )

    def compacted(self, snapshot: Snapshot) -> Ready:
        """``snapshot`` (from :meth:`take_snapshot` or an install) is durable: serve it to
        peers behind our floor, and drop what it covers from memory.

        The floor moves to ``compact_keep_slots`` below the snapshot (a follower a
        little behind still catches up from the log), or stays at the snapshot we are
        still sending to a peer (see below). The Ready re-records our
        promise, so that no record older than this call is needed for it: with the
        snapshot, the driver may then delete every log segment written before this
        Ready whose accepted slots are all at or below :attr:`floor`.
        """
        self._out = out = Ready()
        if snapshot.slot > self.commit:
            raise ValueError(f"snapshot at slot {snapshot.slot} is beyond commit {self.commit}")
        transferring = any(
            self.now - tick < self.config.election_max_ticks for tick in self._serving.values()
        )
        # Bounded: a transfer holds the floor for at most _MAX_HELD snapshots, so that a
        # learner that never finishes cannot make us keep the log (and memory) forever.
        if self.snapshot is None or (
            snapshot.slot >= self.snapshot.slot and (not transferring or self._held >= _MAX_HELD)
        ):
            self.snapshot = snapshot
            self._serving.clear()
            self._held = 0
        else:
            self._held += 1
        # Safety: the floor never passes a durable snapshot (what is below it exists
        # only there) and never goes down (a slot once compacted has no record left).
        floor = min(snapshot.slot, snapshot.slot - self.config.compact_keep_slots)
        if self.snapshot is not snapshot:
            # Liveness: a peer is installing the snapshot we serve. We keep serving it,
            # and keep the log above it for that peer to catch up from afterwards; were
            # we to switch, a transfer slower than our snapshot interval would restart
            # forever (review finding). The next snapshot after the transfer moves on.
            floor = min(floor, self.snapshot.slot)
        self._compact_to(max(self.floor, floor))
        if snapshot.slot > self.recorded_commit:
            self.recorded_commit = snapshot.slot  # durable: the snapshot is on disk
        # Re-recorded, so that older log segments may go: the promise (a vow), and the
        # chosen prefix on disk, which bounds what we may accept (_accept_durably).
        if self.ballot != ZERO_BALLOT:
            out.records.append(PromiseRecord(self.ballot))
        if self.recorded_commit > snapshot.slot:
            out.records.append(CommitRecord(self.recorded_commit))
        return out

    def _compact_to(self, floor: int) -> None:
        if floor <= self.floor:
            return
        self.floor = floor
        for table in (self.chosen, self.accepted):
            for slot in [slot for slot in table if slot <= floor]:
                del table[slot]

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def leader_ok(self) -> bool:
        """Leading with a majority heard from within the last check-quorum period, or
        following a leader heard from within the minimum election timeout."""
        if self.role is Role.LEADER:
            return self.quorum_ok
        return self._has_live_leader()

    # ------------------------------------------------------------------ membership

    def members_at(self, slot: int) -> Membership:
        """The membership governing ``slot``: known for every slot up to commit + alpha
        (the changes that may govern it are all chosen at or below commit)."""
        configs = self.configs
        for start, members in reversed(configs):
            if start <= slot:
                return members
        return configs[0][1]

    @property
    def latest(self) -> Membership:
        """The membership after every change applied here (it may govern later slots
        only)."""
        return self.configs[-1][1]

    def _effective_slot(self, slot: int) -> int:
        """The first slot a change chosen at ``slot`` governs: the alpha rule. A leader
        never has a slot open more than alpha beyond its chosen prefix, so none of its
        open slots is governed by a change it has not seen chosen."""
        return slot + self.config.alpha

    def _refresh_members(self) -> None:
        configs = self.configs
        first = self.commit + 1
        while len(configs) > 1 and configs[1][0] <= first:
            del configs[0]  # it governs nothing after the chosen prefix
        self.current = configs[0][1]
        peers: set[int] = set()
        for _, members in configs:
            peers.update(members.voters)
            peers.update(members.learners)
        peers.discard(self.node_id)
        self.peers = tuple(sorted(peers))

    def _apply_change(self, slot: int, command: Command) -> None:
        """Apply a membership change chosen at ``slot`` (identically everywhere)."""
        change = read_change(command)
        if change is not None:
            new = self.latest.apply(change)
            if new is not None:
                start = self._effective_slot(slot)
                self.configs.append((start, new))
                self._out.configs.append((slot, start, new))
                self._refresh_members()
        pending = self.change_pending
        if pending is not None and (
            self.latest.epoch > pending or (change is not None and change.epoch == pending)
        ):
            self.change_pending = None

    def is_voter(self) -> bool:
        """Does this node vote in the membership governing the next slot?"""
        return self.node_id in self.current.voters

    def _successor(self) -> int | None:
        """The voter (of the memberships in effect and latest) furthest along, to hand
        over to; None if there is no other."""
        latest = self.latest.voters
        voters = [v for v in self.current.voters if v != self.node_id and v in latest]
        if not voters:
            return None
        return max(voters, key=lambda v: (self.match.get(v, -1), -v))

    def _start_transfer(self, target: int) -> None:
        self.transfer_to = target
        self.transfer_until = self.now + self.config.election_max_ticks
        self.handover_sent_tick = None
        self._send(target, Heartbeat(self.node_id, self.my_ballot, self.commit))
        self._hand_over()

    def _hand_over(self) -> None:
        """Tell the transfer's target to campaign once every slot we opened is chosen and
        it knows the chosen prefix (so that it can lead at once)."""
        target = self.transfer_to
        if (
            target is None
            or self.inflight
            or self.next_slot - 1 > self.commit
            or self.match.get(target, -1) < self.commit
        ):
            return
        if self.handover_sent_tick is not None and (
            self.now - self.handover_sent_tick < self.config.retransmit_ticks
        ):
            return
        self.handover_sent_tick = self.now
        # To everyone: the others then promise the target although we are live.
        self._broadcast(TimeoutNow(self.node_id, self.my_ballot, target, self.commit))

    def _covered(self, members: Membership, slot: int) -> bool:
        """Has a phase-1 quorum of ``members``' voters promised our ballot for ``slot``
        (and reported what they accepted there)?"""
        start = self.promised_from
        count = sum(1 for voter in members.voters if start.get(voter, slot + 1) <= slot)
        return count >= members.phase1_quorum

    def _prepare_members(self, members: Membership, slot: int) -> None:
        """Leading, we reached a slot governed by voters not enough of whom promised our
        ballot (a new membership): ask them, from that slot on, before proposing there."""
        if self.now - self.extend_sent_tick < self.config.retransmit_ticks and all(
            voter in self.prepare_start or voter in self.promised_from
            for voter in members.voters
        ):
            return
        self.extend_sent_tick = self.now
        for voter in members.voters:
            if voter == self.node_id or voter in self.promised_from:
                continue
            first = self.prepare_start.setdefault(voter, slot)
            first = self.promise_next.get(voter, first)
            self._send(voter, Prepare(self.node_id, self.my_ballot, first))

    # ------------------------------------------------------------------ acceptor

    def on_prepare(self, msg: Prepare) -> None:
        # (step checked that we may promise msg.ballot.)
        # Stickiness: while a live leader is heard from, nobody else gets a
        # promise. Refusing is always safe; it only costs the candidate time.
        if (
            self._has_live_leader()
            and msg.src != self.leader
            and msg.src != self.transfer_to
            and not (msg.src == self.handed_to and self.known_commit <= self.handed_commit)
        ):
            return
        if msg.ballot > self.ballot:
            # The promise is a vow: it is written before the Promise can leave.
            self.ballot = msg.ballot
            self._out.records.append(PromiseRecord(msg.ballot))
            if self.role is not Role.FOLLOWER or self.leader is not None:
                self._become_follower(None)
            self.election_elapsed = 0  # give the candidate a full timeout
        # Slots up to our *durable* chosen prefix are settled: the candidate learns them
        # by catch-up, so the Promise stays small. It must be durable (a crash would
        # otherwise erase it while the candidate relies on it, and nobody might be left
        # to serve those slots), so the prefix we know is recorded now, in this Ready,
        # before the Promise leaves.
        self._record_commit()
        settled = self.recorded_commit
        # A report larger than a frame goes in parts: the candidate asks for the next
        # one with a Prepare of this same ballot. Safe: the promise above covers every
        # slot already, so nothing below our ballot can be accepted between the parts.
        entries, next_slot = self._accepted_chunk(
            max(msg.from_slot, settled + 1), self.config.promise_max_bytes
        )
        self._send(
            msg.src,
            Promise(self.node_id, msg.ballot, msg.from_slot, entries, settled, next_slot),
        )

    def on_accept(self, msg: Accept) -> None:
        # (step checked that we may accept at msg.ballot.)
        self._hear_leader(msg.src, msg.ballot)
        if msg.slot > self.commit + self.config.slots_ahead:
            # The leader's own announcement of its chosen prefix may move the bound (a
            # follower's prefix trails the leader's): learn it first.
            self._learn_prefix(msg.src, msg.ballot, msg.commit)
        if msg.slot > self.commit + self.config.slots_ahead:
            # A leader keeps at most a window of slots open beyond what is chosen; a slot
            # this far ahead of our own chosen prefix is forged or stale. Accepting it
            # would make every later leader fill the gap with no-ops, one slot at a time.
            # Silence only slows a leader (we catch up, then accept its retransmission).
            return
        if msg.slot <= self.floor:
            # Compacted: chosen long ago, and its value is in our snapshot, not in our log.
            # Accepting would put a record below the floor that no replay may read (and
            # the slot's value cannot change anyway). A stale leader's retransmission:
            # stay silent.
            self._learn_prefix(msg.src, msg.ballot, msg.commit)
            return
        known = self.chosen.get(msg.slot)
        if known is not None and known != msg.value:
            # A stale leader's proposal for a slot we know was chosen otherwise (it
            # cannot win: the chosen ballot is above it). Accepting it would break
            # the invariant CommitRecord relies on: our accepted value of a chosen
            # slot is the chosen value. Stay silent; its retransmissions die out.
            return
        previous = self.accepted.get(msg.slot)
        if previous is None or previous[0] != msg.ballot or previous[1] != msg.value:
            self.ballot = msg.ballot
            # Written before the Accepted leaves: a leader counts this vote
            # towards a majority, so it must survive our crash.
            self._accept_durably(msg.slot, msg.ballot, msg.value)
        self._send(msg.src, Accepted(self.node_id, msg.ballot, msg.slot))
        self._learn_prefix(msg.src, msg.ballot, msg.commit)

    def on_commit(self, msg: Commit | Heartbeat) -> None:
        # (step checked that msg.ballot is not below our promise.)
        self._hear_leader(msg.src, msg.ballot)
        self._learn_prefix(msg.src, msg.ballot, msg.commit)

    def on_heartbeat(self, msg: Heartbeat) -> None:
        self.on_commit(msg)
        self._send(msg.src, HeartbeatReply(self.node_id, msg.ballot, self.commit))

    def on_timeout_now(self, msg: TimeoutNow) -> None:
        # Only from the leader we follow, at the ballot we promised (a stale one, of a
        # leader since deposed, must not make anybody campaign), and not older than its
        # latest commit notice: a late one of a transfer the leader abandoned (it then
        # led on at the same ballot) must not depose it (review finding).
        if msg.src != self.leader or msg.ballot != self.ballot or self.role is not Role.FOLLOWER:
            return
        if msg.commit < self.known_commit:
            return
        self.handed_to = msg.target
        self.handed_commit = msg.commit
        if msg.target == self.node_id and self.is_voter():
            self._become_candidate()  # no pre-vote: the leader itself asked

    def on_pre_vote(self, msg: PreVote) -> None:
        # Grant only if we would really promise: no live leader, nothing higher promised.
        granted = not self._has_live_leader()
        self._send(msg.src, PreVoteReply(self.node_id, msg.ballot, granted))
        if self.role is Role.LEADER:
            # Tell it how far the log is chosen: a node removed from the membership that
            # missed its removal learns it by catching up, and stops campaigning.
            self._send(msg.src, Commit(self.node_id, self.my_ballot, self.commit))
        if msg.ballot <= self.ballot:
            # Tell the candidate how high it must go, or its Prepare will be refused.
            self._send(msg.src, Nack(self.node_id, msg.ballot, self.ballot))

    # ------------------------------------------------------------------ proposer

    def on_pre_vote_reply(self, msg: PreVoteReply) -> None:
        if self.prevote_ballot is None or msg.ballot != self.prevote_ballot or not msg.granted:
            return
        if self._has_live_leader():
            self.prevote_ballot = None  # a leader showed up meanwhile
            return
        if msg.src not in self.current.voters:
            return  # only voters' answers count
        self.prevote_grants.add(msg.src)
        if len(self.prevote_grants) >= self.current.phase1_quorum:
            self._become_candidate()

    def on_promise(self, msg: Promise) -> None:
        if self.role is Role.FOLLOWER or msg.ballot != self.my_ballot:
            return
        src = msg.src
        if src in self.promised_by or src in self.promised_from:
            return  # complete already: a duplicate
        if src not in self.peers:
            return  # not a member we know of: it cannot count, and its report is not kept
        first = self.prepare_start.get(src, self.prepare_from)
        if msg.from_slot != self.promise_next.get(src, first):
            return  # a part we did not ask for (late or duplicated): the retransmit asks again
        # An honest acceptor's accepted slots lie within slots_ahead of a chosen prefix
        # on its disk (_accept_durably), which it reports (on_prepare); a report beyond
        # that is forged or corrupt, and would make us fill a gap of no-ops without
        # end. Safety: never drop part of a report and still count the promise (the
        # dropped value may be chosen); ignore the whole Promise instead.
        bound = msg.commit + self.config.slots_ahead
        if any(entry[0] > bound for entry in msg.entries):
            return
        self.promise_entries.setdefault(src, []).extend(msg.entries)
        self.promise_commit[src] = max(self.promise_commit.get(src, 0), msg.commit)
        self.known_commit = max(self.known_commit, msg.commit)
        if msg.next_slot:
            if msg.next_slot <= msg.from_slot:
                return  # cannot happen with a correct acceptor: ignore it rather than loop
            # More to come: the acceptor counts only once its whole report is here.
            self.promise_next[src] = msg.next_slot
            self._send(src, Prepare(self.node_id, self.my_ballot, msg.next_slot))
            return
        # Its report covers every slot from where we asked; slots up to its durable
        # chosen prefix it does not report (they are chosen: we learn them).
        self.promised_from[src] = max(first, self.promise_commit[src] + 1)
        self.promise_next.pop(src, None)
        if self.role is Role.LEADER:
            # A new membership's voter, asked after we took over: its report joins the
            # others' for the slots not proposed yet.
            for slot, b, v in self.promise_entries.pop(src, ()):
                if slot >= self.next_slot:
                    self.reports.setdefault(slot, []).append((b, v))
                    self.reported_upto = max(self.reported_upto, slot)
            self._fill_window()
            return
        self.promised_by.add(src)
        self._lead_if_ready()

    def on_accepted(self, msg: Accepted) -> None:
        if self.role is not Role.LEADER or msg.ballot != self.my_ballot:
            return
        self.heard_from.add(msg.src)
        proposal = self.inflight.get(msg.slot)
        if proposal is None:
            return  # chosen already, or a retransmission's late echo
        if self._counts(msg.src, proposal):
            proposal.acks.add(msg.src)
        if len(proposal.acks) >= self._quorum2(proposal.members):
            # A majority accepted this value at our ballot: it is chosen, and no
            # later ballot can choose anything else (their phase 1 meets one of
            # these acceptors and adopts the value).
            del self.inflight[msg.slot]
            self.chosen[msg.slot] = proposal.value
            self._out.governed.append((msg.slot, proposal.members.epoch))
            before = self.commit
            self._advance_commit(None)
            # New Accepts carry the new chosen prefix; send a Commit only if none left.
            if not self._fill_window() and self.commit > before:
                self._broadcast(Commit(self.node_id, self.my_ballot, self.commit))

    def _quorum2(self, members: Membership) -> int:
        """Votes that choose a value in a slot ``members`` govern."""
        return members.phase2_quorum

    def _counts(self, src: int, proposal: _Proposal) -> bool:
        """Does ``src``'s vote count towards choosing ``proposal``? Only the voters of
        the membership governing its slot: a learner or a removed node may accept (it
        keeps up), but a quorum of others' voters need not meet its vote."""
        return src in proposal.members.voters

    def on_nack(self, msg: Nack) -> None:
        self._see_round(msg.promised)
        if self.role is Role.FOLLOWER or msg.ballot != self.my_ballot:
            return
        if msg.promised > self.my_ballot:
            # Someone promised a higher ballot: a majority may have moved on, so
            # our ballot can no longer be relied on to choose anything.
            self._become_follower(None)

    def on_heartbeat_reply(self, msg: HeartbeatReply) -> None:
        if self.role is Role.LEADER and msg.ballot == self.my_ballot:
            self.heard_from.add(msg.src)
            if msg.src in self.peers:
                self.match[msg.src] = msg.commit
                if msg.src == self.transfer_to:
                    self._hand_over()
            if msg.commit < self.commit:
                # Push the chosen prefix so a lagging follower asks for the gap.
                self._send(msg.src, Commit(self.node_id, self.my_ballot, self.commit))
            elif msg.commit > self.known_commit:
                # The follower knows a longer chosen prefix than we do: slots were chosen
                # that we have not learned (maybe by a newer leader, while we were cut
                # off). Catch up: if they are in slots of ours, we are deposed and step
                # down (on_catchup_reply).
                self.known_commit = msg.commit

    def on_forward(self, msg: Forward) -> None:
        if self.role is not Role.LEADER and self.leader == msg.src:
            return  # we think the sender leads and it thinks we do: drop, clients retry
        self._enqueue(msg.commands)

    # ------------------------------------------------------------------ learner

    def on_catchup_request(self, msg: CatchupRequest) -> None:
        cfg = self.config
        if msg.from_slot <= self.floor and self.snapshot is not None:
            # We compacted the slots it needs: it installs our snapshot, then catches up.
            self._send_chunk(msg.src, self.snapshot, 0)
            return
        hi = min(msg.to_slot, msg.from_slot + cfg.catchup_max - 1)
        entries = []
        budget = cfg.catchup_max_bytes
        for slot in range(max(1, msg.from_slot), hi + 1):
            value = self.chosen.get(slot)
            if value is None:
                break
            entries.append((slot, value))
            # Bounded reply: at most one value beyond the byte budget.
            budget -= value_bytes(value)
            if budget <= 0:
                break
        if entries or self.commit:
            self._send(msg.src, CatchupReply(self.node_id, tuple(entries), self.commit))

    def on_catchup_reply(self, msg: CatchupReply) -> None:
        # Peers only send values they know to be chosen (crash faults, not lies).
        entries = msg.entries
        bound = self.commit + self.config.slots_ahead
        if entries and max(entry[0] for entry in entries) > bound:
            # An honest reply answers our request from our chosen prefix on, for at most
            # catchup_max slots (a late one holds lower slots: the prefix only grows), so
            # a slot beyond MAX_SLOTS_AHEAD is forged or corrupt (a forged reply need not
            # even be in order). Taken as chosen, it would make our next takeover fill the
            # gap up to it with no-ops, one slot at a time (found by fuzzing: slot
            # 2**63 - 2 hung a node). Ignoring a chosen value is always safe: it is asked
            # for again.
            entries = tuple(entry for entry in entries if entry[0] <= bound)
        if self.role is not Role.FOLLOWER and self._chosen_behind_our_back(entries):
            # A higher ballot chose in a slot of ours: we are deposed. Step down before
            # learning it, so that no commit notice of ours at our ballot ever covers
            # that slot (a follower holding our proposal there would take it as chosen).
            self._become_follower(None)
        for slot, value in entries:
            if slot > self.commit and slot not in self.chosen:
                self.chosen[slot] = value
                entry = self.accepted.get(slot)
                if entry is None or entry[1] != value:
                    # Keep the invariant behind CommitRecord: our accepted value of
                    # every chosen slot is the chosen one. Claiming to have accepted
                    # a chosen value is safe at any ballot: a later leader adopting
                    # it adopts the chosen value.
                    self._accept_durably(slot, self.ballot, value)
        self.known_commit = max(self.known_commit, msg.commit)
        before = self.commit
        self._advance_commit(None)
        if self.commit > before:
            self.catchup_sent_tick = None
            self.catchup_wait = self.config.retransmit_ticks
        if self.commit < self.known_commit and entries:
            self._request_catchup(msg.src)

    def on_snapshot_request(self, msg: SnapshotRequest) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            return
        if (msg.slot, msg.crc) == (snapshot.slot, snapshot.crc) and msg.offset < snapshot.size:
            self._send_chunk(msg.src, snapshot, msg.offset)  # resume where it stands
        else:
            self._send_chunk(msg.src, snapshot, 0)  # ours is another one: from its start

    def on_snapshot_chunk(self, msg: SnapshotChunk) -> None:
        if msg.slot <= self.commit:
            return  # we have all of it already
        if msg.size > self.config.max_snapshot_bytes or msg.offset + len(msg.data) > msg.size:
            return  # bounded: never buffer more than a snapshot may hold
        inst = self.installing
        if inst is None or (inst.slot, inst.crc, inst.size) != (msg.slot, msg.crc, msg.size):
            if (
                inst is not None
                and msg.src != inst.src
                and self.now - inst.last_tick < self.config.election_max_ticks
            ):
                # Liveness: one install at a time, from one source while it answers. Two
                # peers' snapshots of one slot may differ in bytes (an application's
                # snapshot() need not be byte-identical everywhere); taking turns between
                # them would restart the install forever (review finding).
                return
            if inst is not None and msg.slot < inst.slot and msg.src != inst.src:
                return  # older than the one arriving: it would only set us back less
            # (an older one from our source itself is what it holds now: we take it)
            if msg.offset != 0:
                # A part of a snapshot we are not receiving (a newer one, or ours was
                # abandoned): ask for it from its start.
                self._send(msg.src, SnapshotRequest(self.node_id, msg.slot, msg.crc, 0))
                return
            inst = self.installing = _Install(msg.slot, msg.size, msg.crc, msg.src, self.now)
        if msg.offset != len(inst.data):
            return  # a duplicate or a reordered part: the next request says where we are
        inst.data += msg.data
        inst.src = msg.src
        inst.last_tick = self.now
        self.known_commit = max(self.known_commit, msg.commit)
        if len(inst.data) < inst.size:
            self._send(msg.src, SnapshotRequest(self.node_id, inst.slot, inst.crc, len(inst.data)))
            return
        self.installing = None
        snapshot = Snapshot(inst.slot, 0, inst.crc, bytes(inst.data))
        if not verify(snapshot):
            return  # corrupt on the way: asked for again by catch-up
        try:
            state = read_snapshot(
                snapshot.blob, self.config.max_sessions, self.config.session_window
            )
        except SnapshotFormatError:
            return
        self._install(Snapshot(state.slot, state.index, snapshot.crc, snapshot.blob), state)

    def _install(self, snapshot: Snapshot, state: SnapshotState) -> None:
        """Take ``snapshot`` (from a peer, checked) as our state of every slot <= its slot.

        Safety: this moves only the learner forward. Our promise stays, and so does
        every value we accepted above the snapshot: a leader may have counted those
        votes. Below it, everything is chosen and in the snapshot, which the driver
        makes durable before anything else of this Ready (so the CommitRecord rule
        holds: the recorded prefix is replayed from the snapshot, not our log).
        """
        if state.slot <= self.commit:
            return
        if self.role is not Role.FOLLOWER:
            # Something was chosen past our own prefix while we campaigned or led: we
            # are behind, so not the leader anybody needs. Stepping down is always safe.
            self._become_follower(None)
        self._out.installed = snapshot
        self.snapshot = snapshot
        self._serving.clear()
        self._compact_to(state.slot)
        self.commit = state.slot
        self.known_commit = max(self.known_commit, state.slot)
        self.recorded_commit = max(self.recorded_commit, state.slot)
        self.delivered_index = state.index
        self.sessions = state.sessions
        if state.configs is not None:
            self.configs = list(state.configs)
        self._refresh_members()
        self.session_seen.clear()
        self.catchup_sent_tick = None
        self.catchup_wait = self.config.retransmit_ticks
        self._advance_commit(None)  # chosen values we learned above it already

    def _tick_install(self) -> None:
        inst = self.installing
        assert inst is not None
        if inst.slot <= self.commit:
            # We learned past it meanwhile (from the log): it is of no use any more, and
            # while it is pending nothing else is asked for (found by the simulator: a
            # node stuck asking for a snapshot no peer held any more).
            self.installing = None
            return
        idle = self.now - inst.last_tick
        if idle < self.config.retransmit_ticks:
            return
        if idle >= self.config.election_max_ticks:
            # Its source went quiet: ask another peer. One that holds the same snapshot
            # resumes at our offset; one that holds another answers with the start of its
            # own, which we take from it even if it is older (waiting for a newer one
            # could wait forever: review finding).
            others = [peer for peer in self.peers if peer != inst.src]
            if self.leader not in (None, self.node_id, inst.src):
                inst.src = self.leader
            elif others:
                inst.src = self.rng.choice(others)
            inst.last_tick = self.now
        elif idle % self.config.retransmit_ticks:
            return
        self._send(inst.src, SnapshotRequest(self.node_id, inst.slot, inst.crc, len(inst.data)))

    def _send_chunk(self, dst: int, snapshot: Snapshot, offset: int) -> None:
        data = snapshot.blob[offset : offset + self.config.snapshot_chunk_bytes]
        if offset + len(data) < snapshot.size:
            self._serving[dst] = self.now  # (see compacted: a transfer in progress)
        else:
            self._serving.pop(dst, None)
        self._send(
            dst,
            SnapshotChunk(
                self.node_id, snapshot.slot, snapshot.size, snapshot.crc, offset, data, self.commit
            ),
        )

    # ------------------------------------------------------------------ transitions

    def _become_follower(self, leader: int | None) -> None:
        if self.role is Role.LEADER:
            # Commands of unchosen slots may or may not be chosen by the next
            # leader; their clients retry and sessions drop any duplicate.
            self.inflight.clear()
            self.expiring.clear()
            self.change_pending = None
            self.match.clear()
            self.transfer_to = None
            self.handover_sent_tick = None
        if self.role is not Role.FOLLOWER or leader != self.leader:
            # What we queued or proposed may be lost with our role: take resends again.
            self.queued_upto.clear()
        if leader != self.leader:
            self.handed_to = None
        self.role = Role.FOLLOWER
        self.leader = leader
        self._clear_promises()
        self._clear_phase1()
        self.prevote_ballot = None
        self.prevote_grants.clear()
        self.election_elapsed = 0
        self.election_timeout = self._random_election_timeout()
        if leader is not None and self.queue:
            self._forward_queue()

    def _start_prevote(self) -> None:
        self.leader = None
        self.role = Role.FOLLOWER
        self.election_elapsed = 0
        self.election_timeout = self._random_election_timeout()
        if self.max_round + 1 >= MAX_ROUND:
            return  # no ballot left to campaign with (see MAX_ROUND): never overflow
        if not self.is_voter():
            return  # a learner, a node not yet or no longer a member: never campaigns
        self.prevote_ballot = Ballot(self.max_round + 1, self.node_id)
        self.prevote_grants = {self.node_id}
        if len(self.prevote_grants) >= self.current.phase1_quorum:
            self._become_candidate()
            return
        self._broadcast(PreVote(self.node_id, self.prevote_ballot))

    def _become_candidate(self) -> None:
        self.prevote_ballot = None
        self.prevote_grants.clear()
        # Our own acceptor promises the new ballot, and that promise is
        # persisted in this same Ready, before the Prepare leaves.
        ballot = self._new_ballot()
        if ballot.round >= MAX_ROUND:
            return  # the round bound (see may_promise): such a ballot is never used
        self.max_round = max(self.max_round, ballot.round)
        self.ballot = ballot
        self._out.records.append(PromiseRecord(ballot))
        self._ballot_in_flight = True
        self.my_ballot = ballot
        self.role = Role.CANDIDATE
        self.leader = None
        self.election_elapsed = 0
        self.prepare_from = self.commit + 1
        self.prepare_sent_tick = self.now
        self.queued_upto.clear()
        self._clear_promises()
        self._clear_phase1()
        # Our own report, from memory (it never travels, so it needs no parts).
        self.promise_entries[self.node_id] = self._accepted_from(self.prepare_from)
        self.promise_commit[self.node_id] = self.commit
        self.promised_by.add(self.node_id)
        self.promised_from[self.node_id] = self.prepare_from
        if self._lead_if_ready():
            return
        self._broadcast(Prepare(self.node_id, ballot, self.prepare_from))

    def _clear_promises(self) -> None:
        self.promise_entries.clear()
        self.promise_commit.clear()
        self.promise_next.clear()
        self.promised_by.clear()

    def _clear_phase1(self) -> None:
        """Forget what our ballot's phase 1 covers (a new ballot, or none)."""
        self.promised_from.clear()
        self.prepare_start.clear()
        self.reports.clear()
        self.reported_upto = 0

    def _lead_if_ready(self) -> bool:
        """Take over once a majority promised and we are close enough to the chosen
        prefix they know: the slots we must propose at once (everything they report)
        lie within slots_ahead of our own prefix, as every slot we accept must
        (_accept_durably). A candidate far behind catches up first (its ticks retry);
        if that takes too long, its election times out and someone else leads."""
        if not self.is_voter():
            # We learned (catching up while we campaigned) that we no longer vote.
            self._become_follower(None)
            return False
        current = self.current
        if len(self.promised_by.intersection(current.voters)) < current.phase1_quorum:
            return False
        # (That makes us the leader; what each slot needs before we propose in it,
        # _fill_window checks slot by slot.)
        reach = self.commit + self.config.slots_ahead
        settled = max(self.promise_commit[src] for src in self.promised_by)
        if settled > reach or any(
            slot > reach
            for src in self.promised_by
            for slot, _, _ in self.promise_entries[src]
        ):
            self.known_commit = max(self.known_commit, settled)
            return False
        self._become_leader()
        return True

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.node_id
        self.inflight.clear()
        self.heard_from = self.promised_by - {self.node_id}
        self.quorum_elapsed = 0
        self.quorum_ok = True  # a majority just promised
        self.heartbeat_elapsed = 0
        self.lead_start = self.now  # every session gets a full timeout from a new leader
        self.expiring.clear()
        # Slots up to the highest chosen prefix a promiser knows are settled: we
        # learn them by catch-up and never propose there. Above it, every
        # promiser reported everything it accepted.
        settled = max(self.promise_commit[src] for src in self.promised_by)
        settled = max(settled, self.prepare_from - 1)
        if settled > self.known_commit:
            self.known_commit = settled
        # Gather, per open slot, what the promisers accepted: _fill_window proposes
        # them slot by slot, each once a phase-1 quorum of its own membership covers it.
        reports: dict[int, list[tuple[Ballot, Value]]] = {}
        for src in self.promised_by:
            for slot, b, v in self.promise_entries[src]:
                if slot > settled:
                    reports.setdefault(slot, []).append((b, v))
        self._clear_promises()
        self.reports = reports
        self.reported_upto = max(max(reports, default=settled), max(self.chosen, default=0))
        # Slots up to our own chosen prefix (it may have grown by catch-up while we
        # campaigned) are chosen and delivered: nothing to propose there.
        self.next_slot = max(settled, self.commit) + 1
        self._fill_window()
        self._advance_commit(None)
        # Announce ourselves at once: followers stop campaigning and forward to us.
        self._broadcast(Heartbeat(self.node_id, self.my_ballot, self.commit))

    def _new_ballot(self) -> Ballot:
        """A ballot above every ballot seen, our own past ones included.

        ``self.ballot`` is rebuilt from durable records after a restart, and
        every ballot we ever used was promised (and persisted) by ourselves
        first, so this never hands out a ballot used before a crash. Its round
        may reach MAX_ROUND; the caller then does not campaign.
        """
        return Ballot(max(self.max_round, self.ballot.round) + 1, self.node_id)

    def _adopt(self, slot: int, reports: Iterable[tuple[Ballot, Value]]) -> Value:
        """The value a new leader proposes for an open slot (see pick_value)."""
        return pick_value(reports, NOOP)

    # ------------------------------------------------------------------ ticks

    def _tick_follower(self) -> None:
        self.election_elapsed += 1
        retransmit_due = self.now - self.prepare_sent_tick >= self.config.retransmit_ticks
        if self.role is Role.CANDIDATE and retransmit_due:
            self.prepare_sent_tick = self.now
            for peer in self.peers:
                if peer not in self.promised_by:
                    # From where its report stands: a lost part is asked for again.
                    first = self.promise_next.get(peer, self.prepare_from)
                    self._send(peer, Prepare(self.node_id, self.my_ballot, first))
        if self.election_elapsed >= self.election_timeout:
            self._start_prevote()

    def _tick_leader(self) -> None:
        cfg = self.config
        self.election_elapsed = 0
        self.heartbeat_elapsed += 1
        if self.heartbeat_elapsed >= cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast(Heartbeat(self.node_id, self.my_ballot, self.commit))
        current = self.current
        if self.node_id not in current.voters and self.transfer_to is None:
            # Removed by a change now in effect: hand over to the voter furthest along
            # (no election timeout to wait for), or step down if there is none.
            successor = self._successor()
            if successor is None or self.handover_sent_tick is not None:
                self._become_follower(None)
                return
            self._start_transfer(successor)
        if self.transfer_to is not None:
            if self.now >= self.transfer_until:
                self.transfer_to = None  # it did not take over in time: lead on
                if self.node_id not in current.voters:
                    self._become_follower(None)
                    return
                if self.handover_sent_tick is not None:
                    # A TimeoutNow is out there: choose a no-op, so that the commit notice
                    # after it makes it stale wherever it arrives late (on_timeout_now).
                    self.handover_sent_tick = None
                    slot = self.next_slot
                    if slot <= self.commit + min(cfg.slots_ahead, cfg.alpha) and (
                        self._covered(self.members_at(slot), slot)
                    ):
                        self.next_slot += 1
                        self._propose_slot(slot, NOOP)
            elif self.handover_sent_tick is None:
                # Ask the target for its prefix every tick: the handover waits for it.
                self._send(self.transfer_to, Heartbeat(self.node_id, self.my_ballot, self.commit))
            elif self.now - self.handover_sent_tick >= cfg.retransmit_ticks:
                self._hand_over()  # (lost: again)
        # Check-quorum: a leader that has not heard from a phase-2 quorum of voters for a
        # whole election timeout steps down, so that stickiness cannot pin a leader that
        # is cut off (others may then elect a new one). While it hears q2 voters, fewer
        # than q1 = n - q2 + 1 are without it: nobody else can be elected meanwhile.
        self.quorum_elapsed += 1
        if self.quorum_elapsed >= cfg.election_max_ticks:
            heard = len(self.heard_from.intersection(current.voters)) + 1
            self.heard_from = set()
            self.quorum_elapsed = 0
            self.quorum_ok = heard >= current.phase2_quorum
            if not self.quorum_ok:
                self._become_follower(None)
                return
        for slot, proposal in self.inflight.items():
            if self.now - proposal.sent_tick >= proposal.wait:
                proposal.sent_tick = self.now
                proposal.wait = min(2 * proposal.wait, _MAX_BACKOFF * cfg.retransmit_ticks)
                accept = Accept(self.node_id, self.my_ballot, slot, proposal.value, self.commit)
                for peer in proposal.members.members:
                    if peer not in proposal.acks and peer != self.node_id:
                        self._out.eager.append((peer, accept))
        # Room may open without an Accepted (our chosen prefix grew by catch-up, so
        # slots_ahead admits more; a change waits for no-ops to take effect): what is
        # queued goes out as soon as it may. Resends of queued commands are refused as
        # duplicates, so nobody else would do it.
        self._fill_window()
        if (self.now - self.lead_start) % cfg.session_check_ticks == 0:
            self._expire_idle_sessions()

    def _expire_idle_sessions(self) -> None:
        """Propose the end of every session idle for ``session_timeout_ticks`` here.

        Only the decision uses this leader's clock; the end itself happens where the
        expire command lands in the log, identically on every replica, and only if the
        session delivered nothing after the seq it names (activity wins any race).
        """
        timeout = self.config.session_timeout_ticks
        since = self.now - timeout
        if since < self.lead_start:
            return  # a new leader gives every session a full timeout
        seen = self.session_seen
        expiring = self.expiring
        expire: list[Command] = []
        for key, last in self.sessions.last.items():
            if key not in expiring and seen.get(key, self.lead_start) <= since:
                expiring.add(key)
                expire.append(expire_command(key, last))
                if len(expire) >= self.config.batch_max:
                    break  # the rest at the next check: bounded work per tick
        if expire:
            self._enqueue_system(expire)

    def _tick_catchup(self) -> None:
        if self.commit < self.known_commit:
            self._advance_commit(None)  # e.g. the prefix replayed from our own disk
        if self.commit >= self.known_commit:
            self.catchup_sent_tick = None
            return
        if (
            self.catchup_sent_tick is None
            or self.now - self.catchup_sent_tick >= self.catchup_wait
        ):
            # Unanswered: ask again, less and less often (replies may be large and the
            # peer slow); any progress resets it (see on_catchup_reply).
            self.catchup_wait = min(
                2 * self.catchup_wait, _MAX_BACKOFF * self.config.retransmit_ticks
            )
            target = self.leader if self.leader not in (None, self.node_id) else None
            if target is None and self.peers:
                target = self.rng.choice(self.peers)
            if target is not None:
                self._request_catchup(target)

    # ------------------------------------------------------------------ helpers

    def _accepted_from(self, first: int) -> list[PromiseEntry]:
        """What this acceptor accepted in every slot >= ``first``, ascending."""
        return [(slot, b, v) for slot, (b, v) in sorted(self.accepted.items()) if slot >= first]

    def _accepted_chunk(self, first: int, budget: int) -> tuple[tuple[PromiseEntry, ...], int]:
        """Like :meth:`_accepted_from`, but at most one value beyond ``budget`` bytes;
        also returns the first slot left out (0: none)."""
        entries: list[PromiseEntry] = []
        for slot in sorted(slot for slot in self.accepted if slot >= first):
            if budget <= 0:
                return tuple(entries), slot
            b, v = self.accepted[slot]
            entries.append((slot, b, v))
            budget -= value_bytes(v)
        return tuple(entries), 0

    def _chosen_behind_our_back(self, entries: Iterable[tuple[int, Value]]) -> bool:
        """Do these chosen values prove that a higher ballot chose in a slot we own?

        We own every slot at or above ``next_slot`` (nobody else may propose
        there at our ballot) and every slot we proposed at our ballot; a chosen
        value there that is not ours means a higher ballot was chosen.
        """
        for slot, value in entries:
            # (a slot our phase 1 saw a report for may be chosen at an older ballot: we
            # propose reported slots a window at a time, so it may lie ahead of next_slot
            # without anybody having deposed us: review finding)
            if slot >= self.next_slot and slot > self.reported_upto and self.is_leader:
                return True
            entry = self.accepted.get(slot)
            if entry is not None and entry[0] == self.my_ballot and entry[1] != value:
                return True
        return False

    def _random_election_timeout(self) -> int:
        return self.rng.randrange(self.config.election_min_ticks, self.config.election_max_ticks)

    def _has_live_leader(self) -> bool:
        if self.role is Role.LEADER:
            return True
        return self.leader is not None and self.election_elapsed < self.config.election_min_ticks

    def _see_round(self, ballot: Ballot) -> None:
        # Rounds that may_promise would refuse (at the bound, or a jump no real election
        # makes) do not count as seen either: a stray one must not make our next ballot
        # one that nobody promises.
        if self.max_round < ballot.round < MAX_ROUND and ballot.round <= (
            self.ballot.round + MAX_ROUND_STEP
        ):
            self.max_round = ballot.round

    def _hear_leader(self, src: int, ballot: Ballot) -> None:
        """A message from the leader of ``ballot`` (>= our promise) arrived."""
        if self.role is not Role.FOLLOWER or self.leader != src:
            if self.role is not Role.FOLLOWER and ballot == self.my_ballot:
                return  # our own ballot: cannot come from anybody else
            self._become_follower(src)
        self.election_elapsed = 0
        self.prevote_ballot = None

    def _learn_prefix(self, src: int, ballot: Ballot, commit: int) -> None:
        """The leader of ``ballot`` says every slot <= ``commit`` is chosen."""
        if commit > self.known_commit:
            self.known_commit = commit
        if commit > self.commit:
            self._advance_commit(ballot, commit)
            if self.commit < commit and self.catchup_sent_tick is None:
                self._request_catchup(src)

    def _advance_commit(self, ballot: Ballot | None, limit: int = 0) -> None:
        """Extend the chosen prefix as far as the known values allow, then deliver it.

        With ``ballot``, a slot <= ``limit`` that we accepted at exactly that
        ballot counts as chosen: the leader of ``ballot`` announced ``limit``,
        and it proposes a single value per slot, so what we accepted from it is
        what it saw chosen. The bound must be that leader's own announcement:
        an older ballot's value in a slot somebody else announced may have
        lost to a later ballot.
        """
        chosen = self.chosen
        accepted = self.accepted
        slot = self.commit + 1
        while True:
            if slot not in chosen:
                if ballot is None or slot > limit:
                    break
                entry = accepted.get(slot)
                if entry is None or entry[0] != ballot:
                    break
                chosen[slot] = entry[1]
            slot += 1
        if slot - 1 > self.commit:
            self._deliver(self.commit + 1, slot - 1)
            self.commit = slot - 1
            if len(self.configs) > 1 and self.configs[1][0] <= slot:
                self._refresh_members()  # a new membership is in effect
            if self.commit > self.known_commit:
                self.known_commit = self.commit
            if self.inflight:
                # Liveness: a slot we proposed may be learned chosen by catch-up rather
                # than by a quorum of Accepted (a new leader re-proposing a slot chosen
                # before it took over). It leaves the window now: acceptors that compacted
                # it no longer answer for it, and kept in flight it would pin the window
                # for good (review finding; the simulator's invariants check it).
                for done in [s for s in self.inflight if s <= self.commit]:
                    del self.inflight[done]

    def _deliver(self, first: int, last: int) -> None:
        out = self._out
        deliveries = out.deliveries
        chosen = out.chosen
        runs = out.runs
        sessions = self.sessions
        last_seq = sessions.last
        record = sessions.record
        seen = self.session_seen
        now = self.now
        index = self.delivered_index
        governed = out.governed
        for slot in range(first, last + 1):
            value = self.chosen[slot]
            chosen.append((slot, value))
            governed.append((slot, self.members_at(slot).epoch))
            run_client: str | None = None
            run_seq = run_index = run_len = 0
            for command in value:
                client, seq, _ = command
                # Exactly-once, FIFO per client: only a live session's next seq is
                # delivered; a retry (seq too low), a command whose predecessor was
                # lost (seq too high) or one of a session that is not live (never
                # opened, or ended) is skipped identically on every replica.
                if seq != last_seq.get(client, -2) + 1:
                    if seq == 0:
                        # A system command may end a session of the current run: record
                        # the run first, so that the table never sees its ended key.
                        if run_client is not None:
                            record(run_client, run_seq, run_index, run_len)
                            runs.append((run_client, run_seq, run_index, run_len))
                            seen[run_client] = now
                            run_client = None
                        if is_change(command):
                            self._apply_change(slot, command)
                        else:
                            self._apply_system(command)
                    continue
                last_seq[client] = seq
                index += 1
                deliveries.append(_new_delivery((index, slot, command)))
                if client == run_client and seq == run_seq + run_len:
                    run_len += 1
                    continue
                if run_client is not None:
                    record(run_client, run_seq, run_index, run_len)
                    runs.append((run_client, run_seq, run_index, run_len))
                    seen[run_client] = now
                run_client, run_seq, run_index, run_len = client, seq, index, 1
            if run_client is not None:
                record(run_client, run_seq, run_index, run_len)
                runs.append((run_client, run_seq, run_index, run_len))
                seen[run_client] = now
        self.delivered_index = index

    def _apply_system(self, command: Command) -> None:
        """Apply an open/close/expire command chosen in the log (see sessions.py)."""
        sessions = self.sessions
        sessions.apply(command)
        self.expiring.discard(command.client)  # applied, whatever its effect
        if sessions.opened:
            self._out.opened.extend(sessions.opened)
            for _, _, key in sessions.opened:
                self.session_seen[key] = self.now
            sessions.opened.clear()
        if sessions.ended:
            self._out.ended.extend(sessions.ended)
            for key, _, _ in sessions.ended:
                self.session_seen.pop(key, None)
                self.queued_upto.pop(key, None)
                self.expiring.discard(key)
            sessions.ended.clear()

    def _request_catchup(self, target: int) -> None:
        if self.installing is not None:
            return  # the slots it would ask for are in the snapshot arriving (see tick)
        self.catchup_sent_tick = self.now
        lo = self.commit + 1
        hi = min(max(self.known_commit, lo), lo + self.config.catchup_max - 1)
        self._send(target, CatchupRequest(self.node_id, lo, hi))

    def _enqueue(self, commands: Sequence[Command]) -> None:
        """Intake: client commands proposed here or forwarded to us.

        A leader queues them for its slots; a follower that knows the leader
        forwards them; a follower that knows none queues them until it does.
        What is queued here is deduplicated first: a command already queued or
        proposed here since our last role change is not taken again when its
        client resends it (the resend costs no memory), and neither is one whose
        predecessor is missing (it could not be delivered before it: the client
        resends both, in order). A forwarding follower deduplicates nothing, since
        a forward is not retransmitted: the client's resend is the retransmission.
        """
        if self.role is not Role.LEADER and self.leader not in (None, self.node_id):
            fresh, _ = self._admit(commands, dedup=False)
            if fresh:
                self._forward(fresh)
            return
        fresh, size = self._admit(commands, dedup=True)
        if not fresh:
            return
        # Bounded queue, in commands and in payload bytes: beyond it commands are
        # dropped (not acknowledged, so their clients resend them later).
        room = self.config.queue_max - len(self.queue)
        if room < len(fresh):
            fresh = fresh[: max(0, room)]
            size = payload_bytes(fresh)
        if self.queue_bytes + size > self.config.queue_max_bytes:
            room_bytes = self.config.queue_max_bytes - self.queue_bytes
            part, size = _prefix_within(fresh, room_bytes, at_least_one=False)
            fresh = list(part)
        if not fresh:
            return
        self._mark_queued(fresh)
        self.queue.extend(fresh)
        self.queue_bytes += size
        if self.role is Role.LEADER:
            self._fill_window()

    def _enqueue_system(self, commands: list[Command]) -> None:
        """Queue this leader's own system commands (session expiry) behind the rest."""
        self.queue.extend(commands)
        self.queue_bytes += payload_bytes(commands)
        self._fill_window()

    def _admit(self, commands: Sequence[Command], dedup: bool) -> tuple[list[Command], int]:
        """The commands worth taking (see :meth:`_enqueue`), in their order, and the
        bytes of their payloads."""
        n = len(commands)
        if not n:
            return [], 0
        limit = self.config.max_payload_bytes
        key, first_seq, _ = commands[0]
        # Fast path: one session's run of consecutive seqs (what a client sends), judged
        # as a run. Every seq is checked: a run with a hole or a repeat would mark seqs
        # as queued that are not, and this leader would refuse them until it steps down.
        if (
            first_seq > 0
            and commands[-1][1] - first_seq == n - 1
            and list(map(_key_of, commands)).count(key) == n
            and list(map(_seq_of, commands)) == list(range(first_seq, first_seq + n))
        ):
            sizes = list(map(len, map(_payload_of, commands)))
            if max(sizes) <= limit:
                skip = self._run_start(key, first_seq, dedup)
                if skip is None or skip >= n:
                    return [], 0
                if key in self.sessions.last:  # only live sessions: the dict stays bounded
                    self.session_seen[key] = self.now
                return list(commands[skip:]), sum(sizes[skip:] if skip else sizes)
        # General path (a forward of many sessions, system commands, odd input).
        out: list[Command] = []
        expect: dict[str, int | None] = {}
        for command in commands:
            key, seq, payload = command
            if len(payload) > limit:
                continue  # never enters the log: the cluster's request limit
            if seq == 0:
                out.append(command)  # system command: applying one twice is harmless
                continue
            if key not in expect:
                skip = self._run_start(key, seq, dedup)
                expect[key] = None if skip is None else seq + max(skip, 0)
                if skip is not None and key in self.sessions.last:
                    self.session_seen[key] = self.now
            want = expect[key]
            if want is None or seq < want or (dedup and seq > want):
                continue
            expect[key] = seq + 1
            out.append(command)
        return out, payload_bytes(out)

    def _run_start(self, key: str, first_seq: int, dedup: bool) -> int | None:
        """How many commands of a run of ``key`` from ``first_seq`` to skip (already
        delivered or, with ``dedup``, already queued here); None: take none of it."""
        done = self.sessions.last.get(key)
        if done is None:
            if self.sessions.status(key)[0] == "ended":
                return None  # its session ended: never deliverable again
            return 0  # not opened as far as we have applied: the log will decide
        expect = done + 1
        if dedup:
            expect = max(expect, self.queued_upto.get(key, 0) + 1)
        skip = expect - first_seq
        if skip < 0:
            # A gap before this run. Queued, it would only wait for its predecessor;
            # forwarded, the leader judges it with what it has.
            return None if dedup else 0
        return skip

    def _mark_queued(self, commands: list[Command]) -> None:
        """Remember how far each live session's commands are queued here.

        Only for sessions live here: for one we have not seen opened yet (we are
        behind), nothing says the run we took follows its last delivered seq, and
        marking it would make us refuse the missing predecessors when they come.
        """
        upto = self.queued_upto
        live = self.sessions.last
        if len(upto) > 2 * self.config.max_sessions:
            upto.clear()  # bounded; forgetting only lets a resend be queued twice
        key, seq, _ = commands[-1]
        if commands[0][0] == key and seq - commands[0][1] == len(commands) - 1:
            if key in live:
                upto[key] = seq  # one run
            return
        for key, seq, _ in commands:
            if seq and key in live:
                upto[key] = seq

    def _forward(self, commands: Sequence[Command]) -> None:
        """Send commands to the leader in Forwards bounded in commands and bytes."""
        assert self.leader is not None
        for part in self._batches(commands):
            self._send(self.leader, Forward(self.node_id, part))

    def _batches(self, commands: Sequence[Command]) -> Iterable[Value]:
        """``commands`` cut into values of at most ``batch_max`` commands and about
        ``batch_max_bytes`` (a single larger command travels alone)."""
        cfg = self.config
        start, n = 0, len(commands)
        while start < n:
            part = tuple(commands[start : start + cfg.batch_max])
            if len(part) > 1 and payload_bytes(part) > cfg.batch_max_bytes:
                part, _ = _prefix_within(part, cfg.batch_max_bytes, at_least_one=True)
            start += len(part)
            yield part

    def _forward_queue(self) -> None:
        assert self.leader is not None
        queue = list(self.queue)
        self.queue.clear()
        self.queue_bytes = 0
        self._forward(queue)

    def _fill_window(self) -> int:
        """Move queued commands into new slots while the phase-2 window has room.

        Returns the number of slots proposed. A slot takes whatever is queued
        (up to ``batch_max`` commands and ``batch_max_bytes``): at low load one
        command goes out at once; under load the window fills and commands pile
        up into large batches.
        """
        if self.transfer_to is not None:
            self._hand_over()
            return 0  # handing over: no new slots (the queue goes to the next leader)
        queue = self.queue
        cfg = self.config
        batch_max = cfg.batch_max
        proposed = 0
        # Never beyond slots_ahead of our chosen prefix: acceptors (ourselves included,
        # see _accept_durably) refuse such slots. Never beyond alpha either: the
        # membership of a slot further is not known yet (the alpha rule).
        reach = self.commit + min(cfg.slots_ahead, cfg.alpha)
        while len(self.inflight) < cfg.window and self.next_slot <= reach:
            slot = self.next_slot
            if slot <= self.commit:
                self.next_slot = self.commit + 1  # learned chosen meanwhile (catch-up)
                continue
            members = self.members_at(slot)
            if self.node_id not in members.voters:
                break  # not ours to lead: we step down when that membership is in effect
            if not self._covered(members, slot):
                # Safety: a slot is proposed only once a phase-1 quorum of the voters
                # governing it promised our ballot and told us what they accepted there.
                self._prepare_members(members, slot)
                break
            known = self.chosen.get(slot)
            if known is None and slot <= self.reported_upto:
                # The highest-ballot value may already be chosen: re-propose it. A slot
                # nobody in the quorum accepted cannot be chosen yet (that quorum now
                # refuses lower ballots): fill it with a no-op.
                known = self._adopt(slot, self.reports.pop(slot, ()))
            if known is None and not queue:
                if self.configs[-1][0] <= slot:
                    break
                known = NOOP  # push a chosen change into effect: alpha slots must pass
            proposed += 1
            if known is not None:
                self.next_slot += 1
                self._propose_slot(slot, known)
                continue
            n = min(batch_max, len(queue))
            value: Value = tuple(queue.popleft() for _ in range(n))
            # The whole queue in one slot: its size is known without a pass.
            size = self.queue_bytes if not queue else payload_bytes(value)
            if size > cfg.batch_max_bytes and n > 1:
                # Bounded slot: keep a prefix within the budget (at least one command,
                # which is at most max_payload_bytes) and give the rest back.
                popped = value
                value, size = _prefix_within(popped, cfg.batch_max_bytes, at_least_one=True)
                queue.extendleft(reversed(popped[len(value) :]))
            self.queue_bytes -= size
            slot = self.next_slot
            self.next_slot += 1
            self._propose_slot(slot, value)
        if len(self.configs) > 1:
            # Ask the voters of a coming membership early, so that its first slot does
            # not wait for their promises once the window reaches it.
            for start, members in self.configs[1:]:
                if self.node_id in members.voters and not self._covered(members, start):
                    self._prepare_members(members, start)
        return proposed

    def _accept_durably(self, slot: int, ballot: Ballot, value: Value) -> None:
        """Accept ``value`` in ``slot`` at ``ballot``; the record goes in this Ready.

        Callers keep ``slot <= commit + slots_ahead``. Safety rule kept here: every
        slot we ever accepted lies within ``slots_ahead`` of a chosen prefix on our
        disk *before* the accept is, so that what we report in a Promise, even right
        after a crash that erased what we had learned since, stays within
        ``slots_ahead`` of the prefix we report with it (on_promise refuses anything
        further as forged). The CommitRecord precedes the AcceptRecord in the log.
        """
        if slot > self.recorded_commit + self.config.slots_ahead:
            self._record_commit()
        self.accepted[slot] = (ballot, value)
        self._out.records.append(AcceptRecord(slot, ballot, value))

    def _record_commit(self) -> None:
        """Write the chosen prefix we know (in this Ready), if it grew since the last time.

        Safe to record: our accepted value of every slot in it is the chosen one, and
        its record precedes this one in the log (see on_catchup_reply)."""
        if self.commit > self.recorded_commit:
            self.recorded_commit = self.commit
            self._out.records.append(CommitRecord(self.commit))

    def _propose_slot(self, slot: int, value: Value) -> None:
        """Phase 2a for one slot: accept it ourselves (persisted first), ask the rest."""
        ballot = self.my_ballot
        self._accept_durably(slot, ballot, value)
        members = self.members_at(slot)
        proposal = _Proposal(value, set(), self.now, self.config.retransmit_ticks, members)
        if self._counts(self.node_id, proposal):
            proposal.acks.add(self.node_id)
        self.inflight[slot] = proposal
        accept = Accept(self.node_id, ballot, slot, value, self.commit)
        # Voters and learners of the slot's membership (learners keep up this way).
        out = self._out.messages if self._ballot_in_flight else self._out.eager
        # (our ballot itself not durable yet: the Accepts wait for it)
        node_id = self.node_id
        for peer in members.members:
            if peer != node_id:
                out.append((peer, accept))
        if len(proposal.acks) >= self._quorum2(members):  # a single voter
            del self.inflight[slot]
            self.chosen[slot] = value
            self._out.governed.append((slot, members.epoch))
            self._advance_commit(None)

    def _send(self, dst: int, msg: Message) -> None:
        self._out.messages.append((dst, msg))

    def _broadcast(self, msg: Message) -> None:
        append = self._out.messages.append
        for peer in self.peers:
            append((peer, msg))


_key_of: Callable[[Command], str] = itemgetter(0)
_seq_of: Callable[[Command], int] = itemgetter(1)
_payload_of: Callable[[Command], bytes] = itemgetter(2)


def payload_bytes(commands: Sequence[Command]) -> int:
    """The bytes of the payloads of ``commands``: what slot and queue budgets count (the
    rest of a command is bounded per command, see ReplicaConfig)."""
    return sum(map(len, map(_payload_of, commands)))


def value_bytes(value: Value) -> int:
    """About how many bytes a slot's value takes in a frame (client ids counted one
    byte per character; the config's frame bound allows for UTF-8)."""
    return (
        payload_bytes(value)
        + sum(map(len, map(_key_of, value)))
        + COMMAND_OVERHEAD * len(value)
    )


def _prefix_within(
    commands: Sequence[Command], budget: int, *, at_least_one: bool
) -> tuple[Value, int]:
    """The longest prefix of ``commands`` whose payloads fit ``budget`` bytes (with
    ``at_least_one``, never empty), and its payload bytes."""
    sizes = list(accumulate(map(len, map(_payload_of, commands))))
    k = bisect_right(sizes, budget)
    if at_least_one and k == 0 and commands:
        k = 1
    return tuple(commands[:k]), sizes[k - 1] if k else 0


#: Delivery(index, slot, command) built by a C-level call (one per delivered command).
_new_delivery: Callable[[tuple[int, int, Command]], Delivery] = partial(tuple.__new__, Delivery)

