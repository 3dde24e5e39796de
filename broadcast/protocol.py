"""Client <-> node messages, registered with the same versioned codec as Paxos' own.

A client talks to any node. Broadcasts are exactly-once because every command
carries ``(client, seq)`` and the replicated sessions drop repeats; a client may
therefore resend anything unacknowledged to any node at any time.
"""

from __future__ import annotations

from dataclasses import dataclass

from paxos.codec import (
    BALLOT,
    BOOL,
    CLIENT_ID,
    INT,
    STR,
    UINT,
    VALUE,
    CodecError,
    Field,
    register,
    tuple_of,
)
from paxos.types import Ballot, Value

#: Most deliveries one Deliveries frame carries.
FETCH_MAX = 4096


@dataclass(frozen=True, slots=True)
class Submit:
    """Broadcast these commands (each tagged ``(client, seq)``), in this order."""

    commands: Value


@dataclass(frozen=True, slots=True)
class SubmitAck:
    """``client``'s commands that are committed, as runs ``(first_seq, first_index, count)``:
    seqs ``first_seq .. first_seq + count - 1`` sit at indexes ``first_index ..``.

    Runs keep acknowledgements to a few integers per batch. ``leader`` is a
    hint (0: unknown).
    """

    client: str
    acks: tuple[tuple[int, int, int], ...]
    leader: int


@dataclass(frozen=True, slots=True)
class SubmitRefused:
    """The node did not take the commands (``reason``: "busy", "stopping").

    The client retries later, maybe at ``leader`` (0: unknown).
    """

    client: str
    first_seq: int
    reason: str
    leader: int


@dataclass(frozen=True, slots=True)
class Fetch:
    """Send me deliveries from ``from_index`` on (at most ``max_count``).

    The node answers at once if it has any; otherwise it holds the request up
    to ``wait_ms`` and answers with whatever arrived (possibly nothing).
    """

    from_index: int
    max_count: int
    wait_ms: int


@dataclass(frozen=True, slots=True)
class Deliveries:
    """Committed commands at indexes ``first_index``, ``first_index + 1``, ...

    ``delivered`` is the node's last delivered index (so a subscriber can tell
    a lagging node from an idle cluster).
    """

    first_index: int
    commands: Value
    delivered: int


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Ask a node how it sees the cluster."""

    nonce: int


@dataclass(frozen=True, slots=True)
class Status:
    """A node's view: role, promised ballot, believed leader (0: none), progress."""

    nonce: int
    node: int
    role: str
    ballot: Ballot
    leader: int
    commit: int
    delivered: int
    fsync: bool


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """What is the last sequence number of ``client`` delivered at this node?"""

    client: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Answer to :class:`SessionQuery` (0: nothing delivered from ``client`` here)."""

    client: str
    last_seq: int


def _ack(x: object) -> tuple[int, int, int]:
    if type(x) is not tuple or len(x) != 3:
        raise CodecError("ack must be [first_seq, first_index, count]")
    seq, index, count = x
    if type(seq) is not int or type(index) is not int or type(count) is not int:
        raise CodecError("ack must be three ints")
    if seq < 1 or index < 0 or count < 1 or count > 1 << 32:
        raise CodecError("ack must be [first_seq >= 1, first_index >= 0, count >= 1]")
    return seq, index, count


def ack_runs(acks: list[tuple[int, int]]) -> tuple[tuple[int, int, int], ...]:
    """Compress ``(seq, index)`` pairs into runs ``(first_seq, first_index, count)``."""
    runs: list[list[int]] = []
    for seq, index in sorted(acks):
        if runs:
            last = runs[-1]
            if seq == last[0] + last[2] and index and index == last[1] + last[2]:
                last[2] += 1
                continue
        runs.append([seq, index, 1])
    return tuple((a, b, c) for a, b, c in runs)



register(64, Submit, (VALUE,))
register(65, SubmitAck, (CLIENT_ID, tuple_of(Field("ack", _ack)), UINT))
register(66, SubmitRefused, (CLIENT_ID, UINT, STR, UINT))
register(67, Fetch, (UINT, UINT, UINT))
register(68, Deliveries, (UINT, VALUE, UINT))
register(69, StatusRequest, (INT,))
register(70, Status, (INT, UINT, STR, BALLOT, UINT, UINT, UINT, BOOL))
register(71, SessionQuery, (CLIENT_ID,))
register(72, SessionInfo, (CLIENT_ID, UINT))

ClientMessage = Submit | Fetch | StatusRequest | SessionQuery
NodeReply = SubmitAck | SubmitRefused | Deliveries | Status | SessionInfo
