"""State invariants, checked at every step of every node (not only outcomes).

The outcome checkers (:mod:`paxos.sim.checkers`) see what was chosen and
delivered. Many bugs break an acceptor's state long before two different
values are ever seen chosen, or in runs where nobody looks at the slot again.
These checks look inside each replica through the driver's hooks, after every
flush and at every (re)start:

* **promises never go down**: once a node told anyone it promised a ballot (a
  Promise, an Accepted, a Nack naming it), the node's promise is never lower,
  across restarts too;
* **no accept below the promise**: an accept is recorded only at a ballot at
  least as high as everything promised before;
* **a chosen slot's accepted value is the chosen value**: a node that knows a
  slot is chosen never records another value as accepted there (its recorded
  chosen prefix is replayed from its accepted values after a restart);
* **one leader per ballot**: no two nodes, and no two incarnations of one node,
  lead at the same ballot;
* **one value per slot and ballot**: a node leading at a ballot never records two
  different values for one slot at that ballot (followers rely on it when they
  take the leader's commit notice for the value they accepted from it);
* **recovery is exact**: a restarted replica's promise and accepted values
  are exactly what its synced records say (above its snapshot), nothing more,
  nothing less;
* **a vote is never forgotten**: every slot a node acknowledged accepting
  (an Accepted it sent) stays accepted there, at that ballot or higher, across
  restarts and installs, unless it is at or below the node's floor;
* **the floor never passes the durable snapshot**: what a node compacted away
  exists only in its snapshot, so the snapshot must be on disk and cover it;
* **a leader's window holds only slots it does not know chosen**: a slot it learned
  chosen some other way than a quorum of Accepted (catch-up) must leave the window,
  or acceptors that compacted it (and no longer answer for it) pin the window for
  good and the cluster stalls (a review finding the outcome checkers could not see).

Each violation names the node, its incarnation, the tick and what was seen;
the run's seed is in the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from paxos.messages import Accept, Accepted, Message, Nack, Promise
from paxos.records import AcceptRecord, PromiseRecord, Record
from paxos.sim.checkers import Checker
from paxos.types import ZERO_BALLOT, Ballot, Value


class Invariants(Checker):
    """The state invariants above. The node driver feeds it; it never raises."""

    name = "invariants"

    def __init__(self) -> None:
        super().__init__()
        # node -> the highest ballot it ever vouched for in a message (all incarnations).
        self._vowed: dict[int, Ballot] = {}
        # node -> the highest ballot in the records it wrote (this incarnation + durable).
        self._recorded: dict[int, Ballot] = {}
        # ballot -> (node, incarnation) that led at it.
        self._leaders: dict[Ballot, tuple[int, int]] = {}
        # (node, ballot, slot) -> the value the node recorded there while leading at ballot.
        self._proposed: dict[tuple[int, Ballot, int], Value] = {}
        # node -> slot -> the highest ballot it sent an Accepted for (above its floor).
        self._votes: dict[int, dict[int, Ballot]] = {}
        # (node, ballot, slot) of every Accept a node sent as leader.
        self._sent_accepts: set[tuple[int, Ballot, int]] = set()

    # ------------------------------------------------------------------ hooks

    def started(
        self,
        node: int,
        incarnation: int,
        replica: Any,
        records: Sequence[Record],
        tick: int,
        snapshot_slot: int = 0,
    ) -> None:
        """A (re)start from ``records`` (the durable ones) and a snapshot at
        ``snapshot_slot``: recovery must be exact."""
        ballot, accepted = _replay(records, snapshot_slot)
        self._recorded[node] = ballot
        # A proposal that neither reached the disk nor left the node died with the crash
        # (a leader whose own promise was a phase-1 quorum, q1 = 1, takes over and
        # proposes before its ballot is durable): the node may use that ballot again.
        durable = {(r.ballot, r.slot) for r in records if isinstance(r, AcceptRecord)}
        for key in [k for k in self._proposed if k[0] == node]:
            if (key[1], key[2]) not in durable and key not in self._sent_accepts:
                del self._proposed[key]
        where = f"node {node} (incarnation {incarnation})"
        got_ballot = getattr(replica, "ballot", None)
        got_accepted = getattr(replica, "accepted", None)
        if got_ballot is not None and got_ballot != ballot:
            self.report(tick, f"{where} recovered promise {got_ballot}, its records say {ballot}")
        if got_accepted is not None and dict(got_accepted) != accepted:
            wrong = sorted(
                s for s in set(got_accepted) | set(accepted)
                if got_accepted.get(s) != accepted.get(s)
            )
            self.report(tick, f"{where} recovered other accepted values than its records, "
                        f"slots {wrong[:5]}")
        self._check_promise(node, incarnation, replica, tick)
        self._check_votes(node, incarnation, replica, tick, snapshot_slot)

    def appended(
        self, node: int, incarnation: int, replica: Any, records: Iterable[Record], tick: int
    ) -> None:
        """Records about to be written (before the sync)."""
        where = f"node {node} (incarnation {incarnation})"
        recorded = self._recorded.get(node, ZERO_BALLOT)
        leading = getattr(replica, "is_leader", False)
        my_ballot = getattr(replica, "my_ballot", None)
        for record in records:
            if leading and isinstance(record, AcceptRecord) and record.ballot == my_ballot:
                first = self._proposed.setdefault((node, record.ballot, record.slot), record.value)
                if first != record.value:
                    self.report(
                        tick,
                        f"{where} leads at {record.ballot} and recorded two values for slot "
                        f"{record.slot} at that ballot",
                    )
            if isinstance(record, PromiseRecord):
                recorded = max(recorded, record.ballot)
            elif isinstance(record, AcceptRecord):
                if record.ballot < recorded:
                    self.report(
                        tick,
                        f"{where} accepted slot {record.slot} at {record.ballot}, below its "
                        f"promise {recorded}",
                    )
                recorded = max(recorded, record.ballot)
        self._recorded[node] = recorded

    def sent(self, node: int, messages: Iterable[tuple[int, Message]]) -> None:
        """Messages that left: what they vouch for is a promise for good."""
        vowed = self._vowed.get(node, ZERO_BALLOT)
        votes = self._votes.setdefault(node, {})
        for _, msg in messages:
            if isinstance(msg, Accept):
                self._sent_accepts.add((node, msg.ballot, msg.slot))
            if isinstance(msg, Accepted) and msg.ballot > votes.get(msg.slot, ZERO_BALLOT):
                votes[msg.slot] = msg.ballot
            if isinstance(msg, Promise | Accepted):
                if msg.ballot > vowed:
                    vowed = msg.ballot
            elif isinstance(msg, Nack) and msg.promised > vowed:
                vowed = msg.promised
        self._vowed[node] = vowed

    def flushed(
        self,
        node: int,
        incarnation: int,
        replica: Any,
        slots: Iterable[int],
        tick: int,
        snapshot_slot: int = 0,
    ) -> None:
        """After a node's turn, in which ``slots`` were accepted or learned chosen;
        ``snapshot_slot``: the slot of the node's durable snapshot (0: none)."""
        self._check_promise(node, incarnation, replica, tick)
        self._check_votes(node, incarnation, replica, tick, snapshot_slot)
        chosen: dict[int, Value] = getattr(replica, "chosen", {})
        accepted: dict[int, tuple[Ballot, Value]] = getattr(replica, "accepted", {})
        for slot in slots:
            value = chosen.get(slot)
            entry = accepted.get(slot)
            if value is not None and entry is not None and entry[1] != value:
                self.report(
                    tick,
                    f"node {node} (incarnation {incarnation}) has another value accepted in "
                    f"slot {slot} than the one it knows was chosen",
                )
        inflight = getattr(replica, "inflight", None)
        if inflight and getattr(replica, "is_leader", False):
            commit = replica.commit
            stale = [slot for slot in inflight if slot <= commit]
            if stale:
                self.report(
                    tick,
                    f"node {node} (incarnation {incarnation}) leads with chosen slots "
                    f"{stale[:5]} still in its window (commit {commit})",
                )
        if getattr(replica, "leader", None) == node and getattr(replica, "is_leader", False):
            ballot = replica.my_ballot
            first = self._leaders.setdefault(ballot, (node, incarnation))
            if first != (node, incarnation):
                self.report(
                    tick,
                    f"node {node} (incarnation {incarnation}) leads at {ballot}, which node "
                    f"{first[0]} (incarnation {first[1]}) led at before",
                )

    # ------------------------------------------------------------------ helpers

    def _check_votes(
        self, node: int, incarnation: int, replica: Any, tick: int, snapshot_slot: int
    ) -> None:
        floor = getattr(replica, "floor", 0)
        where = f"node {node} (incarnation {incarnation})"
        if floor > snapshot_slot:
            self.report(
                tick, f"{where} compacted up to slot {floor}, beyond its durable snapshot "
                f"({snapshot_slot})"
            )
        votes = self._votes.get(node)
        if not votes:
            return
        accepted: dict[int, tuple[Ballot, Value]] = getattr(replica, "accepted", {})
        for slot in [s for s in votes if s <= floor]:
            del votes[slot]  # covered by a durable snapshot: chosen, nothing left to count
        for slot, ballot in list(votes.items()):
            entry = accepted.get(slot)
            if entry is None or entry[0] < ballot:
                self.report(
                    tick,
                    f"{where} forgot its vote for slot {slot} at {ballot} (it holds "
                    f"{entry[0] if entry else 'nothing'}; floor {floor})",
                )
                del votes[slot]  # reported once

    def _check_promise(self, node: int, incarnation: int, replica: Any, tick: int) -> None:
        ballot = getattr(replica, "ballot", None)
        vowed = self._vowed.get(node)
        if ballot is not None and vowed is not None and ballot < vowed:
            self.report(
                tick,
                f"node {node} (incarnation {incarnation}) promises {ballot}, below {vowed} "
                f"which it vouched for in a message",
            )


def _replay(
    records: Sequence[Record], snapshot_slot: int = 0
) -> tuple[Ballot, dict[int, tuple[Ballot, Value]]]:
    """What an acceptor's records say above its snapshot, computed independently of
    the replica."""
    ballot = ZERO_BALLOT
    accepted: dict[int, tuple[Ballot, Value]] = {}
    for record in records:
        if isinstance(record, PromiseRecord):
            ballot = max(ballot, record.ballot)
        elif isinstance(record, AcceptRecord):
            ballot = max(ballot, record.ballot)
            if record.slot > snapshot_slot:
                accepted[record.slot] = (record.ballot, record.value)
    return ballot, accepted
