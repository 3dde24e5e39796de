"""Review findings in the membership change's core (paxos/multi/replica.py,
paxos/multi/membership.py): each test failed on the reviewed code (b2d80b2..bdf0375)
and passes with its fix."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from cluster import Cluster

from paxos.messages import TimeoutNow
from paxos.multi.membership import Op
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica

SEEDS = range(1, 11)


class _Recording(Cluster):
    """Records every membership change each node applied (Ready.configs)."""

    def __init__(self, *args: object, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.replica_changes: dict[int, list[tuple[int, int, object]]] = {}

    def apply(self, node: int, ready: Ready) -> None:
        self.replica_changes.setdefault(node, []).extend(ready.configs)
        super().apply(node, ready)


# ------------------------------------------------------------------ finding: alpha is local
def test_the_slot_a_change_takes_effect_does_not_depend_on_local_tuning() -> None:
    """The alpha rule's distance is ReplicaConfig.alpha, default ``window`` (a pipeline
    tuning knob, ReplicaConfig.alpha_slots), read from each node's *local* config at
    apply time (Replica._effective_slot). Nothing records it in the log, the snapshot
    (whose configs do carry starts) or the node identity, and nothing checks that all
    nodes agree. A node restarted with another window (a retune, or a release with
    another default) replays the same log into other memberships for the same slots
    than its peers -- the whole safety argument (membership.py: every replica computes
    the same M(s)) then fails; with a REMOVE, two leaders can count disjoint quorums
    for one slot. Either the effective slot must not depend on local config, or such a
    restart must be refused."""
    c = _Recording(3, window=4)
    leader = c.elect()
    c.join(4)
    c.reconfigure(Op.ADD_LEARNER, 4)
    c.tick(30)
    other = next(n for n in (1, 2, 3) if n != leader)
    assert c.replica_changes[leader] and c.disks[other]
    # What the peers computed: the change's (chosen at, first slot governed).
    peers = {(at, start) for at, start, _ in c.replica_changes[leader]}
    # The node restarts from its own disk with the window retuned 4 -> 16.
    retuned = replace(c.config, window=16)
    try:
        again = Replica(other, retuned, random.Random(1), records=list(c.disks[other]))
    except ValueError:
        return  # refused: fine
    replay = again.tick()  # the durable prefix is delivered again on the first tick
    it = {(at, start) for at, start, _ in replay.configs}
    assert it == peers, (
        f"(chosen at, governs from): the peers {sorted(peers)}, the same node replaying "
        f"its own log with window=16 {sorted(it)}: for the slots in between, it counts "
        f"other voters than they do"
    )


# ------------------------------------------------------------------ finding: stale TimeoutNow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_late_timeout_now_of_an_abandoned_transfer_does_not_depose_the_leader(
    seed: int,
) -> None:
    """on_timeout_now guards against a stale TimeoutNow only by ballot ("a stale one (of
    a leader since deposed) must not make anybody campaign"). But an abandoned transfer
    (the target did not take over within an election timeout: the leader leads on at
    the same ballot) leaves its TimeoutNow valid for good: delivered late (the network
    may delay or replay it), it makes the target campaign at once without a pre-vote,
    and the others -- whose handed_to was never cleared -- promise it although their
    leader is live. The leader is deposed for nothing (one needless election per
    replay; the simulator's network replays old messages)."""
    c = Cluster(3, seed=seed)
    leader = c.elect()
    target = next(n for n in (1, 2, 3) if n != leader)
    r = c.replicas[leader]
    ready, refused = r.transfer_leadership(target)
    assert refused is None
    c.apply(leader, ready)
    held: list[TimeoutNow] = []
    # Everything reaches everybody, but the TimeoutNow to the target is held back.
    for _ in range(c.config.election_max_ticks + 5):
        for node, replica in c.replicas.items():
            c.apply(node, replica.tick())
        while c.inbox:
            dst, msg = c.inbox.popleft()
            if isinstance(msg, TimeoutNow) and dst == target:
                held.append(msg)
                continue
            c.apply(dst, c.replicas[dst].step(msg))
    assert held, "the leader never sent its TimeoutNow"
    assert r.is_leader and r.transfer_to is None  # abandoned: it leads on
    c.tick(50)
    assert c.leader() == leader
    c.apply(target, c.replicas[target].step(held[0]))  # late
    c.deliver_all()
    c.tick(5)
    assert c.leader() == leader, (
        f"a TimeoutNow of a transfer abandoned {50 + c.config.election_max_ticks} ticks "
        f"ago deposed the live leader {leader}: now {c.leader()} leads"
    )


# ------------------------------------------------------------------ finding: id beyond the wire
def test_a_node_id_the_wire_cannot_carry_is_refused() -> None:
    """ChangeMembers.node is a UINT (broadcast/protocol.py register(84, ...)) and
    Membership.apply only asks for ``node > max_id``: ``paxos member add 4294967296 ...``
    (a typo) is chosen. Every Paxos message and Members reply names node ids with
    codec NODE_ID (<= MAX_NODE_ID = 2**31 - 1), so that member can never speak, and
    ``Members`` naming it no longer decodes at any client (member list / change_members
    / refresh_members see no answer). Worse, ids are never reused: max_id is now
    beyond every id the wire carries, so the cluster can never add a working member
    again (removing the bad learner leaves max_id where it is)."""
    import broadcast.protocol  # noqa: F401  (registers Members)
    from broadcast.protocol import Members
    from paxos.codec import MAX_NODE_ID, CodecError, decode, encode

    c = Cluster(3)
    leader = c.elect()
    r = c.replicas[leader]
    ready, refused = r.reconfigure(Op.ADD_LEARNER, MAX_NODE_ID + 1)
    c.apply(leader, ready)
    if refused is not None:
        return  # refused: the fix
    c.tick(30)
    latest = r.latest
    assert MAX_NODE_ID + 1 in latest.learners
    problems = []
    try:
        decode(encode(Members(1, leader, latest.epoch, r.current.epoch, latest.voters,
                              latest.learners, latest.phase1_quorum,
                              latest.phase2_quorum, ())))
    except CodecError as exc:
        problems.append(f"member list no longer decodes: {exc}")
    c.reconfigure(Op.REMOVE, MAX_NODE_ID + 1)  # the operator notices and removes it
    _, refused = c.replicas[c.elect()].reconfigure(Op.ADD_LEARNER, 4)
    if refused is not None:
        problems.append(f"no node can ever be added again: {refused}")
    assert not problems, problems
