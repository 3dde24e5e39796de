"""Client <-> node messages, registered with the same versioned codec as Paxos' own.

A client talks to any node. It first opens a session through the log
(:class:`OpenSession`, answered by :class:`SessionOpened` with the session's
key). Broadcasts are exactly-once because every command carries ``(session key,
seq)`` and the replicated sessions drop repeats; a client may therefore resend
anything unacknowledged to any node at any time.

Every reply is bounded in bytes: :class:`Deliveries` carries at most
``FETCH_MAX`` commands and about ``FETCH_MAX_BYTES`` of payloads (always at
least one command), and a :class:`SubmitAck` at most ``ACK_RUNS_MAX`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from paxos.codec import (
    BALLOT,
    BOOL,
    BYTES,
    CLIENT_ID,
    INT,
    NODE_ID,
    UINT,
    VALUE,
    CodecError,
    Field,
    register,
    tuple_of,
)
from paxos.multi.membership import MAX_ADDRESS_LEN, MAX_KEY_LEN, MAX_MEMBERS
from paxos.multi.sessions import NONCE_BYTES
from paxos.types import Ballot, Value

#: Longest cluster id (a hex digest is 32 characters; TOML files may name it freely).
MAX_CLUSTER_ID_LEN = 128

#: Most deliveries one Deliveries frame carries.
FETCH_MAX = 4096
#: About this many bytes of payloads per Deliveries frame (one larger command travels alone).
#: Small enough that the replies a node owes a subscriber that stops reading stay small
#: (see Node's reply budget); a reading subscriber asks for the next at once.
FETCH_MAX_BYTES = 256 * 1024
#: Most runs one SubmitAck carries.
ACK_RUNS_MAX = 1024
#: Longest refusal reason or role name.
_SHORT_STR = 64


@dataclass(frozen=True, slots=True)
class Submit:
    """Broadcast these commands (each tagged ``(client, seq)``), in this order."""

    commands: Value


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open a session named ``name`` through the log. ``nonce`` (16 random bytes) makes
    the request unique: a resend with the same nonce gets the same session.
    ``cluster_id`` ("" for any) makes the node refuse if it belongs to another cluster."""

    name: str
    nonce: bytes
    cluster_id: str


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """The session opened for ``nonce`` has the key ``key``; commands carry it.

    Also tells the client the cluster's limits: payloads above ``max_payload_bytes``
    are refused, and at most ``window`` commands may be unacknowledged at once.
    """

    nonce: bytes
    key: str
    cluster_id: str
    max_payload_bytes: int
    window: int


@dataclass(frozen=True, slots=True)
class CloseSession:
    """End the session ``key`` (its client is done). No answer."""

    key: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session ``key`` ended (closed, expired or evicted): none of its commands
    beyond seq ``last_seq`` will ever be delivered. ``known`` is False when the node
    no longer remembers ``last_seq`` (it is then 0)."""

    key: str
    known: bool
    last_seq: int


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
    """The node did not take the commands from ``first_seq`` on.

    ``reason``: "busy" (queue full: retry later, maybe at ``leader``, 0: unknown);
    "too_large" (a payload above the cluster's limit: never retry it);
    "no_session" (the key is not a session: open one first); "cluster" (the
    client asked for another cluster id).
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

    ``ticket`` is the ticket of the last :class:`Deliveries` (or :class:`SnapshotPart`)
    this client read from this node (0: none). It proves the client reads what it is
    sent: a node owes a client at most a byte budget of replies it has not proved it
    read, and stops serving (then cuts off) a client that does not read.
    """

    from_index: int
    max_count: int
    wait_ms: int
    ticket: int = 0


@dataclass(frozen=True, slots=True)
class Deliveries:
    """Committed commands at indexes ``first_index``, ``first_index + 1``, ...

    ``delivered`` is the node's last delivered index (so a subscriber can tell
    a lagging node from an idle cluster).
    """

    first_index: int
    commands: Value
    delivered: int
    ticket: int = 0
    """Unguessable; the client's next Fetch carries it back (see :class:`Fetch`)."""


@dataclass(frozen=True, slots=True)
class FetchRefused:
    """The node no longer retains index ``from_index`` (the Fetch's): its retention
    deleted it. ``earliest`` is the first index it still holds."""

    from_index: int
    earliest: int


@dataclass(frozen=True, slots=True)
class FetchSnapshot:
    """Send me the part of your latest durable snapshot that starts at ``offset``
    (a subscriber rebuilding its state below the retention: see Client.snapshot).
    ``ticket``: as in :class:`Fetch`."""

    offset: int
    ticket: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    """Bytes ``offset ..`` of the node's latest snapshot: it covers the first ``index``
    deliveries (``slot``: the last slot applied); ``size`` and ``crc`` describe the whole
    snapshot. ``size == 0``: the node has none yet."""

    slot: int
    index: int
    size: int
    crc: int
    offset: int
    data: bytes
    ticket: int = 0


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Ask a node how it sees the cluster."""

    nonce: int


@dataclass(frozen=True, slots=True)
class Status:
    """A node's view: role, promised ballot, believed leader (0: none), progress.

    ``leader_ok``: this node leads and has heard from a majority lately, or it
    follows a leader it has heard from lately (within the election timeout).
    """

    nonce: int
    node: int
    role: str
    ballot: Ballot
    leader: int
    commit: int
    delivered: int
    fsync: bool
    leader_ok: bool
    cluster_id: str
    sessions: int
    #: The node's durable snapshot (slot and delivery index; 0: none), its compaction
    #: floor (slots at or below it are only in the snapshot) and its log's size on disk.
    snapshot_slot: int = 0
    snapshot_index: int = 0
    floor: int = 0
    log_bytes: int = 0
    #: Connections to this node in use (past their handshake or let in: its peers'
    #: and clients'), as its gate counts them for ``--max-clients``.
    connections: int = 0


@dataclass(frozen=True, slots=True)
class Denied:
    """The client's key may not do ``what`` (a permission: broadcast, subscribe, status,
    admin; or ``session <name>``: a session name its key is not granted). Nothing of the
    request was done."""

    what: str


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    """Ask a node to snapshot and compact now (``paxos snapshot``); it answers with its
    Status once the snapshot is durable."""

    nonce: int


@dataclass(frozen=True, slots=True)
class MembersRequest:
    """Ask a node for the cluster's membership (``paxos member list``)."""

    nonce: int


@dataclass(frozen=True, slots=True)
class Members:
    """The newest membership the node applied: its ``epoch``, ``voters``, ``learners``,
    quorum sizes, and ``(id, address, public key)`` of every member (the key "" with
    --insecure); ``leader``: who the node believes leads (0: none); ``governing``: the
    epoch in effect for the node's next slot (it trails ``epoch`` while a change is on
    its way)."""

    nonce: int
    leader: int
    epoch: int
    governing: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    phase1_quorum: int
    phase2_quorum: int
    endpoints: tuple[tuple[int, str, str], ...]


@dataclass(frozen=True, slots=True)
class ChangeMembers:
    """Ask the leader for a membership change (``paxos member add|promote|remove|
    quorum``): ``op`` is a :class:`paxos.multi.membership.Op`; ADD_LEARNER names the new
    node's address and public key."""

    nonce: int
    op: int
    node: int
    address: str
    key: str


@dataclass(frozen=True, slots=True)
class TransferLeader:
    """Ask the leader to hand over to ``target`` (``paxos leader transfer``)."""

    nonce: int
    target: int


@dataclass(frozen=True, slots=True)
class ChangeAnswer:
    """The answer to ChangeMembers or TransferLeader: ``reason`` is "" if the node took
    it (a change is then on its way through the log: watch Members), else why not
    (``leader``: who the node believes leads, 0 if nobody)."""

    nonce: int
    reason: str
    leader: int


@dataclass(frozen=True, slots=True)
class SubmitResults:
    """What the node's state machine returned for ``client``'s committed commands, for a
    state machine that answers remote callers (one with ``encode_result``): runs of
    ``(seq, index, known, result)``. ``known`` False: committed at ``index``, but this
    node no longer holds the result (applied long ago, or before the snapshot it
    started from); nothing was applied twice. Sent after the SubmitAck that covers it."""

    client: str
    results: tuple[tuple[int, int, bool, bytes], ...]


@dataclass(frozen=True, slots=True)
class Query:
    """A read-only question (``payload``) for the node's state machine (one with
    ``query``), answered from the state the node has applied: once it has applied
    ``min_index``, and, if ``wait_ms`` > 0, once the state machine has something to
    say (a watch) or ``wait_ms`` ran out. Stale by design: it reads one replica."""

    nonce: int
    payload: bytes
    min_index: int
    wait_ms: int


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """The answer to Query ``nonce``, read at applied ``index``."""

    nonce: int
    index: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryRefused:
    """Query ``nonce`` not answered: ``reason`` is "unsupported" (no state machine that
    answers queries), "behind" (not applied ``min_index`` within ``wait_ms``: ask
    again, or another node), "busy" (too many held queries) or "error: ..." (the
    state machine raised). ``index``: what the node had applied."""

    nonce: int
    reason: str
    index: int


def _endpoint(x: object) -> tuple[int, str, str]:
    if (
        type(x) is not tuple
        or len(x) != 3
        or type(x[0]) is not int
        or not 0 < x[0] < 2**63
        or type(x[1]) is not str
        or type(x[2]) is not str
        or len(x[1]) > MAX_ADDRESS_LEN
        or len(x[2]) > MAX_KEY_LEN
    ):
        raise CodecError("an endpoint is [node id, address, key]")
    return x[0], x[1], x[2]


def _address(x: object) -> str:
    if type(x) is not str or len(x) > MAX_ADDRESS_LEN:
        raise CodecError(f"expected an address of at most {MAX_ADDRESS_LEN} characters")
    return x


def _key(x: object) -> str:
    if type(x) is not str or len(x) > MAX_KEY_LEN:
        raise CodecError(f"expected a key of at most {MAX_KEY_LEN} characters")
    return x


def _short_str(x: object) -> str:
    if type(x) is not str or len(x) > _SHORT_STR:
        raise CodecError(f"expected a str of at most {_SHORT_STR} characters")
    return x


def _reason(x: object) -> str:
    if type(x) is not str or len(x) > 512:
        raise CodecError("expected a reason of at most 512 characters")
    return x


def _nonce(x: object) -> bytes:
    if type(x) is not bytes or len(x) != NONCE_BYTES:
        raise CodecError(f"expected a nonce of {NONCE_BYTES} bytes")
    return x


def _cluster_id(x: object) -> str:
    if type(x) is not str or len(x) > MAX_CLUSTER_ID_LEN:
        raise CodecError(f"expected a cluster id of at most {MAX_CLUSTER_ID_LEN} characters")
    return x


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



SHORT_STR = Field("short_str", _short_str)
NONCE = Field("nonce", _nonce)
CLUSTER_ID = Field("cluster_id", _cluster_id)

register(64, Submit, (VALUE,))
register(65, SubmitAck, (CLIENT_ID, tuple_of(Field("ack", _ack), ACK_RUNS_MAX), UINT))
register(66, SubmitRefused, (CLIENT_ID, UINT, SHORT_STR, UINT))
register(67, Fetch, (UINT, UINT, UINT, UINT))
register(68, Deliveries, (UINT, VALUE, UINT, UINT))
register(69, StatusRequest, (INT,))
register(
    70,
    Status,
    (INT, UINT, SHORT_STR, BALLOT, UINT, UINT, UINT, BOOL, BOOL, CLUSTER_ID, UINT, *(UINT,) * 5),
)
register(78, TakeSnapshot, (INT,))
register(73, OpenSession, (CLIENT_ID, NONCE, CLUSTER_ID))
register(74, SessionOpened, (NONCE, CLIENT_ID, CLUSTER_ID, UINT, UINT))
register(75, CloseSession, (CLIENT_ID,))
register(76, SessionEnded, (CLIENT_ID, BOOL, UINT))
register(77, FetchRefused, (UINT, UINT))
register(79, FetchSnapshot, (UINT, UINT))
register(80, SnapshotPart, (UINT, UINT, UINT, UINT, UINT, BYTES, UINT))
register(81, Denied, (CLIENT_ID,))
_IDS = tuple_of(NODE_ID, MAX_MEMBERS)
register(82, MembersRequest, (INT,))
register(
    83,
    Members,
    (INT, UINT, UINT, UINT, _IDS, _IDS, UINT, UINT,
     tuple_of(Field("endpoint", _endpoint), MAX_MEMBERS)),
)
register(
    84, ChangeMembers, (INT, UINT, UINT, Field("address", _address), Field("key", _key))
)
register(85, TransferLeader, (INT, NODE_ID))
register(86, ChangeAnswer, (INT, Field("reason", _reason), UINT))


def _result(x: object) -> tuple[int, int, bool, bytes]:
    if type(x) is not tuple or len(x) != 4:
        raise CodecError("a result must be [seq, index, known, bytes]")
    seq, index, known, data = x
    if type(seq) is not int or type(index) is not int or seq < 1 or not 0 <= index < 2**63:
        raise CodecError("a result must be [seq >= 1, index >= 0, known, bytes]")
    if type(known) is not bool or type(data) is not bytes:
        raise CodecError("a result must be [seq, index, bool, bytes]")
    return seq, index, known, data


register(87, SubmitResults, (CLIENT_ID, tuple_of(Field("result", _result), ACK_RUNS_MAX)))
register(88, Query, (INT, BYTES, UINT, UINT))
register(89, QueryAnswer, (INT, UINT, BYTES))
register(90, QueryRefused, (INT, SHORT_STR, UINT))

ClientMessage = (
    Submit
    | Fetch
    | StatusRequest
    | OpenSession
    | CloseSession
    | TakeSnapshot
    | FetchSnapshot
    | MembersRequest
    | ChangeMembers
    | TransferLeader
    | Query
)
NodeReply = (
    SubmitAck
    | SubmitRefused
    | Deliveries
    | FetchRefused
    | Status
    | SessionOpened
    | SessionEnded
    | SnapshotPart
    | Denied
    | Members
    | ChangeAnswer
    | SubmitResults
    | QueryAnswer
    | QueryRefused
)
