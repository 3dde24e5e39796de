"""Regression tests: interleavings found by review that broke agreement or liveness.

Each replays, with real replicas and a hand-driven network (tests/handdriven.py),
a schedule that once made two nodes choose different values in a slot or left a
healthy cluster stalled; each now asserts it cannot happen.
"""

# ruff: noqa: E501, E701, E702, E731, F841

from handdriven import C, Cluster, M, Role

from paxos.records import CommitRecord


def test_a_chosen_slot_is_never_overwritten_by_a_stale_accept() -> None:
    """Scenario A: on_accept overwrites the accepted value of a slot already known chosen (learned by catch-up) with a stale leader's value at the node's promised ballot. The CommitRecord then replays the wrong value after a restart."""
    c = Cluster(5)
    # 1) elect some leader with everybody connected, choose a first command everywhere
    c.run(c.ids, 60)
    L = c.leader()[0]; print("leader", L, "ballot", c.r[L].my_ballot)
    c.propose(L, [C("a", 1)])
    c.run(c.ids, 10)
    others = [i for i in c.ids if i != L]
    X = others[0]            # victim: stays at L's ballot
    P_side = others[1:]      # three nodes that will elect a new leader without L and X
    B = c.r[L].my_ballot
    # 2) L proposes w in the next slot; every Accept is held in flight (not delivered yet)
    c.propose(L, [C("w", 1)])
    s = max(c.r[L].inflight); print("L proposed w in slot", s, "at", B)
    held = [x for x in c.bag if isinstance(x[2], M.Accept) and x[2].slot == s and x[1] == X]
    c.bag = []
    # 3) P_side elects a new leader among themselves (L and X cut off) and chooses v in slot s
    c.run(P_side, 80)
    P = c.leader(P_side)[0]; print("new leader", P, "ballot", c.r[P].my_ballot)
    c.propose(P, [C("v", 1)])
    c.run(P_side, 10)

    # 4) X hears P's heartbeat (does not promise P's ballot) and catches up slot s by catch-up
    c.tick([P], 5)
    c.deliver(lambda s_, d, m: s_ == P and d == X and isinstance(m, M.Heartbeat))
    for _ in range(4):
        c.deliver(lambda s_, d, m: {s_, d} == {P, X} and isinstance(m, (M.CatchupRequest, M.CatchupReply)))
    c.drop(lambda *a: True)

    # 5) X writes its CommitRecord (ticks), then the stale Accept(B, s, w) from L arrives
    while not any(isinstance(r, CommitRecord) and r.commit >= s for r in c.disk[X]):
        c.tick([X]); c.drop(lambda *a: True)
    for x in held: c.handle(X, c.r[X].step(x[2]))

    # 6) X crashes and restarts from its durable records
    c.crash(X); c.tick([X])
    assert not c.violations, c.violations
    assert c.r[X].chosen.get(s) == (C("v", 1),)


def test_a_leader_that_learns_a_foreign_choice_in_its_slot_steps_down() -> None:
    """Scenario B: a leader of ballot B that is behind learns slot s by catch-up (chosen at a higher ballot it never heard of), overwrites its own accepted value at B, and then announces commit >= s at B. A follower that accepted the leader's ORIGINAL proposal at B in slot s applies the commit-notice rule ("accepted at exactly the announcing ballot") and takes the wrong value.

    Each step asserts what it sets up, so that the scenario cannot silently stop reaching the rule (it did once: L was no longer behind when elected, so it never caught up while leading). With the step-down undone, F takes w and the agreement check fails."""
    c = Cluster(5)
    c.run(c.ids, 60)
    L0 = c.leader()[0]
    c.propose(L0, [C("a", 1)]); c.run(c.ids, 10)
    L, F, Y, Z = [i for i in c.ids if i != L0]
    # L misses slot 2, chosen by the others, who record it durably (CommitRecord) meanwhile:
    # their promises will tell L that 2 is settled, so L leads while it is behind.
    c.propose(L0, [C("a", 2)]); c.run([L0, F, Y, Z], 60)
    assert all(c.r[i].recorded_commit >= 2 for i in (L0, F, Y, Z)) and c.r[L].commit == 1

    # L0 goes silent; L times out first (a legal rng draw) and is elected by {L, F, Y}
    for i in (F, Y, Z): c.r[i].election_timeout = 29; c.r[i].election_elapsed = 0
    c.r[L].election_timeout = 15; c.r[L].election_elapsed = 0  # legal rng/timing outcome: L times out first
    def leader_traffic_only_LFY(s, d, m):
        return s in (L, F, Y) and d in (L, F, Y) and not isinstance(m, (M.CatchupRequest, M.CatchupReply))
    for _ in range(60):
        c.tick([L, F, Y]); c.deliver(leader_traffic_only_LFY, keep_rest=False)
        if c.r[L].role is Role.LEADER: break
    assert c.r[L].role is Role.LEADER
    B = c.r[L].my_ballot
    assert c.r[L].commit < c.r[L].known_commit  # L leads while it still has to catch up

    # L proposes w in slot 3; only F gets the Accept
    c.propose(L, [C("w", 1)])
    s = max(c.r[L].inflight)
    c.deliver(lambda s_, d, m: s_ == L and d == F and isinstance(m, M.Accept), keep_rest=False)
    c.bag = []
    assert c.r[F].accepted[s] == (B, (C("w", 1),))

    # {L0, Y, Z} elect a new leader and choose v in slot 3
    # realistic variant: L and F keep running (L<->F traffic flows; L's traffic to the others is lost)
    both = lambda s_, d, m: (s_ in (L0, Y, Z) and d in (L0, Y, Z)) or ({s_, d} == {L, F} and not isinstance(m, (M.CatchupRequest, M.CatchupReply)))
    for _ in range(100):
        c.tick()
        for _ in range(3): c.deliver(both, keep_rest=False)
        if [i for i in (L0, Y, Z) if c.r[i].role is Role.LEADER and c.r[i].my_ballot > B]: break
    P = next(i for i in (L0, Y, Z) if c.r[i].role is Role.LEADER and c.r[i].my_ballot > B)
    c.propose(P, [C("v", 1)])
    for _ in range(4):
        c.tick()
        for _ in range(3): c.deliver(both, keep_rest=False)
    assert c.r[P].chosen.get(s) == (C("v", 1),)
    assert c.r[L].role is Role.LEADER and c.r[L].commit < s  # L does not know yet

    # L (still leader at B) catches up from the P side; only catch-up traffic passes L<->{L0,Y,Z}
    cu = lambda s_, d, m: both(s_, d, m) or (isinstance(m, (M.CatchupRequest, M.CatchupReply)) and {s_, d} <= {L, L0, Y, Z})
    for _ in range(60):
        leading = c.r[L].role is Role.LEADER
        c.tick()
        for _ in range(3): c.deliver(cu, keep_rest=False)
        if c.r[L].commit >= s: break
    assert c.r[L].chosen.get(s) == (C("v", 1),)
    assert leading  # it learned slot s while it led: the rule under test had to act

    # L's next Heartbeat/Accept (ballot B, commit >= s) reaches F
    for _ in range(6):
        c.tick(); c.deliver(both, keep_rest=False)
    assert not c.violations, c.violations
    assert c.r[F].chosen.get(s) in (None, (C("v", 1),))


def test_settled_prefix_survives_crashes_of_the_nodes_that_knew_it() -> None:
    """Scenario C with the DEFAULT ReplicaConfig (commit_record_ticks=50): two crashes within one CommitRecord interval around an election leave a healthy 3-node cluster stalled forever."""
    c = Cluster(3)
    c.run(c.ids, 60)
    K = c.leader()[0]                       # old leader
    c.propose(K, [C("a", 1)]); c.run(c.ids, 10)
    A, L = [i for i in c.ids if i != K]
    while c.r[A].now % 50 != 1: c.run(c.ids, 1)   # just after a CommitRecord opportunity
    c.bag = []
    # K chooses slot 2 with A's vote and tells A (commit notice); L hears nothing of it.
    c.propose(K, [C("a", 2)])
    c.deliver(lambda s, d, m: s == K and d == A and isinstance(m, M.Accept), keep_rest=False)
    c.deliver(lambda s, d, m: s == A and d == K and isinstance(m, M.Accepted), keep_rest=False)
    c.deliver(lambda s, d, m: s == K and d == A and isinstance(m, M.Commit), keep_rest=False); c.bag = []

    c.crash(K); down = {K}                  # K loses power; its CommitRecord still says 1
    # A and L: L's election (L times out first) - A promises with commit=2
    c.r[L].election_elapsed = 0; c.r[L].election_timeout = 15   # an allowed rng draw
    c.r[A].election_elapsed = 0; c.r[A].election_timeout = 29
    for _ in range(49):
        c.tick([A, L])
        for _ in range(3):
            c.deliver(lambda s, d, m: {s, d} == {A, L} and not isinstance(m, M.CatchupRequest), keep_rest=False)
        c.bag = []
        if c.r[L].role is Role.LEADER: break

    c.crash(A)                              # A loses power before its next CommitRecord
    for t in range(5000):
        c.tick()
        for _ in range(4): c.deliver()
        if t % 100 == 0 and c.leader(): c.propose(c.leader()[0], [C("z", t // 100 + 1)])

    assert c.leader(), "no leader"
    assert all(c.r[i].commit >= 40 for i in c.ids), {i: c.r[i].commit for i in c.ids}


# --- the checks, checked: each scenario fails with its fix undone -------------------------

import handdriven  # noqa: E402
import pytest  # noqa: E402
from test_mutations import KeepsLeadingWhenDeposed, OverwritesAChosenSlot  # noqa: E402


@pytest.mark.parametrize(
    ("scenario", "mutant"),
    [
        (test_a_chosen_slot_is_never_overwritten_by_a_stale_accept, OverwritesAChosenSlot),
        (test_a_leader_that_learns_a_foreign_choice_in_its_slot_steps_down, KeepsLeadingWhenDeposed),
    ],
)
def test_each_scenario_fails_with_its_fix_undone(scenario, mutant, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(handdriven, "Replica", mutant)
    with pytest.raises(AssertionError, match="AGREEMENT"):
        scenario()


def test_a_candidate_never_drops_a_reported_value_it_counts_the_promise_of() -> None:
    """Scenario D (review, second session): a candidate dropped reported entries beyond the
    promiser's commit + 2 * MAX_SLOTS_AHEAD, but that commit was the promiser's last
    CommitRecord, which lags far behind a node that caught up by messages. The dropped
    entry was chosen; the new leader put another value there. (Scaled: slots_ahead is 64
    here, 2**14 by default; the schedule is the same.)"""
    n_slots = 2 * 64 + 40  # chosen while C is away
    c = Cluster(3, slots_ahead=64)
    c.run([1, 2, 3], 120)
    (A,) = c.leader()
    B, Cn = [i for i in (1, 2, 3) if i != A]
    allow = lambda ns: (lambda s, d, m: s in ns and d in ns)
    def settle(ns, rounds=50):
        for _ in range(rounds):
            if not c.bag: return
            c.deliver(allow(ns), keep_rest=False)
    for i in range(n_slots):  # C away: A and B choose
        c.propose(A, [C("k", i + 1)]); settle({A, B})
    c.crash(Cn)  # C restarts from its disk and catches up by messages only
    c.tick([A]); c.tick([Cn])
    for _ in range(10_000):
        if not c.bag: break
        c.deliver(lambda s, d, m: True, keep_rest=False)
    rc = c.r[Cn]
    # Caught up by messages. (Since the fix it also recorded a chosen prefix on the way,
    # whenever what it accepted ran slots_ahead beyond the recorded one.)
    assert rc.commit >= n_slots
    c.bag = []
    c.propose(A, [C("v", 1, b"CHOSEN")])  # B cut off: A + C choose it
    c.deliver(lambda s_, d, m: s_ == A and d == Cn, keep_rest=False)
    c.deliver(lambda s_, d, m: s_ == Cn and d == A, keep_rest=False)
    s = max(c.r[A].chosen)
    assert c.r[A].chosen[s] == (C("v", 1, b"CHOSEN"),)
    c.bag = []  # A's commit notice is lost; A crashes for good
    c.tick([Cn], n=c.cfg.election_min_ticks)  # C would now grant a prevote
    for _ in range(60):
        c.tick([B]); c.deliver(allow({B, Cn}), keep_rest=False)
        if c.r[B].role is Role.LEADER: break
    c.propose(B, [C("w", 1, b"OTHER")])
    for _ in range(3):
        settle({B, Cn}); c.tick([B, Cn], 5)
    assert not c.violations, c.violations
    assert c.r[B].chosen.get(s) in (None, (C("v", 1, b"CHOSEN"),))
