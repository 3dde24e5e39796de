"""The wire messages of Multi-Paxos, as frozen, slotted dataclasses.

Every message names its sender (``src``); the destination travels beside it in
:class:`paxos.multi.ready.Ready` (``(dst, message)`` pairs), so one message
object can be sent to many peers without copies.

Phase names follow Lamport: 1a Prepare, 1b Promise, 2a Accept, 2b Accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from paxos.types import Ballot, Value

# An entry of a Promise: (slot, ballot it was accepted at, value).
PromiseEntry = tuple[int, Ballot, Value]
# An entry of a CatchupReply: (slot, chosen value).
ChosenEntry = tuple[int, Value]


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1a: ``src`` asks for a promise on ``ballot`` for every slot >= ``from_slot``."""

    src: int
    ballot: Ballot
    from_slot: int


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b: the acceptor promises ``ballot`` and reports what it accepted.

    ``entries`` holds, for each slot >= the Prepare's ``from_slot``, the value
    with the highest ballot this acceptor accepted there. ``commit`` is the
    acceptor's known chosen prefix, so a lagging candidate learns it is behind.

    A report too large for one frame comes in parts: ``next_slot`` is then the
    first slot not reported yet, and the candidate asks for the rest with a
    Prepare of the same ballot from that slot (0: the report is complete).
    """

    src: int
    ballot: Ballot
    from_slot: int
    entries: tuple[PromiseEntry, ...]
    commit: int
    next_slot: int


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a: the leader of ``ballot`` proposes ``value`` for ``slot``.

    ``commit`` piggybacks the leader's chosen prefix (slots <= commit are chosen).
    """

    src: int
    ballot: Ballot
    slot: int
    value: Value
    commit: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """Phase 2b: the acceptor accepted the value of ``slot`` at ``ballot``."""

    src: int
    ballot: Ballot
    slot: int


@dataclass(frozen=True, slots=True)
class Nack:
    """A Prepare or Accept at ``ballot`` was refused: the acceptor promised ``promised``."""

    src: int
    ballot: Ballot
    promised: Ballot


@dataclass(frozen=True, slots=True)
class Commit:
    """Chosen notice: every slot <= ``commit`` is chosen.

    A replica that accepted a slot at exactly ``ballot`` holds its chosen value,
    because the leader of a ballot proposes one value per slot. Others catch up.
    """

    src: int
    ballot: Ballot
    commit: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The leader of ``ballot`` is alive; also a chosen notice up to ``commit``."""

    src: int
    ballot: Ballot
    commit: int


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """A follower answers a Heartbeat: it is alive and knows the chosen prefix ``commit``."""

    src: int
    ballot: Ballot
    commit: int


@dataclass(frozen=True, slots=True)
class PreVote:
    """Would you promise ``ballot``? Asked before a candidate raises its ballot.

    Nothing is persisted for it. It keeps a node that was cut off from raising
    its ballot and deposing a healthy leader when it comes back (Raft's pre-vote).
    """

    src: int
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class PreVoteReply:
    """Answer to :class:`PreVote`: ``granted`` if the voter has no live leader and
    has promised nothing at or above ``ballot``."""

    src: int
    ballot: Ballot
    granted: bool


@dataclass(frozen=True, slots=True)
class CatchupRequest:
    """``src`` asks for the chosen values of slots ``from_slot`` .. ``to_slot`` (inclusive)."""

    src: int
    from_slot: int
    to_slot: int


@dataclass(frozen=True, slots=True)
class CatchupReply:
    """Chosen values (``(slot, value)``, ascending) and the sender's chosen prefix."""

    src: int
    entries: tuple[ChosenEntry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class Forward:
    """A replica that does not lead passes client commands to the one it believes leads."""

    src: int
    commands: Value


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """A part of the sender's snapshot (every slot <= ``slot``), for a replica whose
    next needed slot the sender has compacted away.

    ``size`` and ``crc`` describe the whole snapshot; ``data`` is its bytes from
    ``offset``. ``commit`` is the sender's chosen prefix.
    """

    src: int
    slot: int
    size: int
    crc: int
    offset: int
    data: bytes
    commit: int


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """``src`` asks for the snapshot at ``slot`` (checksum ``crc``) from ``offset`` on.

    A sender that no longer holds that snapshot answers with the start of the one
    it holds."""

    src: int
    slot: int
    crc: int
    offset: int


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """The leader of ``ballot`` hands over to ``target`` (leadership transfer): the
    target campaigns at once, without a pre-vote, and the others promise it although
    they hear from a live leader. It decides only who leads, never what is chosen.
    ``commit`` is the leader's chosen prefix when it handed over: a TimeoutNow older
    than a commit notice since is stale (the transfer was abandoned)."""

    src: int
    ballot: Ballot
    target: int
    commit: int


Message = (
    Prepare
    | Promise
    | Accept
    | Accepted
    | Nack
    | Commit
    | Heartbeat
    | HeartbeatReply
    | PreVote
    | PreVoteReply
    | CatchupRequest
    | CatchupReply
    | Forward
    | SnapshotChunk
    | SnapshotRequest
    | TimeoutNow
)
