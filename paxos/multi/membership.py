"""Cluster membership, changed through the log (Lamport's reconfigurable state machine).

A :class:`Membership` names the **voters** (the acceptors whose votes count), the
**learners** (members that receive the log and vote in nothing), the phase-2 quorum
size (flexible quorums: any phase-1 quorum meets any phase-2 quorum) and the
highest node id ever a member (ids are never reused).

A change is a system command in the log (``seq == 0``, tag :data:`CONFIG`): add a
learner, promote a learner, remove a member, set the phase-2 quorum. It names the
epoch it was made against and applies only if that is still the latest one
(compare-and-set: two changes made concurrently cannot both apply).

**The alpha rule.** A change chosen at slot ``i`` governs slots ``i + alpha`` and
up. So the membership of slot ``s`` is a function of the values chosen in slots
``<= s - alpha``, and a leader proposes in ``s`` only once its chosen prefix
reaches ``s - alpha`` (its pipeline never exceeds alpha).

Safety argument (why no two quorums can choose different values in one slot).
By induction on the slot: suppose every slot below ``s`` has at most one chosen
value. Then every replica and every leader that knows the chosen prefix up to
``s - alpha`` computes the same membership ``M(s)`` from it, and nobody
computes ``M(s)`` any other way (the rule above). A value is chosen in ``s`` only
by a phase-2 quorum of ``M(s)``'s voters (the leader counts only those), and a
leader proposes in ``s`` only after a phase-1 quorum of ``M(s)``'s voters has
promised its ballot and reported what it accepted there (a leader whose ballot
was promised under an older membership asks the new voters again before it
proposes in the new membership's first slot). With ``q1 + q2 > n`` any such
phase-1 quorum meets any such phase-2 quorum, so single-decree Paxos's argument
holds in ``s`` unchanged: a later ballot adopts the value chosen at an earlier
one. Learners never count, so adding one cannot shrink anybody's quorum; a
voter removed from ``M(s)`` may still accept in ``s`` (harmless: uncounted).

Identity: a node whose disk was lost must never vote again under its old id (it
forgot its promises). Ids are never reused: a new member's id must be above
every id ever a member (``max_id``), so a replaced machine comes back as a new
learner with a new id, and its old id is removed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Final

import msgpack

from paxos.codec import MAX_NODE_ID
from paxos.types import Command

#: The system-command tag of a membership change (see paxos.multi.sessions for 1-3).
CONFIG: Final = 4
#: The client field of a change command (no session has an empty name).
CONFIG_CLIENT: Final = ""
_CONFIG_TAG: Final = bytes((CONFIG,))
#: At most this many members (voters and learners): bounds every per-member table.
MAX_MEMBERS: Final = 64
#: The longest address (``host:port``) and public key a change may name.
MAX_ADDRESS_LEN: Final = 262
MAX_KEY_LEN: Final = 64


class Op(enum.IntEnum):
    ADD_LEARNER = 1
    PROMOTE = 2
    REMOVE = 3
    SET_QUORUM = 4


@dataclass(frozen=True, slots=True)
class Change:
    """``op`` on ``node`` (SET_QUORUM: ``node`` is the phase-2 quorum size, 0 for a
    majority), made against the membership of ``epoch``. ADD_LEARNER names where the
    new node listens and its public key (opaque here; the runtime connects with them)."""

    epoch: int
    op: Op
    node: int
    address: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class Membership:
    epoch: int
    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()
    #: The phase-2 quorum size asked for (0: a majority); see phase2_quorum.
    q2: int = 0
    max_id: int = 0
    #: (id, address, public key) of the members added through the log, by id; the
    #: starting members' are in the cluster file.
    endpoints: tuple[tuple[int, str, str], ...] = ()

    @staticmethod
    def genesis(nodes: tuple[int, ...], q2: int = 0) -> Membership:
        """The membership every replica of a cluster starts from."""
        return Membership(0, tuple(sorted(nodes)), (), q2, max(nodes))

    @property
    def members(self) -> tuple[int, ...]:
        return self.voters + self.learners

    @property
    def phase2_quorum(self) -> int:
        """Accepts that choose a value: ``q2`` (at most the voters), else a majority."""
        n = len(self.voters)
        return min(self.q2, n) if self.q2 else n // 2 + 1

    @property
    def phase1_quorum(self) -> int:
        """Promises a leader needs: enough to meet every phase-2 quorum (q1 + q2 > n)."""
        return len(self.voters) - self.phase2_quorum + 1

    def shows(self, op: Op, node: int) -> bool:
        """Does this membership show ``op`` on ``node`` done (an operator's check that a
        change it asked for was applied, whoever proposed it)?"""
        if op is Op.ADD_LEARNER:
            return node in self.members or node <= self.max_id
        if op is Op.PROMOTE:
            return node in self.voters
        if op is Op.REMOVE:
            return node not in self.members
        return self.q2 == node

    def apply(self, change: Change) -> Membership | None:
        """The membership after ``change``, or None if it does not apply (made against
        another epoch, or not valid here): judged identically on every replica."""
        if change.epoch != self.epoch:
            return None
        node = change.node
        nxt = self.epoch + 1
        if change.op is Op.ADD_LEARNER:
            # Never an id that was ever a member: its old disk's vows may be lost.
            if node <= self.max_id or len(self.members) >= MAX_MEMBERS:
                return None
            if node > MAX_NODE_ID:
                # An id the wire cannot carry could never speak, and since ids are never
                # reused it would block every later addition for good (review finding).
                return None
            if len(change.address) > MAX_ADDRESS_LEN or len(change.key) > MAX_KEY_LEN:
                return None
            endpoints = self.endpoints
            if change.address or change.key:
                endpoints = (*endpoints, (node, change.address, change.key))
            return replace(
                self, epoch=nxt, learners=(*self.learners, node), max_id=node,
                endpoints=endpoints,
            )
        if change.op is Op.PROMOTE:
            if node not in self.learners:
                return None
            learners = tuple(n for n in self.learners if n != node)
            return replace(self, epoch=nxt, voters=tuple(sorted((*self.voters, node))),
                           learners=learners)
        if change.op is Op.REMOVE:
            endpoints = tuple(e for e in self.endpoints if e[0] != node)
            if node in self.learners:
                return replace(self, epoch=nxt, endpoints=endpoints,
                               learners=tuple(n for n in self.learners if n != node))
            if node not in self.voters or len(self.voters) == 1:
                return None  # a cluster keeps at least one voter
            return replace(self, epoch=nxt, endpoints=endpoints,
                           voters=tuple(n for n in self.voters if n != node))
        # Op.SET_QUORUM
        if not 0 <= node <= len(self.voters):
            return None
        return replace(self, epoch=nxt, q2=node)


def change_command(change: Change) -> Command:
    """The system command that proposes ``change``."""
    row: list[object] = [change.epoch, int(change.op), change.node]
    if change.address or change.key:
        row += [change.address, change.key]
    return Command(CONFIG_CLIENT, 0, _CONFIG_TAG + msgpack.packb(row))


def is_change(command: Command) -> bool:
    return command.seq == 0 and command.payload[:1] == _CONFIG_TAG


def read_change(command: Command) -> Change | None:
    """The change a CONFIG command holds; None if malformed (ignored everywhere alike)."""
    try:
        epoch, op, node, *where = msgpack.unpackb(command.payload[1:], raw=False)
        if not all(type(x) is int and x >= 0 for x in (epoch, op, node)):
            return None
        if where and (len(where) != 2 or not all(type(x) is str for x in where)):
            return None
        return Change(epoch, Op(op), node, *where)
    except Exception:  # msgpack and Op raise several types; all mean "malformed"
        return None


def export_configs(configs: list[tuple[int, Membership]]) -> list[list[object]]:
    return [
        [start, m.epoch, list(m.voters), list(m.learners), m.q2, m.max_id,
         [list(e) for e in m.endpoints]]
        for start, m in configs
    ]


def restore_configs(rows: object) -> list[tuple[int, Membership]]:
    """Inverse of :func:`export_configs`; raises ValueError on anything else."""
    if not isinstance(rows, list) or not 0 < len(rows) <= 4096:
        raise ValueError("bad membership list")
    out: list[tuple[int, Membership]] = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 7:
            raise ValueError("bad membership row")
        start, epoch, voters, learners, q2, max_id, where = row
        if not isinstance(where, list) or len(where) > MAX_MEMBERS or not all(
            isinstance(e, list) and len(e) == 3 and type(e[0]) is int
            and type(e[1]) is str and type(e[2]) is str
            and len(e[1]) <= MAX_ADDRESS_LEN and len(e[2]) <= MAX_KEY_LEN
            for e in where
        ):
            raise ValueError("bad membership endpoints")
        ints = [start, epoch, q2, max_id]
        if not isinstance(voters, list) or not isinstance(learners, list):
            raise ValueError("bad membership row")
        ints += voters + learners
        if not all(type(x) is int and x >= 0 for x in ints):
            raise ValueError("bad membership row")
        if not voters or len(voters) + len(learners) > MAX_MEMBERS:
            raise ValueError("bad membership size")
        endpoints = tuple((e[0], e[1], e[2]) for e in where)
        out.append(
            (start, Membership(epoch, tuple(voters), tuple(learners), q2, max_id, endpoints))
        )
    if any(a[0] >= b[0] for a, b in pairwise(out)):
        raise ValueError("membership starts not ascending")
    return out
