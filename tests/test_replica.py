"""Scenario tests for the Multi-Paxos replica: one test per safety or liveness rule."""

from __future__ import annotations

import random

import pytest
from cluster import SEEDS, Cluster

from paxos.messages import (
    Accept,
    Accepted,
    Heartbeat,
    Nack,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
)
from paxos.multi.config import ReplicaConfig
from paxos.multi.replica import Replica, Role
from paxos.multi.sessions import Sessions, open_command
from paxos.records import AcceptRecord, CommitRecord, PromiseRecord
from paxos.types import NOOP, Ballot, Command

CONFIG = ReplicaConfig(nodes=(1, 2, 3))


def fresh(node: int = 1, records: tuple = ()) -> Replica:  # type: ignore[type-arg]
    return Replica(node, CONFIG, random.Random(node), records=records)


def cmd(seq: int, client: str = "c") -> Command:
    return Command(client, seq, b"p%d" % seq)


def opened(*names: str) -> list[Command]:
    """Open commands for ``names``: applied in this order on a fresh log, they open
    sessions ``names[0]#1``, ``names[1]#2``, ..."""
    return [open_command(name, b"%016d" % i) for i, name in enumerate(names)]


# --- acceptor -----------------------------------------------------------------------------


def test_promise_is_persisted_in_the_same_ready_as_the_reply() -> None:
    r = fresh()
    ready = r.step(Prepare(2, Ballot(1, 2), 1))
    assert ready.records == [PromiseRecord(Ballot(1, 2))]
    assert [type(m) for _, m in ready.messages] == [Promise]
    assert r.ballot == Ballot(1, 2)


def test_prepare_below_the_promise_is_refused() -> None:
    r = fresh()
    r.step(Prepare(2, Ballot(5, 2), 1))
    ready = r.step(Prepare(3, Ballot(4, 3), 1))
    assert ready.records == []
    assert ready.messages == [(3, Nack(1, Ballot(4, 3), Ballot(5, 2)))]


def test_accept_below_the_promise_is_refused_and_not_recorded() -> None:
    r = fresh()
    r.step(Prepare(2, Ballot(5, 2), 1))
    ready = r.step(Accept(3, Ballot(4, 3), 1, (cmd(1),), 0))
    assert ready.records == []
    assert ready.messages == [(3, Nack(1, Ballot(4, 3), Ballot(5, 2)))]
    assert 1 not in r.accepted


def test_accept_is_persisted_before_the_accepted_reply() -> None:
    r = fresh()
    value = (cmd(1),)
    ready = r.step(Accept(2, Ballot(1, 2), 1, value, 0))
    assert ready.records == [AcceptRecord(1, Ballot(1, 2), value)]
    assert ready.messages == [(2, Accepted(1, Ballot(1, 2), 1))]
    # A retransmitted Accept is answered again without writing again.
    again = r.step(Accept(2, Ballot(1, 2), 1, value, 0))
    assert again.records == [] and again.messages == [(2, Accepted(1, Ballot(1, 2), 1))]


def test_promise_reports_the_highest_accepted_value_of_each_slot() -> None:
    r = fresh()
    r.step(Accept(2, Ballot(1, 2), 1, (cmd(1),), 0))
    r.step(Accept(3, Ballot(2, 3), 1, (cmd(2),), 0))
    r.step(Accept(3, Ballot(2, 3), 2, (cmd(3),), 0))
    r.election_elapsed = CONFIG.election_min_ticks  # leader 3 went quiet
    ready = r.step(Prepare(2, Ballot(3, 2), 2))
    ((_, promise),) = ready.messages
    assert isinstance(promise, Promise)
    assert promise.entries == ((2, Ballot(2, 3), (cmd(3),)),)  # only slots >= from_slot


def test_restarted_acceptor_keeps_its_promise_and_accepted_values() -> None:
    r = fresh()
    records = []
    records += r.step(Prepare(2, Ballot(5, 2), 1)).records
    records += r.step(Accept(2, Ballot(5, 2), 1, (cmd(1),), 0)).records
    again = fresh(records=tuple(records))
    assert again.ballot == Ballot(5, 2)
    assert again.accepted == {1: (Ballot(5, 2), (cmd(1),))}
    ready = again.step(Accept(3, Ballot(4, 3), 2, (cmd(2),), 0))
    assert isinstance(ready.messages[0][1], Nack)


# --- leader election, stickiness ------------------------------------------------------------


def test_candidate_persists_its_own_promise_before_prepare_leaves() -> None:
    r = fresh()
    ready = r.tick()
    while not any(isinstance(m, PreVote) for _, m in ready.messages):
        ready = r.tick()
    (_, pv), _ = ready.messages
    ready = r.step(PreVoteReply(2, pv.ballot, True))
    assert r.role is Role.CANDIDATE
    assert ready.records == [PromiseRecord(r.my_ballot)]
    assert all(isinstance(m, Prepare) for _, m in ready.messages)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_restarted_node_never_reuses_a_ballot(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    used = c.replicas[leader].my_ballot
    c.crash(leader)
    c.restart(leader)
    r = c.replicas[leader]
    # Every campaign it can start from here goes above the ballot it used.
    r.election_elapsed = r.election_timeout
    ready = r.tick()
    (_, pv) = next((d, m) for d, m in ready.messages if isinstance(m, PreVote))
    r.step(PreVoteReply(next(iter(r.peers)), pv.ballot, True))
    assert r.role is Role.CANDIDATE and r.my_ballot > used


@pytest.mark.parametrize("seed", SEEDS)
def test_follower_with_a_live_leader_ignores_other_candidates(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    follower = next(n for n in c.replicas if n != leader)
    other = next(n for n in c.replicas if n not in (leader, follower))
    r = c.replicas[follower]
    high = Ballot(100, other)
    assert r.step(Prepare(other, high, 1)).messages == []
    assert r.ballot < high
    ready = r.step(PreVote(other, high))
    assert (other, PreVoteReply(follower, high, False)) in ready.messages


@pytest.mark.parametrize("seed", SEEDS)
def test_a_node_back_from_a_partition_does_not_depose_a_healthy_leader(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    lonely = next(n for n in c.replicas if n != leader)
    for other in c.replicas:
        if other != lonely:
            c.cut |= {(lonely, other), (other, lonely)}
    c.tick(300)  # the lonely node times out again and again
    assert c.replicas[leader].is_leader
    c.cut.clear()
    c.tick(100)
    assert c.leader() == leader
    assert c.replicas[lonely].leader == leader
    key = c.open_session(node=lonely)
    c.propose(lonely, cmd(1, key))
    c.tick(10)
    assert all(c.payloads(n) == [b"p1"] for n in c.replicas)


@pytest.mark.parametrize("seed", SEEDS)
def test_isolated_leader_steps_down_and_the_rest_elect_a_new_one(seed: int) -> None:
    c = Cluster(3, seed=seed)
    old = c.elect()
    for other in c.replicas:
        if other != old:
            c.cut |= {(old, other), (other, old)}
    c.tick(200)
    assert not c.replicas[old].is_leader  # check-quorum
    leaders = [n for n, r in c.replicas.items() if r.is_leader]
    assert len(leaders) == 1 and leaders[0] != old


@pytest.mark.parametrize("seed", SEEDS)
def test_a_deposed_leader_gets_nothing_chosen(seed: int) -> None:
    c = Cluster(3, seed=seed)
    old = c.elect()
    for other in c.replicas:
        if other != old:
            c.cut |= {(old, other), (other, old)}
    c.tick(200)
    new = next(n for n, r in c.replicas.items() if r.is_leader)
    # The old leader, before it noticed, tries to get a command chosen.
    stale = Accept(old, c.replicas[old].my_ballot, 1, (cmd(1, "stale"),), 0)
    for other in c.replicas:
        if other != old:
            ((_, reply),) = c.replicas[other].step(stale).messages
            assert isinstance(reply, Nack)
    c.cut.clear()
    key = c.open_session(node=new)
    c.propose(new, cmd(1, key))
    c.tick(50)
    for n in c.replicas:
        assert c.payloads(n) == [b"p1"]


# --- new leader -------------------------------------------------------------------------------


def test_new_leader_adopts_highest_accepted_value_and_fills_gaps_with_noops() -> None:
    r = fresh(1)
    r.election_elapsed = r.election_timeout
    ready = r.tick()
    pv = next(m for _, m in ready.messages if isinstance(m, PreVote))
    r.step(PreVoteReply(2, pv.ballot, True))
    b = r.my_ballot
    low, high = Ballot(0, 3), Ballot(0, 2)  # both below b
    entries = ((1, low, (cmd(1, "x"),)), (3, high, (cmd(1, "y"),)))
    ready = r.step(Promise(2, b, 1, entries, 0, 0))
    assert r.is_leader
    proposed = {m.slot: m.value for _, m in ready.eager + ready.messages if isinstance(m, Accept)}
    assert proposed == {1: (cmd(1, "x"),), 2: NOOP, 3: (cmd(1, "y"),)}
    # Competing reports: the higher ballot wins.
    r2 = fresh(1)
    r2.election_elapsed = r2.election_timeout
    pv = next(m for _, m in r2.tick().messages if isinstance(m, PreVote))
    r2.step(PreVoteReply(2, pv.ballot, True))
    r2.accepted[1] = (Ballot(0, 3), (cmd(1, "old"),))
    r2.promise_entries[1] = [(1, Ballot(0, 3), (cmd(1, "old"),))]  # its own report
    ready = r2.step(Promise(2, r2.my_ballot, 1, ((1, Ballot(0, 4), (cmd(1, "new"),)),), 0, 0))
    proposed = {m.slot: m.value for _, m in ready.eager + ready.messages if isinstance(m, Accept)}
    assert proposed == {1: (cmd(1, "new"),)}


# --- learning and sessions ---------------------------------------------------------------------


def test_follower_learns_from_commit_only_values_accepted_at_that_ballot() -> None:
    r = fresh(1)
    r.step(Accept(2, Ballot(1, 2), 1, (cmd(1, "old"),), 0))
    # A later leader chose something else in slot 1; its commit notice must not
    # make us deliver the value we accepted from the old ballot.
    ready = r.step(Heartbeat(3, Ballot(2, 3), 1))
    assert ready.chosen == []
    assert r.commit == 0
    r.step(Accept(3, Ballot(2, 3), 1, (cmd(1, "new"),), 0))
    ready = r.step(Heartbeat(3, Ballot(2, 3), 1))
    assert ready.chosen == [(1, (cmd(1, "new"),))]


@pytest.mark.parametrize("seed", SEEDS)
def test_lagging_replica_catches_up_after_restart(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    lag = next(n for n in c.replicas if n != leader)
    key = c.open_session()
    c.crash(lag)
    for i in range(1, 201):
        c.propose(leader, cmd(i, key))
    c.restart(lag)
    c.tick(100)
    assert c.payloads(lag) == c.payloads(leader)
    assert len(c.payloads(lag)) == 200


@pytest.mark.parametrize("seed", SEEDS)
def test_retries_are_delivered_once_and_in_client_order(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    follower = next(n for n in c.replicas if n != leader)
    k = c.open_session()
    c.propose(leader, cmd(1, k), cmd(2, k))
    c.propose(follower, cmd(2, k), cmd(3, k))  # a retry of 2 through another node, then 3
    c.propose(leader, cmd(5, k))  # 4 was lost: 5 must wait for it
    c.propose(leader, cmd(4, k), cmd(5, k))
    c.tick(20)
    for n in c.replicas:
        assert [d.command.seq for d in c.delivered[n]] == [1, 2, 3, 4, 5]
        assert [d.index for d in c.delivered[n]] == [1, 2, 3, 4, 5]
        assert c.replicas[n].outcome(k, 3) == 3
        assert c.replicas[n].outcome(k, 6) is None


def test_sessions_keep_outcomes_for_their_window_and_forget_older_ones() -> None:
    s = Sessions(window=100)
    s.apply(open_command("c", b"n" * 16))
    n = 1000
    for seq in range(1, n + 1):  # other clients' commands in between: one run each
        s.last["c#1"] = seq
        s.record("c#1", seq, 2 * seq, 1)
    assert s.outcome("c#1", n) == 2 * n
    assert all(s.outcome("c#1", q) == 2 * q for q in range(n - 100, n + 1))  # the window
    assert s.outcome("c#1", 1) == 0  # delivered, index forgotten
    assert s.outcome("c#1", n + 1) is None
    assert s.outcome("nobody", 1) is None
    assert len(s._runs["c#1"][0]) < 300  # bounded by the window, not the history
    s.apply(open_command("d", b"m" * 16))
    s.last["d#2"] = 500
    s.record("d#2", 1, 10, 500)  # a run of a whole batch is one entry
    assert s.outcome("d#2", 250) == 259


def test_a_single_node_cluster_commits_alone() -> None:
    config = ReplicaConfig(nodes=(1,))
    r = Replica(1, config, random.Random(1))
    for _ in range(config.election_max_ticks + 1):
        r.tick()
    assert r.is_leader
    ready = r.propose([*opened("c"), cmd(1, "c#1")])
    assert [d.index for d in ready.deliveries] == [1]
    assert ready.records  # persisted before delivered


@pytest.mark.parametrize("seed", SEEDS)
def test_a_restarted_node_replays_its_recorded_chosen_prefix_from_its_own_disk(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    key = c.open_session()
    for i in range(1, 41):
        c.propose(leader, cmd(i, key))
    c.tick(CONFIG.commit_record_ticks + 1)  # long enough for a CommitRecord everywhere
    for node in c.replicas:
        c.crash(node)
    lone = next(n for n in c.replicas if n != leader)
    c.restart(lone)
    c.tick(1)  # no peer is up: the prefix comes from the node's own log
    assert c.payloads(lone) == [b"p%d" % i for i in range(1, 41)]


@pytest.mark.parametrize("seed", SEEDS)
def test_promise_leaves_out_the_chosen_prefix_it_records_first(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    key = c.open_session()
    for i in range(1, 21):
        c.propose(leader, cmd(i, key))
    c.tick(10)
    follower = next(n for n in c.replicas if n != leader)
    r = c.replicas[follower]
    assert r.commit >= 20 and r.recorded_commit < r.commit
    r.election_elapsed = CONFIG.election_min_ticks  # the leader went quiet
    ready = r.step(Prepare(leader, Ballot(50, leader), 1))
    ((_, promise),) = ready.messages
    assert isinstance(promise, Promise)
    # The prefix it knows goes to disk before the Promise leaves (a crash could erase
    # it otherwise, while the candidate relies on it): the report leaves it out.
    assert CommitRecord(r.commit) in ready.records and r.recorded_commit == r.commit
    assert promise.entries == () and promise.commit == r.commit


@pytest.mark.parametrize("seed", SEEDS)
def test_a_candidate_far_behind_learns_the_settled_prefix_by_catch_up(seed: int) -> None:
    c = Cluster(3, seed=seed)
    leader = c.elect()
    behind = next(n for n in c.replicas if n != leader)
    key = c.open_session()
    c.crash(behind)
    for i in range(1, 31):
        c.propose(leader, cmd(i, key))
    c.crash(leader)
    c.restart(behind)
    c.tick(300)  # behind and the third node elect a leader; behind catches up
    expected = [b"p%d" % i for i in range(1, 31)]
    assert all(c.payloads(n) == expected for n in c.replicas if n not in c.down)


def test_ready_runs_summarise_deliveries_per_client() -> None:
    config = ReplicaConfig(nodes=(1,))
    r = Replica(1, config, random.Random(1))
    for _ in range(config.election_max_ticks + 1):
        r.tick()
    r.propose(opened("a", "b"))
    a, b = "a#1", "b#2"
    ready = r.propose([cmd(1, a), cmd(2, a), cmd(1, b), cmd(3, a), cmd(9, b)])
    assert [(d.command.client, d.command.seq, d.index) for d in ready.deliveries] == [
        (a, 1, 1),
        (a, 2, 2),
        (b, 1, 3),
        (a, 3, 4),
    ]
    assert ready.runs == [(a, 1, 1, 2), (b, 1, 3, 1), (a, 3, 4, 1)]
