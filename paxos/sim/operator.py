"""The simulated operator: membership changes at random moments of a run.

One operation at a time, each a short list of changes asked of whichever node
leads (retried until the leader's latest membership shows it, or until it can no
longer apply):

* **add**: a new node (a new id, an empty disk) starts, joins as a learner, and is
  promoted once the leader finds it caught up;
* **remove**: a random member (a voter or a learner) leaves;
* **remove the leader**: the leader proposes its own removal and steps down once
  the change is in effect;
* **replace**: a voter's disk is lost (it goes down and must never start again
  under its id, see NodeDriver.may_start); it is removed and a new node with a new
  id is added and promoted in its place;
* **quorum**: the phase-2 quorum size changes (flexible quorums);
* **transfer**: the leader hands leadership over to another voter (no membership
  change: it is asked once, and the run goes on whether it succeeds or not).

Every run gets at least one operation in its fault phase, so changes meet crashes,
partitions, pauses and lost messages. An operation under way at the heal phase is
finished then (the liveness bound covers it). Everything random comes from the
operator's own ``random.Random``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from paxos.multi.membership import Membership, Op
from paxos.sim.node import NodeDriver

#: Members at most (drivers created at most: MAX_NODES + the operations of a run).
MAX_MEMBERS = 7
#: A step is asked of the leader again this often while it is not done.
RETRY_TICKS = 10


class Operator:
    def __init__(
        self,
        rng: random.Random,
        drivers: list[NodeDriver],
        add_node: Callable[[], NodeDriver],
        fault_ticks: int,
        log: Callable[[int, str], None],
    ) -> None:
        self.rng = rng
        self.drivers = drivers
        self.add_node = add_node
        self.log = log
        #: Per-tick probability of a new operation once the last one is done.
        self.rate = rng.choice((0.002, 0.005, 0.01, 0.02))
        self.first_at = rng.randint(1, max(1, fault_ticks // 2))
        self.kind = ""
        self.steps: deque[tuple[Op, int]] = deque()
        self.next_try = 0
        self.operations = 0
        self.changes = 0
        self.kinds: dict[str, int] = {}
        #: Every membership a node has applied, by epoch (the operator remembers what it
        #: saw: a node that applied the newest one may be down right now).
        self.known: dict[int, Membership] = {}

    @property
    def busy(self) -> bool:
        return bool(self.steps)

    def tick(self, now: int, issuing: bool) -> None:
        for driver in self.drivers:
            replica = driver.replica
            if replica is not None:
                for _, members in replica.configs:
                    self.known.setdefault(members.epoch, members)
        if not self.steps:
            if issuing and (now == self.first_at or (
                now > self.first_at and self.rng.random() < self.rate
            )):
                self._start(now)
            return
        if now >= self.next_try:
            self.next_try = now + RETRY_TICKS
            self._try(now)

    # ------------------------------------------------------------------ operations

    def _leader(self) -> NodeDriver | None:
        for driver in self.drivers:
            replica = driver.replica
            if replica is not None and replica.is_leader:
                return driver
        return None

    def _in_effect(self) -> list[Membership]:
        """Every membership that governs, or will govern, a slot not chosen everywhere:
        those any node that is up still holds."""
        oldest = min(
            (d.replica.current.epoch for d in self.drivers if d.replica is not None),
            default=0,
        )
        return [m for epoch, m in self.known.items() if epoch >= oldest]

    def latest(self) -> Membership | None:
        """The newest membership any node that is up has applied."""
        return self.known[max(self.known)] if self.known else None

    def _start(self, now: int) -> None:
        latest = self.latest()
        leader = self._leader()
        if latest is None:
            return
        rng = self.rng
        kinds = ["add", "remove", "remove-leader", "replace", "quorum", "transfer"]
        kind = rng.choice(kinds)
        if kind == "transfer":
            others = [v for v in latest.voters if leader is not None and v != leader.node_id]
            if leader is not None and others:
                target = rng.choice(others)
                refused = leader.transfer(target)
                self.operations += 1
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                self.log(now, f"operator: transfer from {leader.node_id} to {target}: "
                         f"{refused or 'asked'}")
                return
            kind = "quorum"
        voters, learners = latest.voters, latest.learners
        if kind == "add" and len(latest.members) >= MAX_MEMBERS:
            kind = "remove"
        if kind in ("remove", "remove-leader", "replace") and len(voters) <= 2 and not learners:
            kind = "add" if len(latest.members) < MAX_MEMBERS else "quorum"
        if kind == "remove-leader" and (leader is None or len(voters) <= 2):
            kind = "quorum"
        # A lost disk is a lasting failure: in a membership whose quorums need every
        # voter, no slot (the replacement's own change included) could be chosen again.
        # Every membership still governing or about to govern a slot must spare it.
        spared = [
            v for v in voters
            if all(
                max(m.phase1_quorum, m.phase2_quorum) < len(m.voters)
                for m in self._in_effect()
                if v in m.voters
            )
        ]
        if kind == "replace" and not spared:
            kind = "quorum"
        steps: list[tuple[Op, int]] = []
        if kind == "add":
            new = self.add_node()
            steps = [(Op.ADD_LEARNER, new.node_id), (Op.PROMOTE, new.node_id)]
        elif kind == "remove":
            choices = list(learners) + (list(voters) if len(voters) > 2 else [])
            steps = [(Op.REMOVE, rng.choice(choices))]
        elif kind == "remove-leader":
            assert leader is not None
            steps = [(Op.REMOVE, leader.node_id)]
        elif kind == "replace":
            if len(voters) <= 2:
                kind = "remove"
                steps = [(Op.REMOVE, rng.choice(learners))]
            else:  # (spared is not empty: checked above)
                victim = rng.choice(spared)
                self.drivers[victim - 1].wipe()
                new = self.add_node()
                steps = [
                    (Op.REMOVE, victim),
                    (Op.ADD_LEARNER, new.node_id),
                    (Op.PROMOTE, new.node_id),
                ]
                self.log(now, f"operator: node {victim}'s disk is lost")
        else:
            # Every size is valid; those below 2 or above n - 1 leave no room for a lost
            # disk (see replace), so the operator asks for them less.
            sizes = [0, *range(2, len(voters))]
            q2 = rng.choice(sizes) if rng.random() < 0.8 else rng.randint(1, len(voters))
            steps = [(Op.SET_QUORUM, q2)]
        self.kind = kind
        self.steps = deque(steps)
        self.next_try = now
        self.operations += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.log(now, f"operator: {kind} {[(op.name, n) for op, n in steps]}")

    def _try(self, now: int) -> None:
        latest = self.latest()
        while self.steps and latest is not None and latest.shows(*self.steps[0]):
            self.steps.popleft()
            self.changes += 1
        if not self.steps:
            self.log(now, f"operator: {self.kind} done")
            return
        leader = self._leader()
        if leader is None:
            return
        op, node = self.steps[0]
        refused = leader.reconfigure(op, node)
        replica = leader.replica
        if (
            refused is not None
            and "does not apply" in refused
            and replica is not None
            and not replica.latest.shows(*self.steps[0])
        ):
            # Made impossible meanwhile (say, the node to promote was removed): skip.
            self.log(now, f"operator: {op.name} {node} skipped: {refused}")
            self.steps.popleft()

