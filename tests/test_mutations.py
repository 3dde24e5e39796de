"""Mutation tests: each plants a known bug and asserts that the simulator catches it.

The bugs live here, in subclasses, never behind switches in production code.
Each must produce a safety violation of an expected kind within 1000 seeds, on
3 and on 5 nodes; the search stops at the first seed that shows one, so these
runs are short when the simulator is good at its job. A run that crashes is a
failure of the test, never a catch. First seed and the kinds it shows at the
time of writing (after snapshots joined every run), on 3 / 5 nodes:

* phase-2 quorum one short: 1 / 6 (agreement, ...)
* promise not persisted: 1 / 1 (invariants: a promise went down)
* replies before durable: 5 / 4 (invariants); records never synced: 4 / 4
* new leader ignores accepted values: 1 / 1 (agreement)
* ballot reused after restart: 1 / 1 (invariants: two leaders of one ballot)
* a repeated (session, seq) delivered: 5 / 5 (integrity, fifo)
* a second client gets the first's session: 1 / 1 (sessions, validity)
* an ended session revived: 1 / 1 (sessions)
* review finding 1 (stale Accept overwrites a chosen slot): - / 68 (invariants)
* review finding 2 (deposed leader keeps announcing): - / 371 (invariants; without the
  coordination workload)
* a stale Accept taken in a fresh slot: 1 / 1 (invariants)
* a stale value taken for chosen from a commit notice: 3 / 1 (agreement)
* a late report wins over the highest ballot: 110 / 43 (agreement)
* a stale (paused) leader proposes a slot again: 1 / 1 (invariants)
* a candidate counts a promise whose report it truncated: 176 / 176 (agreement)
* compaction deletes log segments above the snapshot: 29 / 7 (invariants: a vote forgotten)
* the compaction floor passes the durable snapshot: 1 / 1 (invariants)
* the snapshot omits the client sessions: 1 / 1 (sessions)
* an install clears the values accepted above the snapshot: 1 / 1 (invariants)
* a slot learned chosen by catch-up stays in the leader's window: 6 / 26 (invariants)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import pytest

from paxos.messages import Accept, Accepted, Commit, Heartbeat, Message, Prepare, Promise
from paxos.multi.config import ReplicaConfig
from paxos.multi.driver import ReadyDriver
from paxos.multi.membership import Membership
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica, _Proposal
from paxos.multi.sessions import Sessions
from paxos.multi.snapshot import Snapshot, SnapshotState, build_snapshot
from paxos.records import AcceptRecord, PromiseRecord, Record
from paxos.sim.node import NodeDriver
from paxos.sim.runner import SimConfig, run
from paxos.types import NOOP, Ballot, Command, Delivery, Value

MAX_SEEDS = 1000


class QuorumOneShort(Replica):
    """Phase 2 counts a value chosen one acceptor short of a majority."""

    def _quorum2(self, members: Membership) -> int:
        return len(members.voters) // 2


class ForgetsPromises(Replica):
    """Never writes its promises: a restarted acceptor has forgotten them."""

    @staticmethod
    def _strip(ready: Ready) -> Ready:
        ready.records = [r for r in ready.records if not isinstance(r, PromiseRecord)]
        return ready

    def step(self, msg: Message) -> Ready:
        return self._strip(super().step(msg))

    def tick(self) -> Ready:
        return self._strip(super().tick())

    def propose(self, commands: Sequence[Command]) -> Ready:
        return self._strip(super().propose(commands))


class IgnoresAcceptedValues(Replica):
    """A new leader proposes no-ops instead of the values a majority reported."""

    def _adopt(self, slot: int, reports: object) -> Value:
        return NOOP


class ReusesBallots(Replica):
    """Counts its ballots in memory only: after a restart it starts again at round 1."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.campaigns = 0

    def _new_ballot(self) -> Ballot:
        self.campaigns += 1
        return Ballot(self.campaigns, self.node_id)


class RepliesBeforeDurable(ReadyDriver):
    """Sends a turn's messages first and makes its records durable afterwards (the
    runtime's driver, with its two middle steps swapped)."""

    def handle(self, ready: Ready) -> None:
        if ready.eager:
            self.outbox.send(ready.eager)
        if ready.messages:
            self.outbox.send(ready.messages)
        if ready.records:
            self.storage.append(ready.records)
            self.storage.sync()
        self.applier.apply(ready)


class NeverSyncs(ReadyDriver):
    """Writes a turn's records but never syncs them: a crash loses what was promised."""

    def handle(self, ready: Ready) -> None:
        if ready.eager:
            self.outbox.send(ready.eager)
        if ready.records:
            self.storage.append(ready.records)
        if ready.messages:
            self.outbox.send(ready.messages)
        self.applier.apply(ready)


class ByNameSessions(Sessions):
    """Opens one session per *name*: a second client with the same name gets the first's
    key (the classic "client id is the session" mistake)."""

    def _open(self, name: str, nonce: bytes) -> None:
        for key in self.last:
            if key.rpartition("#")[0] == name:
                self.opened.append((name, nonce, key))
                return
        super()._open(name, nonce)


class SharesSessionsByName(Replica):
    """Lets a second incarnation of a client name through as the first."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sessions = ByNameSessions(self.config.max_sessions, self.config.session_window)


class AdmitsRepeats(Replica):
    """Delivers a command whose seq is not above the session's last: a repeat gets through."""

    def _deliver(self, first: int, last: int) -> None:
        out, sessions = self._out, self.sessions
        index = self.delivered_index
        for slot in range(first, last + 1):
            value = self.chosen[slot]
            out.chosen.append((slot, value))
            for command in value:
                key, seq, _ = command
                done = sessions.last.get(key)
                if seq == 0:
                    self._apply_system(command)
                    continue
                if done is None or seq > done + 1:  # the bug: seq <= done is let through
                    continue
                sessions.last[key] = max(done, seq)
                index += 1
                out.deliveries.append(Delivery(index, slot, command))
                sessions.record(key, seq, index, 1)
                out.runs.append((key, seq, index, 1))
        self.delivered_index = index


class _Resurrecting(dict[str, int]):
    """A session table that treats any unknown key as a live session with nothing
    delivered (the old implicit sessions): an ended session's late command revives it."""

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        return super().get(key, 0 if default == -2 else default)


class _TolerantSessions(Sessions):
    def _end(self, key: str, reason: str) -> None:
        last = self.last.pop(key)
        nonce = self._nonce_of.pop(key, None)
        if nonce is not None:
            self._by_nonce.pop(nonce, None)
        self._runs.pop(key, None)
        self.tombstones[key] = last
        self.ended.append((key, last, reason))

    def export(self) -> list[object]:
        # Revived sessions have no open request behind them: a snapshot leaves them out
        # (so that snapshots keep working and the bug planted is the only one).
        live = [
            [key, last, *self._nonce_of[key], *self._export_runs(key)]
            for key, last in self.last.items()
            if key in self._nonce_of
        ]
        return [self.next_incarnation, live, [[k, s] for k, s in self.tombstones.items()]]


class ResurrectsEndedSessions(Replica):
    """Delivers commands of sessions it does not know (ended, or never opened)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._tolerate(self.sessions)  # (restored from a snapshot, if it started from one)

    def _install(self, snapshot: Snapshot, state: SnapshotState) -> None:
        super()._install(snapshot, state)
        self._tolerate(self.sessions)

    def _tolerate(self, restored: Sessions) -> None:
        tolerant = _TolerantSessions(self.config.max_sessions, self.config.session_window)
        for name in Sessions.__slots__:
            setattr(tolerant, name, getattr(restored, name))
        tolerant.last = _Resurrecting(restored.last)
        self.sessions = tolerant


# --- the two review findings, with their fixes undone -------------------------------------


class OverwritesAChosenSlot(Replica):
    """Review finding 1, fix undone: a stale leader's Accept overwrites the accepted value
    of a slot this acceptor knows was chosen otherwise (a restart then replays it)."""

    def on_accept(self, msg: Accept) -> None:
        self._hear_leader(msg.src, msg.ballot)
        previous = self.accepted.get(msg.slot)
        if previous is None or previous[0] != msg.ballot or previous[1] != msg.value:
            self.ballot = msg.ballot
            self.accepted[msg.slot] = (msg.ballot, msg.value)
            self._out.records.append(AcceptRecord(msg.slot, msg.ballot, msg.value))
        self._send(msg.src, Accepted(self.node_id, msg.ballot, msg.slot))
        self._learn_prefix(msg.src, msg.ballot, msg.commit)


class KeepsLeadingWhenDeposed(Replica):
    """Review finding 2, fix undone: a leader that learns by catch-up that a higher ballot
    chose in one of its slots goes on leading (and announcing commits) at its ballot."""

    def _chosen_behind_our_back(self, entries: object) -> bool:
        return False


# --- stale messages and paused leaders ----------------------------------------------------


class AcceptsStaleProposalsInFreshSlots(Replica):
    """Takes an Accept below its promise when it has no value in that slot yet: a deposed
    leader's late proposal gets through where nothing was accepted."""

    def _ballot_ok(self, msg: Accept | Prepare | Commit | Heartbeat) -> bool:
        if isinstance(msg, Accept) and msg.slot not in self.accepted:
            return True
        return super()._ballot_ok(msg)

    def on_accept(self, msg: Accept) -> None:
        promised = self.ballot
        super().on_accept(msg)
        self.ballot = max(self.ballot, promised)  # keeps its promise, accepted below it


class LearnsStaleValuesFromCommitNotices(Replica):
    """Takes a commit notice at ballot b as choosing what it accepted at any ballot up to
    b (not exactly b): a value a stale leader left behind is taken for the chosen one."""

    def _advance_commit(self, ballot: Ballot | None, limit: int = 0) -> None:
        if ballot is not None:
            for slot in range(self.commit + 1, limit + 1):
                entry = self.accepted.get(slot)
                if slot not in self.chosen and entry is not None and entry[0] < ballot:
                    self.accepted[slot] = (ballot, entry[1])
        super()._advance_commit(ballot, limit)


class AdoptsTheLatestReport(Replica):
    """A new leader adopts the value of the last report it got, not of the highest ballot:
    a late promise carrying a stale value wins."""

    def _adopt(self, slot: int, reports: Iterable[tuple[Ballot, Value]]) -> Value:
        listed = list(reports)
        return listed[-1][1] if listed else NOOP


class RefreshesStaleProposals(Replica):
    """A leader that finds a proposal unanswered for long (it was paused, or cut off)
    proposes that slot again, with what is queued now, at the same ballot."""

    def _tick_leader(self) -> None:
        for slot, proposal in list(self.inflight.items()):
            stale = self.now - proposal.sent_tick >= 4 * self.config.retransmit_ticks
            if stale and self.queue:
                value = (self.queue.popleft(),)
                proposal.value = value
                proposal.acks = {self.node_id}
                self.accepted[slot] = (self.my_ballot, value)
                self._out.records.append(AcceptRecord(slot, self.my_ballot, value))
        super()._tick_leader()


class CountsTruncatedReports(Replica):
    """Review finding, second session: a candidate drops the reported entries it finds too
    far ahead of the promiser's chosen prefix, but still counts the promise; and acceptors
    do not record their chosen prefix before accepting far ahead of the recorded one or
    before promising, so an honest report can run that far after a crash. A dropped
    entry may be chosen: the new leader fills its slot with something else."""

    def _record_commit(self) -> None:
        pass  # only the periodic CommitRecord of tick() is left

    def on_promise(self, msg: Promise) -> None:
        bound = msg.commit + self.config.slots_ahead
        super().on_promise(replace(msg, entries=tuple(e for e in msg.entries if e[0] <= bound)))


class SnapshotsWithoutSessions(Replica):
    """Planted bug: the snapshot leaves out the client sessions (an app-only snapshot);
    a replica restored from it has lost where every session stands."""

    def take_snapshot(self, app: bytes = b"") -> Snapshot:
        empty = Sessions(self.config.max_sessions, self.config.session_window)
        return build_snapshot(self.commit, self.delivered_index, empty, app)


class InstallClearsAccepted(Replica):
    """Planted bug: installing a snapshot replaces the acceptor's whole state, so the
    values it accepted above the snapshot (votes a leader may have counted) are gone."""

    def _install(self, snapshot: Snapshot, state: SnapshotState) -> None:
        super()._install(snapshot, state)
        self.accepted.clear()


class ChangesTakeEffectAtOnce(Replica):
    """Planted bug: a membership change chosen at slot i governs slot i + 1, while the
    leader keeps a pipeline of up to alpha slots open: slots it proposed under the old
    membership are then governed by the new one."""

    def _effective_slot(self, slot: int) -> int:
        return slot + 1


class CountsLearners(Replica):
    """Planted bug: a learner's (or a removed node's) Accepted counts towards choosing,
    though no phase-1 quorum of voters need meet it."""

    def _counts(self, src: int, proposal: _Proposal) -> bool:
        return src in proposal.members.members


class SkipsPhase1ForNewVoters(Replica):
    """Planted bug: a leader proposes in a new membership's slots with the promises of
    the old one's voters only: the new voters may have accepted (and chosen) something
    there under an older ballot that nobody asked them about."""

    def _covered(self, members: Membership, slot: int) -> bool:
        return True


class RejoinsAfterDiskLoss(NodeDriver):
    """Planted bug: a node whose disk was lost starts again under its old id, an
    acceptor that forgot what it promised and accepted."""

    def may_start(self) -> bool:
        return True


class CompactsPastTheSnapshot(Replica):
    """Planted bug: the compaction floor goes past the durable snapshot (off by a
    window), dropping accepted values above it."""

    def compacted(self, snapshot: Snapshot) -> Ready:
        out = super().compacted(snapshot)
        self._compact_to(snapshot.slot + self.config.window)
        return out


class KeepsChosenSlotsInFlight(Replica):
    """Planted bug (review finding F1, fix undone): a slot this leader learns chosen by
    catch-up, not by a quorum of Accepted, stays in its phase-2 window."""

    def _advance_commit(self, ballot: Ballot | None, limit: int = 0) -> None:
        # (on_accepted takes a slot chosen by a quorum out of the window before it gets
        # here: only the slots the fix removes are put back)
        kept = dict(self.inflight)
        super()._advance_commit(ballot, limit)
        for slot, proposal in kept.items():
            self.inflight.setdefault(slot, proposal)


class DeletesSegmentsAboveTheSnapshot(NodeDriver):
    """Planted bug: compaction deletes every log segment but the active one, including
    accepted records above the durable snapshot."""

    def keep_from(self, tops: Sequence[tuple[int, int]], floor: int, current: int) -> int:
        return current


def _factory(cls: type[Replica]):  # type: ignore[no-untyped-def]
    def build(
        node_id: int,
        config: ReplicaConfig,
        rng: random.Random,
        records: Sequence[Record],
        snapshot: Snapshot | None = None,
    ) -> Replica:
        return cls(node_id, config, rng, records, snapshot)

    return build


@dataclass(frozen=True)
class Mutant:
    """A planted bug, the run that should expose it, and the violations that count as a
    catch: a run that merely crashes (an exception) is a failure of the test, never a
    catch, and so is a violation of another kind."""

    base: SimConfig
    kinds: frozenset[str]
    #: Cluster sizes it is looked for on (see the review findings for why not 3).
    nodes: tuple[int, ...] = (3, 5)


def first_violation(mutant: Mutant, nodes: int) -> tuple[int, set[str]] | None:
    """The first seed whose run shows a violation, with the kinds it shows."""
    for seed in range(1, MAX_SEEDS + 1):
        result = run(replace(mutant.base, seed=seed, nodes=nodes))
        kinds = {v.checker for v in result.violations}
        assert "exception" not in kinds, (seed, result.violations[:3])
        if result.violation_count:
            return seed, kinds
    return None


MUTANTS = {
    "phase-2 quorum one below a majority": Mutant(
        SimConfig(0, replica_factory=_factory(QuorumOneShort)), frozenset({"agreement"})
    ),
    # A forgotten promise only matters if the acceptor restarts between promising a
    # new candidate and hearing from the old leader again: a narrow window (pre-vote
    # and stickiness make competing leaders rare), so this run crashes nodes often.
    "promise not persisted across restart": Mutant(
        SimConfig(0, replica_factory=_factory(ForgetsPromises), crash_rate=0.03),
        frozenset({"invariants", "agreement"}),
    ),
    # Messages leave before the vow is durable: a crash in between forgets an accept or
    # a promise a peer relies on; what shows first may be any broken replicated state.
    "acceptor replies before its record is durable": Mutant(
        SimConfig(0, ready_driver=RepliesBeforeDurable),
        frozenset({"invariants", "agreement", "sessions", "total-order", "acked-delivered"}),
    ),
    "records never synced": Mutant(
        SimConfig(0, ready_driver=NeverSyncs),
        frozenset({"invariants", "agreement", "sessions", "total-order", "acked-delivered"}),
    ),
    "new leader ignores previously accepted values": Mutant(
        SimConfig(0, replica_factory=_factory(IgnoresAcceptedValues)),
        frozenset({"agreement", "acked-delivered", "total-order", "sessions"}),
    ),
    "ballot reused after restart": Mutant(
        SimConfig(0, replica_factory=_factory(ReusesBallots)),
        frozenset({"invariants", "agreement", "acked-delivered", "total-order", "sessions"}),
    ),
    "a repeated (session, seq) delivered": Mutant(
        SimConfig(0, replica_factory=_factory(AdmitsRepeats)), frozenset({"integrity", "fifo"})
    ),
    "a second client with one name gets the first's session": Mutant(
        SimConfig(0, replica_factory=_factory(SharesSessionsByName)),
        frozenset({"sessions", "validity"}),
    ),
    "an ended session's late command delivered": Mutant(
        SimConfig(0, replica_factory=_factory(ResurrectsEndedSessions)),
        frozenset({"sessions"}),
    ),
    # The review findings need five nodes to do harm. On three, a slot chosen otherwise
    # leaves its stale proposer's own vote in every majority but one, and the acceptor
    # in that one promised the new ballot: neither a stale Accept that passes the ballot
    # check nor a deposed leader announcing its value can meet a follower that would
    # take it (see tests/test_review_regressions.py for the five-node schedules).
    # Like finding 2, its schedule needs five voters throughout (see there).
    "review finding 1: a stale Accept overwrites a chosen slot": Mutant(
        SimConfig(0, replica_factory=_factory(OverwritesAChosenSlot), reconfigure=False),
        frozenset({"invariants", "agreement"}),
        nodes=(5,),
    ),
    # Its schedule needs five voters throughout; the operator's membership changes
    # (which grow and shrink the cluster in most runs) made it rarer than 1 in 1000.
    # The coordination workload (bigger snapshots, other chunking) shifts every
    # schedule and left it uncaught in 1000 seeds; without it, seed 371 shows it.
    "review finding 2: a deposed leader keeps announcing": Mutant(
        SimConfig(
            0, replica_factory=_factory(KeepsLeadingWhenDeposed), reconfigure=False,
            coord=False,
        ),
        frozenset({"invariants", "agreement"}),
        nodes=(5,),
    ),
    "a stale Accept taken in a fresh slot below the promise": Mutant(
        SimConfig(0, replica_factory=_factory(AcceptsStaleProposalsInFreshSlots)),
        frozenset({"invariants", "agreement"}),
    ),
    "a stale value taken for chosen from a commit notice": Mutant(
        SimConfig(0, replica_factory=_factory(LearnsStaleValuesFromCommitNotices)),
        frozenset({"agreement", "invariants", "total-order", "acked-delivered", "sessions"}),
    ),
    "a late report wins over the highest ballot": Mutant(
        SimConfig(0, replica_factory=_factory(AdoptsTheLatestReport)),
        frozenset({"agreement", "invariants", "total-order", "acked-delivered", "sessions"}),
    ),
    "a candidate counts a promise whose report it truncated": Mutant(
        SimConfig(0, replica_factory=_factory(CountsTruncatedReports)),
        frozenset({"invariants", "agreement", "total-order", "acked-delivered", "sessions"}),
    ),
    "a stale leader proposes a slot again at its ballot": Mutant(
        SimConfig(0, replica_factory=_factory(RefreshesStaleProposals)),
        frozenset({"invariants", "agreement", "total-order"}),
    ),
    "a slot learned chosen by catch-up stays in the leader's window": Mutant(
        SimConfig(0, replica_factory=_factory(KeepsChosenSlotsInFlight)),
        frozenset({"invariants"}),
    ),
    "compaction deletes log segments above the durable snapshot": Mutant(
        SimConfig(0, driver_cls=DeletesSegmentsAboveTheSnapshot),
        frozenset({"invariants", "agreement", "total-order", "state"}),
    ),
    "the compaction floor passes the durable snapshot": Mutant(
        SimConfig(0, replica_factory=_factory(CompactsPastTheSnapshot)),
        frozenset({"invariants"}),
    ),
    "the snapshot omits the client sessions": Mutant(
        SimConfig(0, replica_factory=_factory(SnapshotsWithoutSessions)),
        frozenset({"fifo", "total-order", "sessions", "integrity", "state"}),
    ),
    "a membership change takes effect at once, the pipeline wider": Mutant(
        SimConfig(0, replica_factory=_factory(ChangesTakeEffectAtOnce)),
        frozenset({"config-agreement", "agreement", "invariants"}),
    ),
    "a learner's vote counted in a quorum": Mutant(
        SimConfig(0, replica_factory=_factory(CountsLearners)),
        frozenset({"agreement", "invariants", "total-order", "acked-delivered", "sessions"}),
    ),
    "a leader skips phase 1 with a new membership's voters": Mutant(
        SimConfig(0, replica_factory=_factory(SkipsPhase1ForNewVoters)),
        frozenset({"agreement", "invariants", "total-order", "acked-delivered", "sessions"}),
    ),
    "a node whose disk was lost rejoins under its old id": Mutant(
        SimConfig(0, driver_cls=RejoinsAfterDiskLoss),
        frozenset({"invariants", "agreement"}),
    ),
    "an install overwrites values accepted above the snapshot": Mutant(
        SimConfig(0, replica_factory=_factory(InstallClearsAccepted)),
        frozenset({"invariants", "agreement"}),
    ),
}

CASES = [(name, nodes) for name in sorted(MUTANTS) for nodes in MUTANTS[name].nodes]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "nodes"), CASES)
def test_simulator_catches_planted_bug(name: str, nodes: int) -> None:
    mutant = MUTANTS[name]
    found = first_violation(mutant, nodes)
    assert found is not None, f"the simulator missed the planted bug: {name}"
    seed, kinds = found
    assert kinds & mutant.kinds, f"seed {seed} shows {kinds}, expected one of {mutant.kinds}"


def test_the_real_replica_passes_the_seeds_that_catch_the_mutants() -> None:
    """The seeds that expose the mutants are clean with the real replica (no false alarms)."""
    for seed in range(1, 41):
        result = run(SimConfig(seed))
        assert result.ok, (seed, result.violations[:3], result.liveness_failures[:3])
