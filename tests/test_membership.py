"""Membership changes through the log: the rules of a change, the alpha rule, learners,
removal of the leader, flexible quorums (paxos/multi/membership.py, paxos/multi/replica.py).

Scenario tests run on several seeds (the seed decides who leads: see tests/cluster.py).
The simulator runs random changes under faults in every seed (paxos/sim/operator.py,
tests/test_sim_acceptance.py); its planted bugs are in tests/test_mutations.py.
"""

from __future__ import annotations

import random

import msgpack
import pytest
from cluster import Cluster

from paxos.codec import MAX_NODE_ID
from paxos.messages import Accept, Accepted, Prepare
from paxos.multi.config import ReplicaConfig
from paxos.multi.membership import (
    Change,
    Membership,
    Op,
    change_command,
    read_change,
    restore_configs,
)
from paxos.multi.replica import Replica
from paxos.multi.sessions import Sessions
from paxos.multi.snapshot import SnapshotFormatError, build_snapshot, read_snapshot
from paxos.types import Ballot, Command

SEEDS = range(1, 21)
GENESIS = Membership.genesis((1, 2, 3))


# ---------------------------------------------------------------------- the rules


def test_a_change_applies_only_against_its_epoch() -> None:
    """Compare-and-set: two changes made against one membership cannot both apply."""
    first = GENESIS.apply(Change(0, Op.ADD_LEARNER, 4))
    assert first == Membership(1, (1, 2, 3), (4,), 0, 4)
    assert first.apply(Change(0, Op.ADD_LEARNER, 5)) is None  # made against epoch 0
    assert first.apply(Change(1, Op.PROMOTE, 4)) == Membership(2, (1, 2, 3, 4), (), 0, 4)


def test_ids_are_never_reused() -> None:
    """A node whose disk was lost must never vote again as that acceptor: a new member
    always gets an id above every id that was ever a member."""
    removed = GENESIS.apply(Change(0, Op.REMOVE, 3))
    assert removed is not None and removed.max_id == 3
    assert removed.apply(Change(1, Op.ADD_LEARNER, 3)) is None
    assert removed.apply(Change(1, Op.ADD_LEARNER, 2)) is None
    assert removed.apply(Change(1, Op.ADD_LEARNER, 4)) is not None


def test_a_node_id_the_wire_cannot_carry_is_refused() -> None:
    """Review finding: ``member add 4294967296`` (a typo) was chosen; that member could
    never speak, and max_id then blocked every later addition for good."""
    assert GENESIS.apply(Change(0, Op.ADD_LEARNER, MAX_NODE_ID + 1)) is None
    assert GENESIS.apply(Change(0, Op.ADD_LEARNER, MAX_NODE_ID)) is not None


def test_the_last_voter_stays_and_only_learners_are_promoted() -> None:
    one = Membership.genesis((1,))
    assert one.apply(Change(0, Op.REMOVE, 1)) is None
    assert GENESIS.apply(Change(0, Op.PROMOTE, 2)) is None  # a voter already
    assert GENESIS.apply(Change(0, Op.PROMOTE, 9)) is None  # not a member
    assert GENESIS.apply(Change(0, Op.REMOVE, 9)) is None


@pytest.mark.parametrize("voters", range(1, 8))
def test_every_phase1_quorum_meets_every_phase2_quorum(voters: int) -> None:
    for q2 in range(voters + 1):
        m = Membership.genesis(tuple(range(1, voters + 1)), q2)
        assert m.phase1_quorum + m.phase2_quorum == voters + 1
        assert 1 <= m.phase2_quorum <= voters and 1 <= m.phase1_quorum <= voters
    assert Membership.genesis((1, 2, 3, 4, 5)).phase2_quorum == 3  # 0: a majority
    assert GENESIS.apply(Change(0, Op.SET_QUORUM, 4)) is None  # more than the voters


def test_a_malformed_change_is_ignored_alike_everywhere() -> None:
    assert read_change(change_command(Change(3, Op.REMOVE, 2))) == Change(3, Op.REMOVE, 2)
    for body in (b"", b"\xc1", msgpack.packb([1, 99, 2]), msgpack.packb([1, 2]),
                 msgpack.packb([-1, 2, 3]), msgpack.packb(["a", 2, 3])):
        assert read_change(Command("", 0, b"\x04" + body)) is None


def test_a_snapshot_carries_the_memberships_after_its_slot() -> None:
    configs = [(5, GENESIS), (21, Membership(1, (1, 2, 3), (4,), 0, 4))]
    snap = build_snapshot(10, 7, Sessions(), b"app", configs)
    assert read_snapshot(snap.blob, 16, 16).configs == configs
    # A format-1 snapshot (before membership changes) is still read: the cluster's
    # starting membership governs.
    old = build_snapshot(10, 7, Sessions(), b"app")
    assert read_snapshot(old.blob, 16, 16).configs is None
    bad = msgpack.packb([2, 10, 7, Sessions().export(), b"", [[5, 0, [], [], 0, 0, []]]])
    with pytest.raises(SnapshotFormatError):
        read_snapshot(bad, 16, 16)
    with pytest.raises(ValueError):
        restore_configs([[5, 0, [1], [], 0, 1, []], [5, 1, [1], [], 0, 1, []]])  # not ascending


# ---------------------------------------------------------------------- the alpha rule


def test_a_change_governs_from_alpha_slots_after_it_is_chosen() -> None:
    c = Cluster(3, window=4, alpha=8)
    leader = c.elect()
    c.join(4)
    c.reconfigure(Op.ADD_LEARNER, 4)
    r = c.replicas[leader]
    (start, members) = r.configs[-1]
    chosen_at = next(
        slot for slot in range(1, r.commit + 1)
        if any(cmd.seq == 0 and cmd.payload[:1] == b"\x04" for cmd in r.chosen.get(slot, ()))
    )
    assert start == chosen_at + 8 and members.learners == (4,)
    if r.commit + 1 < start:
        assert r.current.learners == () and r.members_at(start).learners == (4,)
    c.tick(40)  # no load: the leader fills the alpha slots with no-ops
    assert r.commit + 1 >= start and r.current.learners == (4,)
    assert len(r.configs) == 1  # the old membership governs nothing any more: dropped


@pytest.mark.parametrize("seed", SEEDS)
def test_the_leader_never_has_a_slot_open_beyond_alpha(seed: int) -> None:
    """Its open slots are governed by memberships it knows: none beyond commit + alpha,
    even while a change is chosen and a busy queue fills the window."""
    c = Cluster(3, seed=seed, window=4, alpha=6)
    leader = c.elect()
    key = c.open_session("load")
    r = c.replicas[leader]
    c.join(4)
    ready, refused = r.reconfigure(Op.ADD_LEARNER, 4)
    assert refused is None
    c.apply(leader, ready)
    widest = 0
    for seq in range(1, 60):
        c.apply(leader, r.propose([Command(key, seq, b"x")]))
        if r.inflight:
            widest = max(widest, max(r.inflight) - r.commit)
        c.deliver_all()
        c.tick()
    assert 0 < widest <= 6
    assert [d.command.seq for d in c.delivered[4] if d.command.client == key] == list(
        range(1, 60)
    )


# ---------------------------------------------------------------------- learners


@pytest.mark.parametrize("seed", SEEDS)
def test_a_learner_catches_up_then_votes_after_its_promotion(seed: int) -> None:
    """Grow 3 -> 4: the new node learns the whole log as a learner, is promoted, and
    then counts: with two old voters down, the other two and it still choose."""
    c = Cluster(3, seed=seed)
    leader = c.elect()
    key = c.open_session("a")
    for seq in range(1, 11):
        c.propose(leader, Command(key, seq, b"before %d" % seq))
    c.tick(5)
    c.join(4)
    c.reconfigure(Op.ADD_LEARNER, 4)
    c.reconfigure(Op.PROMOTE, 4)
    c.tick(40)  # the promotion takes effect (the leader fills alpha slots with no-ops)
    assert c.replicas[leader].current.voters == (1, 2, 3, 4)
    down = next(n for n in (1, 2, 3) if n != leader)
    c.crash(down)  # 3 of 4 voters left: still a majority
    for seq in range(11, 21):
        c.propose(leader, Command(key, seq, b"after %d" % seq))
    c.tick(40)
    everyone = [n for n in c.replicas if n != down]
    for n in everyone:
        assert [d.command.seq for d in c.delivered[n] if d.command.client == key] == list(
            range(1, 21)
        ), n


def test_a_learners_vote_never_counts() -> None:
    """3 voters and a learner: the leader and the learner are not a quorum."""
    c = Cluster(3)
    leader = c.elect()
    key = c.open_session("a")
    c.join(4)
    c.reconfigure(Op.ADD_LEARNER, 4)
    c.tick(40)
    r = c.replicas[leader]
    assert r.current.learners == (4,)
    before = r.commit
    for other in (n for n in (1, 2, 3) if n != leader):
        c.cut |= {(leader, other), (other, leader)}
    c.propose(leader, Command(key, 1, b"x"))
    c.tick(5)
    learner = c.replicas[4]
    assert learner.accepted.get(before + 1) is not None  # the learner accepted it ...
    assert r.commit == before  # ... and that chose nothing


def test_a_learner_never_heard_from_is_not_promoted() -> None:
    """Found by hand: a learner whose process was never started passed the check while
    the log was shorter than promote_lag (it had no reported prefix at all)."""
    c = Cluster(3)
    leader = c.elect()
    c.reconfigure(Op.ADD_LEARNER, 4)  # (no replica 4 exists: it never started)
    _, refused = c.replicas[leader].reconfigure(Op.PROMOTE, 4)
    assert refused == "learner 4 is not caught up yet"


def test_a_learner_is_promoted_only_once_caught_up() -> None:
    """Promoting a node far behind would make quorums wait for its catch-up."""
    c = Cluster(3, promote_lag=4)
    leader = c.elect()
    key = c.open_session("a")
    c.join(4)
    c.reconfigure(Op.ADD_LEARNER, 4)
    c.crash(4)  # it stops catching up
    for seq in range(1, 30):
        c.propose(leader, Command(key, seq, b"x"))
    c.tick(10)
    _, refused = c.replicas[leader].reconfigure(Op.PROMOTE, 4)
    assert refused == "learner 4 is not caught up yet"
    c.down.discard(4)
    c.reconfigure(Op.PROMOTE, 4)


def test_a_node_that_joins_never_campaigns_before_it_votes() -> None:
    c = Cluster(3)
    c.elect()
    joiner = c.join(4)
    for n in (1, 2, 3):
        c.crash(n)
    sent = []
    for _ in range(200):
        ready = joiner.tick()
        sent += [m for _, m in ready.messages]
    assert not any(isinstance(m, Prepare) for m in sent) and not joiner.is_leader


# ---------------------------------------------------------------------- removal


@pytest.mark.parametrize("seed", SEEDS)
def test_the_leader_removed_steps_down_and_the_others_go_on(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    key = c.open_session("a")
    c.reconfigure(Op.REMOVE, leader)
    for _ in range(200):
        c.tick()
        if c.leader() not in (None, leader):
            break
    new = c.leader()
    assert new is not None and new != leader
    assert not c.replicas[leader].is_voter()
    for seq in range(1, 6):
        c.propose(new, Command(key, seq, b"after"))
    c.tick(20)
    for n in (x for x in (1, 2, 3) if x != leader):
        assert [d.command.seq for d in c.delivered[n] if d.command.client == key] == [
            1, 2, 3, 4, 5
        ]
    # The old leader no longer campaigns, however long it hears nobody.
    for n in (x for x in (1, 2, 3) if x != leader):
        c.crash(n)
    old = c.replicas[leader]
    for _ in range(200):
        assert not any(isinstance(m, Prepare) for _, m in old.tick().messages)


# ---------------------------------------------------------------------- phase 1


def test_a_new_memberships_voters_promise_before_the_leader_proposes_there() -> None:
    """Safety: a leader elected under one membership asks the voters of the next one to
    promise its ballot (from that membership's first slot) before it proposes there."""
    config = ReplicaConfig(nodes=(1, 2, 3), window=2)
    r = Replica(1, config, random.Random(1))
    r.configs = [
        (1, GENESIS),
        (3, Membership(1, (1, 4, 5), (), 0, 5)),  # (as if chosen; governs slot 3 on)
    ]
    r._refresh_members()
    r.election_elapsed = r.election_timeout
    pv = next(m for _, m in r.tick().messages if m.__class__.__name__ == "PreVote")
    from paxos.messages import PreVoteReply, Promise

    r.step(PreVoteReply(2, pv.ballot, True))
    takeover = r.step(Promise(2, r.my_ballot, 1, (), 0, 0))
    assert r.is_leader
    ready = r.propose([Command("", 0, b"\x05")])  # (a system command nobody applies)
    # Slots 1 and 2 are proposed (no-ops at the takeover: the next membership waits for
    # them), slot 3 waits: only we, of voters 1, 4, 5, promised our ballot yet (q1 is
    # 2). 4 and 5 are asked to, from slot 3.
    assert sorted(r.inflight) == [1, 2]
    prepares = [
        (dst, m) for dst, m in takeover.messages + ready.messages if isinstance(m, Prepare)
    ]
    assert sorted(dst for dst, m in prepares if m.from_slot == 3) == [4, 5]
    for slot in (1, 2):
        for voter in (2, 3):
            r.step(Accepted(voter, r.my_ballot, slot))
    assert r.commit == 2 and 3 not in r.inflight
    ready = r.step(
        Promise(4, r.my_ballot, 3, ((3, Ballot(1, 9), (Command("k#1", 1, b"v"),)),), 0, 0)
    )
    sent = [(dst, m) for dst, m in ready.eager + ready.messages if isinstance(m, Accept)]
    # Slot 3 carries the value voter 4 reported (it may be chosen), sent to 4 and 5 (then
    # slot 4 the command queued meanwhile).
    assert sorted(dst for dst, m in sent if m.slot == 3) == [4, 5]
    assert {m.value for _, m in sent if m.slot == 3} == {(Command("k#1", 1, b"v"),)}


# ---------------------------------------------------------------------- flexible quorums


@pytest.mark.parametrize("seed", SEEDS)
def test_a_phase2_quorum_of_two_chooses_with_two_of_five(seed: int) -> None:
    c = Cluster(5, seed=seed)
    leader = c.elect()
    key = c.open_session("a")
    c.reconfigure(Op.SET_QUORUM, 2)
    c.tick(40)
    r = c.replicas[leader]
    assert (r.current.phase2_quorum, r.current.phase1_quorum) == (2, 4)
    helper, *others = [n for n in c.replicas if n != leader]
    for n in others:
        c.crash(n)
    for seq in range(1, 6):
        c.propose(leader, Command(key, seq, b"x"))
    c.tick(10)
    assert [d.command.seq for d in c.delivered[helper] if d.command.client == key] == [
        1, 2, 3, 4, 5
    ]


# ---------------------------------------------------------------------- leadership transfer


@pytest.mark.parametrize("seed", SEEDS)
def test_a_planned_transfer_hands_over_without_waiting_for_an_election_timeout(
    seed: int,
) -> None:
    """The leader stops proposing, lets its open slots be chosen and the target learn
    them, then tells it to campaign: the target leads within a few ticks (an election
    would wait at least election_min_ticks of silence first), and what was queued
    meanwhile is committed by the new leader, once."""
    c = Cluster(3, seed=seed)
    leader = c.elect()
    key = c.open_session("a")
    target = next(n for n in (1, 2, 3) if n != leader)
    old = c.replicas[leader]
    for seq in range(1, 6):
        c.propose(leader, Command(key, seq, b"before"))
    ready, refused = old.transfer_leadership(target)
    assert refused is None
    c.apply(leader, ready)
    c.propose(leader, Command(key, 6, b"during"))  # queued: no new slot while handing over
    ticks = 0
    while not c.replicas[target].is_leader:
        c.tick()
        ticks += 1
        assert ticks < c.config.election_min_ticks, "the handover waited like an election"
    assert not old.is_leader
    for seq in range(7, 9):
        c.propose(target, Command(key, seq, b"after"))
    c.tick(20)
    for n in (1, 2, 3):
        assert [d.command.seq for d in c.delivered[n] if d.command.client == key] == list(
            range(1, 9)
        ), n


def test_a_transfer_is_refused_to_a_non_voter_and_abandoned_if_the_target_is_down() -> None:
    c = Cluster(3)
    leader = c.elect()
    r = c.replicas[leader]
    assert r.transfer_leadership(9)[1] == "node 9 is not a voter"
    assert r.transfer_leadership(leader)[1] == "already the leader"
    target = next(n for n in (1, 2, 3) if n != leader)
    c.crash(target)
    ready, refused = r.transfer_leadership(target)
    assert refused is None
    c.apply(leader, ready)
    c.tick(c.config.election_max_ticks + 1)
    assert r.is_leader and r.transfer_to is None  # it leads on
    key = c.open_session("a")
    c.propose(leader, Command(key, 1, b"x"))
    c.tick(5)
    assert [d.command.seq for d in c.delivered[leader] if d.command.client == key] == [1]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_removed_leader_hands_over_instead_of_leaving_an_election_to_time_out(
    seed: int,
) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    c.reconfigure(Op.REMOVE, leader)
    r = c.replicas[leader]
    for _ in range(100):  # it proposes no-ops until its removal is in effect
        if not r.is_voter():
            break
        c.tick()
    assert not r.is_voter()
    # Then it hands over: another voter leads within a few ticks (an election would
    # first wait election_min_ticks of silence).
    ticks = 0
    while c.leader() in (None, leader):
        c.tick()
        ticks += 1
        assert ticks < c.config.election_min_ticks, "the removed leader left an election"
    assert r.transfer_to is None and not r.is_leader


def test_a_new_member_s_address_and_key_travel_in_the_log() -> None:
    """The membership is stored in the cluster itself: where an added node listens and
    its public key are part of the change, so every member can connect to it."""
    change = Change(0, Op.ADD_LEARNER, 4, "10.0.0.4:7004", "k" * 40)
    assert read_change(change_command(change)) == change
    added = GENESIS.apply(change)
    assert added is not None and added.endpoints == ((4, "10.0.0.4:7004", "k" * 40),)
    removed = added.apply(Change(1, Op.REMOVE, 4))
    assert removed is not None and removed.endpoints == ()
    assert GENESIS.apply(Change(0, Op.ADD_LEARNER, 4, "h" * 300, "")) is None
    snap = build_snapshot(1, 0, Sessions(), b"", [(1, added)])
    assert read_snapshot(snap.blob, 16, 16).configs == [(1, added)]
