"""A seeded, deterministic generator of hostile frames for a live node.

Pure: no I/O, no clock, no module-level randomness. Item ``i`` of a
:class:`FrameFuzzer` depends on its parameters (seed, ``src``, session keys,
cluster id, payload limit, ``limits``, ``lies``) and on ``i`` only: the
generator reseeds one ``random.Random`` per item, so any item a fuzz run
reports is rebuilt with ``frame_at(seed, i, ...)`` (same parameters), without
replaying the ones before it::

    >>> from fuzzframes import frame_at
    >>> item = frame_at(1, 4242, src=3, sessions=("fuzz-kept#1",))
    >>> item.kind, item.parts[0][:16].hex()

What it makes (the ``kind`` of each item names the recipe):

* ``noise.*``: random bytes of every length class, some starting like a
  msgpack array so that the codec gets past its first byte;
* ``mutant.*``: a valid frame of a registered type (Paxos messages, durable
  records, client messages, session opens and closes, node replies) then
  damaged: bit flips, truncation, appended garbage, inserted or deleted bytes,
  a field replaced by a value of the wrong type or range (bool for int, str
  for bytes, nil, floats, maps, ext types, ints at the msgpack int64/uint64
  limits), a wrong version, type code or arity;
* ``nested.*``: arrays and maps nested thousands of levels deep, alone or in
  a field of an otherwise valid frame;
* ``liar.*``: length headers claiming huge arrays, maps, strs, bins or exts
  with a few bytes behind them, and strs that are not UTF-8;
* ``limit.*``: frames at and just over :data:`paxos.codec.MAX_FRAME_BYTES`
  and the transport's ``max_msg_bytes`` (rare: one every ``LIMIT_EVERY``
  items, built once and shared);
* ``envelope.*``: node-to-node envelopes (``0x00 | cluster id | u32 length |
  frame ...``) that carry no frame, a cluster id cut short, lengths that lie,
  are zero or cut, junk after a valid frame, an envelope inside an envelope,
  two- and three-part forms whose parts disagree; well-formed ones of another
  cluster (``envelope.foreign``), and well-formed two-part ones of ours
  (``envelope.two_part``: they reach the codec and the node);
* ``multipart.*``: ZeroMQ messages of 0, 2 or more parts (one part is a frame);
* ``semantic.*``: well-formed frames that are hostile by content: Paxos
  messages whose ``src`` is not the sender, ballot rounds at and around
  ``MAX_ROUND`` and ``MAX_ROUND_STEP`` and beyond 2**63, slots at and around
  ``MAX_SLOTS_AHEAD`` and 2**63, CatchupRequests for enormous ranges, Fetches
  with huge ``max_count``/``wait_ms`` and tickets never issued, Submits of
  thousands of commands, client ids of the maximal length (in characters and
  in UTF-8 bytes);
* ``session.*``: client traffic around sessions. Submits for the real session
  keys the fuzzer is given (``sessions``) as well as for bogus keys: runs of
  seqs starting anywhere (some deliver, most are repeats or gaps), repeats and
  disorder, seq-0 system commands smuggled in, seqs at 2**63 - 1 and beyond,
  payloads at and just over the payload limit, keys mixed in one Submit;
  OpenSession with names, nonces and cluster ids at and beyond their bounds;
  CloseSession of bogus keys and of every given key but the first (the first
  stays open, so that Submits for it keep reaching the deep paths).

How a frame travels *as a peer* lives in one function, :func:`peer_message`.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from broadcast.protocol import (
    ChangeAnswer,
    ChangeMembers,
    CloseSession,
    Deliveries,
    Denied,
    Fetch,
    FetchRefused,
    FetchSnapshot,
    Members,
    MembersRequest,
    OpenSession,
    Query,
    QueryAnswer,
    QueryRefused,
    SessionEnded,
    SessionOpened,
    SnapshotPart,
    Status,
    StatusRequest,
    Submit,
    SubmitAck,
    SubmitRefused,
    SubmitResults,
    TakeSnapshot,
    TransferLeader,
)
from broadcast.spec import DEFAULT_MAX_PAYLOAD_BYTES
from broadcast.transport import TransportConfig, unpack_envelope
from paxos.codec import (
    MAX_CLIENT_ID_LEN,
    MAX_FRAME_BYTES,
    MAX_UINT,
    VERSION,
    CodecError,
    decode,
    encode,
)
from paxos.messages import (
    Accept,
    Accepted,
    CatchupReply,
    CatchupRequest,
    Commit,
    Forward,
    Heartbeat,
    HeartbeatReply,
    Message,
    Nack,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    SnapshotChunk,
    SnapshotRequest,
    TimeoutNow,
)
from paxos.multi.replica import MAX_SLOTS_AHEAD
from paxos.multi.sessions import MAX_NAME_LEN, NONCE_BYTES
from paxos.records import AcceptRecord, CommitRecord, PromiseRecord
from paxos.types import MAX_ROUND, MAX_ROUND_STEP, ZERO_BALLOT, Ballot, Command

#: The transport's limit on one ZeroMQ message part (larger ones make zmq drop the connection).
MAX_MSG_BYTES: Final = TransportConfig().max_msg_bytes
#: One ``limit.*`` item (tens of MiB) every this many items, at a fixed offset.
LIMIT_EVERY: Final = 25_000
#: The cluster id a fuzzer uses when it is given none (any 16 bytes).
DEFAULT_CLUSTER_ID: Final = bytes(range(16))

U64: Final = 2**64 - 1
I64_MIN: Final = -(2**63)
#: Ints at and around the msgpack limits (uint64 max, int64 min/max) and other edges.
EDGE_INTS: Final = (
    0, 1, 2, 3, 99, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    2**53 + 1, 2**62, 2**63 - 2, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, U64,
    -1, -2, -(2**31), -(2**63) + 1, I64_MIN,
)  # fmt: skip
#: The largest rounds/slots/counts a frame can carry (msgpack stops at uint64).
HUGE: Final = (2**62, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 65, 2**64 - 2, U64)
#: Ballot rounds: small ones (real ballots have them), and the edges of the bounds (a
#: round may not jump more than MAX_ROUND_STEP, nor reach MAX_ROUND; the codec refuses
#: rounds above MAX_ROUND; msgpack stops at 2**64 - 1).
ROUNDS: Final = (
    0, 1, 2, 3, 5, 40, MAX_ROUND_STEP, MAX_ROUND_STEP + 1, MAX_ROUND_STEP + 7,
    MAX_ROUND - 1, MAX_ROUND, MAX_ROUND + 1, *HUGE,
)  # fmt: skip
#: Slots and commit indexes: small ones, the edges of what an acceptor takes (at most
#: MAX_SLOTS_AHEAD beyond its chosen prefix; a candidate ignores a promise reporting a
#: slot beyond that) and of what the codec takes (at most MAX_UINT = 2**63 - 1).
SLOTS: Final = (
    0, 1, 2, 64, 4096, MAX_SLOTS_AHEAD, MAX_SLOTS_AHEAD + 1, 2 * MAX_SLOTS_AHEAD + 1,
    2**53, MAX_UINT - 1, MAX_UINT, MAX_UINT + 1, U64,
)  # fmt: skip

# A 256-character client id: the longest allowed, in ASCII and in 4-byte UTF-8.
LONGEST_ASCII_ID: Final = "c" * MAX_CLIENT_ID_LEN
LONGEST_UTF8_ID: Final = "\U0001f600" * MAX_CLIENT_ID_LEN
TOO_LONG_ID: Final = "c" * (MAX_CLIENT_ID_LEN + 1)

#: Values of the wrong type (or range) to put where a field goes. All packable by msgpack.
WRONG_VALUES: Final[tuple[Any, ...]] = (
    True, False, None, 0, -1, 2**63, U64, I64_MIN, 1.5, -0.0, float("nan"), float("inf"),
    1e300, "", "x", "1", "n:2", TOO_LONG_ID,
    b"", b"\x00" * 9, b"x" * 300, {}, {"k": 1}, {1: [2]}, (), (None,), ((((),),),),
    (1,), (1, 2, 3, 4), msgpack.ExtType(1, b"x"), msgpack.Timestamp(1, 0),
    msgpack.ExtType(127, b""), msgpack.ExtType(0, b"\xff" * 16), msgpack.Timestamp(2**34, 5),
)  # fmt: skip

_MESSAGE_TYPES: Final = tuple(Message.__args__)
#: Paxos messages that a member may send in another member's name without putting
#: agreement at risk (crash-fault Paxos trusts its members; these only ask, refuse,
#: report liveness, or hand over client commands): refusing a promise is always safe, a
#: promise made for a forged Prepare is a true promise, a forged Forward is a client's
#: submission, a forged SnapshotRequest only costs a chunk, a forged TimeoutNow only makes
#: a voter campaign (who leads, never what is chosen). The others (Promise, Accept,
#: Accepted, Commit, Heartbeat, CatchupReply, SnapshotChunk) make a replica believe a
#: value was accepted or chosen: lies that can break agreement.
SAFE_LIE_TYPES: Final = (
    Prepare, Nack, PreVote, PreVoteReply, HeartbeatReply, CatchupRequest, Forward,
    SnapshotRequest, TimeoutNow,
)  # fmt: skip
_LEN: Final = struct.Struct("<I")
#: First byte of a node-to-node envelope (see broadcast.transport.ENVELOPE).
ENVELOPE_BYTE: Final = b"\x00"
#: A frame of at least this many bytes travels alone, as the second part of a two-part
#: envelope (what a node's transport does, so that it is sent without a copy).
ALONE_BYTES: Final = 64 * 1024
#: Session-system tags (first payload byte of a seq-0 command): open, close, expire.
SYSTEM_TAGS: Final = (1, 2, 3)


# ---------------------------------------------------------------------------
# How a frame is sent as a peer: the one place that knows the envelope format.
# ---------------------------------------------------------------------------


def peer_message(frames: Sequence[bytes], cluster_id: bytes) -> tuple[bytes, ...]:
    """The parts of the ZeroMQ message a node's DEALER sends carrying ``frames``.

    ``0x00 | cluster id (16 bytes)`` then, per frame, a little-endian u32 length
    and the frame, in one part; a lone frame of ``ALONE_BYTES`` or more travels as
    ``[0x00 | cluster id | length] [frame]`` (two parts). Written from the format's
    description, not with the transport's code, so that a test can hold one against
    the other. A bare frame (no envelope) is just ``(frame,)``: a node drops it.
    """
    if len(cluster_id) != 16:
        raise ValueError("a cluster id has 16 bytes")
    if not frames or not all(frames):
        raise ValueError("an envelope carries at least one frame, and no empty one")
    head = ENVELOPE_BYTE + cluster_id
    if len(frames) == 1 and len(frames[0]) >= ALONE_BYTES:
        return (head + _LEN.pack(len(frames[0])), frames[0])
    return (head + b"".join(_LEN.pack(len(f)) + f for f in frames),)


def frames_in(parts: Sequence[bytes]) -> list[bytes]:
    """The frames a node would find in ``parts`` (if it took them from a peer with the
    right cluster id): an envelope's frames, or the parts themselves."""
    opened = unpack_envelope(parts)
    if opened is not None:
        return opened[1]
    out: list[bytes] = []
    for part in parts:
        inner = unpack_envelope([part]) if part[:1] == ENVELOPE_BYTE else None
        out.extend(inner[1] if inner is not None else [part])
    return out


# ---------------------------------------------------------------------------
# One generated item.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hostile:
    """One ZeroMQ message to send: its parts (usually one frame) and the recipe's name."""

    index: int
    kind: str
    parts: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(map(len, self.parts))

    def describe(self, limit: int = 96) -> str:
        """``kind``, sizes and a hex dump of the start of each part, for reports."""
        dumps = []
        for part in self.parts:
            head = part[:limit].hex()
            dumps.append(f"{len(part)}B {head}{'...' if len(part) > limit else ''}")
        return f"#{self.index} {self.kind} [{'; '.join(dumps)}]"


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


# ---------------------------------------------------------------------------
# The pool of valid base frames (built once; every registered type, several shapes).
# ---------------------------------------------------------------------------


def _base_objects(src: int, key: str, cluster_id: str) -> list[object]:
    b = Ballot(3, 2)
    cmd = Command(key, 1, b"payload")
    value = (cmd, Command("d#2", 7, b""), Command(LONGEST_ASCII_ID, 2, b"\x00" * 40))
    nonce = bytes(range(NONCE_BYTES))
    return [
        # Paxos messages first (see FrameFuzzer._n_paxos).
        Prepare(src, b, 1),
        Promise(src, b, 1, ((1, b, value), (2, ZERO_BALLOT, ())), 0, 0),
        Promise(src, b, 5, (), 4, 9),
        Accept(src, b, 1, value, 0),
        Accept(src, b, 9, (), 8),
        Accepted(src, b, 1),
        Nack(src, b, Ballot(4, 3)),
        Nack(src, ZERO_BALLOT, ZERO_BALLOT),
        Commit(src, b, 1),
        Heartbeat(src, b, 1),
        HeartbeatReply(src, b, 1),
        PreVote(src, b),
        PreVoteReply(src, b, True),
        CatchupRequest(src, 1, 64),
        CatchupReply(src, ((1, value), (2, ())), 2),
        Forward(src, value),
        SnapshotChunk(src, 9, 4, 0, 0, b"snap", 9),
        SnapshotRequest(src, 9, 0, 0),
        TimeoutNow(src, b, 1, 1),
        PromiseRecord(b),
        AcceptRecord(1, b, value),
        CommitRecord(1),
        Submit((cmd,)),
        Submit(value),
        OpenSession("fz-open", nonce, cluster_id),
        OpenSession("fz-open", nonce, ""),
        SessionOpened(nonce, key, cluster_id, DEFAULT_MAX_PAYLOAD_BYTES, 4096),
        CloseSession("fz-never#999999"),
        SessionEnded(key, True, 3),
        SubmitAck(key, ((1, 1, 1), (3, 5, 2)), 1),
        SubmitRefused(key, 1, "busy", 0),
        Fetch(1, 16, 0),
        Fetch(1, 4096, 500, 2**40 + 7),
        Deliveries(1, value, 3, 2**40 + 7),
        FetchRefused(1, 5),
        FetchSnapshot(0),
        FetchSnapshot(4, 2**40 + 8),
        SnapshotPart(9, 8, 4, 0, 0, b"snap", 2**40 + 8),
        Denied("broadcast"),
        TakeSnapshot(3),
        StatusRequest(7),
        Status(7, 1, "leader", b, 1, 1, 1, True, True, cluster_id, 3),
        MembersRequest(8),
        Members(8, 1, 2, 2, (1, 2, 3), (4,), 2, 2, ((4, "127.0.0.1:7004", ""),)),
        # (changes that never apply: an op that does not exist, an id already used)
        ChangeMembers(9, 99, 4, "127.0.0.1:7004", ""),
        ChangeMembers(9, 1, 1, "127.0.0.1:7004", "x" * 40),
        TransferLeader(10, 99),
        ChangeAnswer(10, "not the leader", 2),
        # Remote callers of a state machine (the coordination service's queries: a
        # watch held at a node, a read; what a node answers).
        Query(11, _pack([1, "changes", "", 1, 0]), 0, 1000),
        Query(12, _pack([1, "get", "k"]), 2**40, 0),
        SubmitResults(key, ((1, 1, True, b"result"), (2, 3, False, b""))),
        QueryAnswer(11, 5, _pack([1, None])),
        QueryRefused(12, "behind", 5),
    ]


def base_frames(src: int, key: str = "c#1", cluster_id: str = "") -> list[tuple[Any, ...]]:
    """Every registered type, as (VERSION, code, *fields) tuples; Paxos ones from ``src``,
    commands of the session ``key``, cluster ids ``cluster_id``."""
    out = []
    for obj in _base_objects(src, key, cluster_id):
        frame = msgpack.unpackb(encode(obj), use_list=False, raw=False)
        out.append(frame)
    return out


# ---------------------------------------------------------------------------
# The generator.
# ---------------------------------------------------------------------------


class FrameFuzzer:
    """Makes hostile items; ``item(i)`` is a pure function of the parameters and ``i``.

    ``src`` is the node id the items' sender has (0 for a client); Paxos
    messages carry it half of the time and some other id otherwise.
    ``sessions`` are keys of real, open sessions (their Submits reach the deep
    paths of a node; the first one is never closed by the items). ``cluster_id``
    (16 bytes) is the target's: ``envelope.*`` items carry it (or, on purpose,
    another). ``max_payload_bytes`` is the cluster's payload limit. ``limits``
    enables the rare ``limit.*`` items (tens of MiB each).

    ``lies=False`` leaves out every well-formed Paxos message that claims to come
    from ``src`` (a member's id) and is not one of :data:`SAFE_LIE_TYPES` (the
    recipe is drawn again). Such a message is a lie of a cluster member that can
    break agreement: Multi-Paxos tolerates crashes, not lies (a forged Accept at a
    high ballot is adopted by the next leader even in a slot already chosen), so a
    run that checks agreement must leave them out. Everything else stays: junk
    under the member's name, and the safe lies (forged Prepares, Nacks, PreVotes,
    catch-up requests, forwards...), which reach deep into the replica.
    """

    def __init__(
        self,
        seed: int,
        *,
        src: int = 0,
        limits: bool = True,
        lies: bool = True,
        sessions: Sequence[str] = (),
        cluster_id: bytes = DEFAULT_CLUSTER_ID,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if len(cluster_id) != 16:
            raise ValueError("a cluster id has 16 bytes")
        self.seed = seed
        self.src = src
        self.limits = limits
        self.lies = lies
        self.sessions = tuple(sessions)
        self.cluster_id = cluster_id
        self.max_payload_bytes = max_payload_bytes
        self._cluster_hex = cluster_id.hex()
        self._rng = random.Random(seed)
        key = self.sessions[0] if self.sessions else "c#1"
        self._base = base_frames(src if src > 0 else 2, key, self._cluster_hex)
        self._packed = [_pack(f) for f in self._base]
        self._heavy: dict[tuple[Any, ...], bytes] = {}
        self._big: dict[int, bytes] = {}
        self._n_paxos = sum(1 for f in self._base if 1 <= f[1] <= 31)  # they come first
        recipes: list[tuple[int, Callable[[], tuple[str, tuple[bytes, ...]]]]] = [
            (10, self._noise),
            (32, self._mutant),
            (4, self._nested),
            (5, self._liar),
            (5, self._envelope),
            (3, self._multipart),
            (22, self._semantic),
            (16, self._session),
        ]
        self._recipes = [r for _, r in recipes]
        self._weights = [w for w, _ in recipes]

    def item(self, index: int) -> Hostile:
        rng = self._rng
        rng.seed(self.seed * 1_000_003 + index)
        if self.limits and index % LIMIT_EVERY == LIMIT_EVERY // 2:
            kind, parts = self._limit(index // LIMIT_EVERY)
        else:
            while True:
                (recipe,) = rng.choices(self._recipes, self._weights)
                kind, parts = recipe()
                if self.lies or self.src <= 0 or not self.is_lie(parts):
                    break
        return Hostile(index, kind, parts)

    def is_lie(self, parts: Sequence[bytes]) -> bool:
        """Does ``parts`` hold a well-formed Paxos message from ``src`` that could break
        agreement (one not of :data:`SAFE_LIE_TYPES`)?"""
        for frame in frames_in(parts):
            try:
                msg = decode(frame)
            except CodecError:
                continue
            if (
                isinstance(msg, _MESSAGE_TYPES)
                and msg.src == self.src
                and not isinstance(msg, SAFE_LIE_TYPES)
            ):
                return True
        return False

    def items(self, start: int, stop: int) -> Iterator[Hostile]:
        for i in range(start, stop):
            yield self.item(i)

    # ----------------------------------------------------------------- helpers

    def _other_src(self) -> int:
        rng = self._rng
        if rng.random() < 0.5 and self.src > 0:
            return self.src
        return rng.choice((1, 2, 3, 4, 99, 2**31 - 1, 2**31, 2**63 - 1, U64))

    def _bytes(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def _length(self) -> int:
        """A length from every class: 0, 1, a few, tens, hundreds, kilobytes, 64 KiB (rarer)."""
        rng = self._rng
        (cls,) = rng.choices(range(7), (2, 2, 6, 6, 4, 1, 0.3))
        return (
            0, 1, rng.randint(2, 8), rng.randint(9, 64), rng.randint(65, 1024),
            rng.randint(1025, 16384), rng.randint(16385, 65536),
        )[cls]  # fmt: skip

    def _wrong(self) -> Any:
        rng = self._rng
        if rng.random() < 0.2:
            return rng.choice(EDGE_INTS)
        return rng.choice(WRONG_VALUES)

    def _ballot(self) -> tuple[int, int]:
        rng = self._rng
        node = rng.choice((self.src if self.src > 0 else 2, 1, 2, 3, 99, U64))
        return (rng.choice(ROUNDS), node)

    def _key(self) -> str:
        """A session key: mostly a real one (the first above all), else a bogus one."""
        rng = self._rng
        keys = self.sessions
        if keys and rng.random() < 0.8:
            return keys[0] if rng.random() < 0.75 else rng.choice(keys)
        return rng.choice(
            ("fz#1", "fz-open#1", "nobody#123456", "", "#", "x#0", LONGEST_ASCII_ID,
             LONGEST_UTF8_ID, "fz#" + "9" * 30)
        )  # fmt: skip

    def _filled(self, n: int) -> bytes:
        """``n`` zero bytes, shared (payloads at the limit are built once)."""
        data = self._big.get(n)
        if data is None:
            data = self._big[n] = bytes(n)
        return data

    # ----------------------------------------------------------------- recipes

    def _noise(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        data = self._bytes(self._length())
        head = rng.random()
        if head < 0.4 and data:
            # Look like a frame: a fixarray / array16 / array32 header, then noise.
            v = _pack(VERSION)
            prefix = rng.choice((b"\x92" + v, b"\x95" + v + b"\x03", b"\xdc\x00\x05" + v, b"\x93"))
            return "noise.framelike", (prefix + data,)
        return "noise.bytes", (data,)

    def _base_pick(self) -> tuple[int, tuple[Any, ...], bytes]:
        i = self._rng.randrange(len(self._base))
        return i, self._base[i], self._packed[i]

    def _mutant(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        _, frame, packed = self._base_pick()
        how = rng.randrange(9)
        if how == 0:  # bit flips
            data = bytearray(packed)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
            return "mutant.bitflip", (bytes(data),)
        if how == 1:  # truncation at every length class
            n = len(packed)
            cut = rng.choice((0, 1, 2, n // 2, n - 1, rng.randrange(n)))
            return "mutant.truncated", (packed[:cut],)
        if how == 2:  # appended garbage (ExtraData)
            return "mutant.appended", (packed + self._bytes(rng.randint(1, 64)),)
        if how == 3:  # inserted or deleted bytes
            pos = rng.randrange(len(packed))
            if rng.random() < 0.5:
                extra = self._bytes(rng.randint(1, 8))
                return "mutant.inserted", (packed[:pos] + extra + packed[pos:],)
            return "mutant.deleted", (packed[:pos] + packed[pos + rng.randint(1, 8) :],)
        if how == 4:  # wrong version or type code
            fields = list(frame)
            if rng.random() < 0.5:
                other = rng.choice((0, 1, VERSION + 1, 255))
                fields[0] = self._wrong() if rng.random() < 0.5 else other
                return "mutant.version", (_pack(fields),)
            # Around the registered codes (16 is past the Paxos messages, 35 past the
            # records, 71 and 72 were removed, 82 is the next free one).
            unknown = (0, 16, 31, 35, 63, 71, 72, 82, 255, 256, -3, U64)
            fields[1] = rng.choice(unknown) if rng.random() < 0.7 else self._wrong()
            return "mutant.typecode", (_pack(fields),)
        if how == 5:  # wrong arity
            fields = list(frame)
            if rng.random() < 0.5 and len(fields) > 2:
                del fields[rng.randrange(2, len(fields))]
            else:
                fields.insert(rng.randrange(2, len(fields) + 1), self._wrong())
            return "mutant.arity", (_pack(fields),)
        # A field (or something nested in one) replaced by a value of the wrong type/range.
        fields = list(frame)
        if len(fields) <= 2:
            return "mutant.arity", (_pack([*fields, self._wrong()]),)
        pos = rng.randrange(2, len(fields))
        fields[pos] = self._replace_inside(fields[pos], depth=0)
        return "mutant.field", (_pack(fields),)

    def _replace_inside(self, value: Any, depth: int) -> Any:
        rng = self._rng
        if isinstance(value, tuple) and value and depth < 4 and rng.random() < 0.6:
            items = list(value)
            i = rng.randrange(len(items))
            items[i] = self._replace_inside(items[i], depth + 1)
            return tuple(items)
        return self._wrong()

    def _nested(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        depths = (100, 511, 512, 1023, 1024, 1025, 2000, 5000, 20000)
        (depth,) = rng.choices(depths, (4, 2, 2, 2, 2, 2, 2, 1, 0.3))
        opener = rng.choice((b"\x91", b"\xdc\x00\x01", b"\x81\x00", b"\x92" + _pack(VERSION)))
        # [[[... nil]]], [2, [2, [... nil]]], {0: {0: ... nil}}: one nil closes them all.
        inner = opener * depth + b"\xc0"
        if rng.random() < 0.5:
            return "nested.bare", (inner,)
        # In a field of an otherwise valid frame: [VERSION, code, <nested>, ...].
        _, frame, _ = self._base_pick()
        fields = [_pack(x) for x in frame]
        if len(fields) > 2:
            fields[rng.randrange(2, len(fields))] = inner
        else:
            fields.append(inner)
        header = _array_header(len(fields))
        return "nested.field", (header + b"".join(fields),)

    def _liar(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        claim = rng.choice((2**16, 2**31 - 1, 2**31, 2**32 - 1, rng.randrange(65, 2**32)))
        marker = rng.randrange(6)
        if marker == 0:
            head = b"\xdd" + struct.pack(">I", claim)  # array32
        elif marker == 1:
            head = b"\xdf" + struct.pack(">I", claim)  # map32
        elif marker == 2:
            head = b"\xdb" + struct.pack(">I", claim)  # str32
        elif marker == 3:
            head = b"\xc6" + struct.pack(">I", claim)  # bin32
        elif marker == 4:
            head = b"\xc9" + struct.pack(">I", claim) + b"\x05"  # ext32
        else:
            head = b"\xdc" + struct.pack(">H", claim & 0xFFFF)  # array16
        if marker == 5 and rng.random() < 0.3:
            # Not a length lie but an encoding one: a str that is not UTF-8, where a
            # CloseSession (75) or an OpenSession (73) has its key or name.
            bad = rng.choice((b"\xff", b"\xed\xb3\xbf", b"\xc3", b"a\x80b"))
            text = bytes((0xA0 | len(bad),)) + bad
            if rng.random() < 0.5:
                return "liar.utf8", (b"\x93" + _pack(VERSION) + _pack(75) + text,)
            nonce = _pack(bytes(NONCE_BYTES))
            frame = b"\x95" + _pack(VERSION) + _pack(73) + text + nonce + b"\xa0"
            return "liar.utf8", (frame,)
        tail = self._bytes(rng.randint(0, 32))
        if rng.random() < 0.5:
            return "liar.bare", (head + tail,)
        # The lie in a field of a frame that starts well: [VERSION, code, <liar>].
        code = rng.choice((1, 2, 3, 12, 13, 64, 67, 69, 73, 75))
        return "liar.field", (b"\x93" + _pack(VERSION) + _pack(code) + head + tail,)

    def _foreign_id(self) -> bytes:
        rng = self._rng
        ours = self.cluster_id
        how = rng.randrange(3)
        if how == 0:
            return bytes(16)
        if how == 1:  # one bit off
            pos = rng.randrange(16)
            return ours[:pos] + bytes((ours[pos] ^ (1 << rng.randrange(8)),)) + ours[pos + 1 :]
        return self._bytes(16)

    def _envelope(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        _, _, good = self._base_pick()
        head = ENVELOPE_BYTE + self.cluster_id
        how = rng.randrange(12)
        if how == 0:  # no frames at all
            return "envelope.empty", (head,)
        if how == 1:  # the cluster id cut short
            return "envelope.cut_id", (head[: rng.randint(1, 16)],)
        if how == 2:  # length claims more than there is
            claim = rng.choice((len(good) + 1, 2**31, 2**32 - 1))
            return "envelope.long", (head + _LEN.pack(claim) + good,)
        if how == 3:  # a zero length
            return "envelope.zero", (head + _LEN.pack(0) + good,)
        if how == 4:  # the length itself cut short
            return "envelope.cut", (head + _LEN.pack(len(good)) + good + b"\x01\x00",)
        if how == 5:  # a valid first frame, then junk
            junk = self._bytes(rng.randint(5, 40))
            return "envelope.junk", (head + _LEN.pack(len(good)) + good + junk,)
        if how == 6:  # an envelope inside an envelope: its frame starts with 0x00
            inner = head + _LEN.pack(len(good)) + good
            return "envelope.nested", (head + _LEN.pack(len(inner)) + inner,)
        if how == 7:  # well-formed, of another cluster
            frames = [good] * rng.randint(1, 3)
            return "envelope.foreign", peer_message(frames, self._foreign_id())
        if how == 8:  # well-formed two-part form (a small frame where a big one goes)
            return "envelope.two_part", (head + _LEN.pack(len(good)), good)
        if how == 9:  # two parts that disagree
            variants = (
                (head + _LEN.pack(len(good) + rng.choice((-1, 1, 2**31))), good),
                (head, good),
                (head + _LEN.pack(1), b""),
                (head + _LEN.pack(len(good)) + b"x", good),
                (self._foreign_id() + _LEN.pack(len(good)), good),
            )
            return "envelope.two_part_lies", rng.choice(variants)
        if how == 10:  # three parts
            return "envelope.three_part", (head + _LEN.pack(len(good)), good, good)
        return "envelope.noise", (ENVELOPE_BYTE + self._bytes(self._length()),)

    def _multipart(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        _, _, good = self._base_pick()
        n = rng.choice((2, 2, 3, 5, 17))
        parts = [good if rng.random() < 0.5 else self._bytes(rng.randint(0, 16)) for _ in range(n)]
        if rng.random() < 0.2:
            return "multipart.empty", (b"",)
        return f"multipart.{n}", tuple(parts)

    def _limit(self, k: int) -> tuple[str, tuple[bytes, ...]]:
        variants = _limit_frames()
        kind, data = variants[k % len(variants)]
        return kind, (data,)

    # ----------------------------------------------------------------- semantic

    def _semantic(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        recipes = (
            self._sem_src,
            self._sem_ballot,
            self._sem_slot,
            self._sem_catchup,
            self._sem_fetch,
            self._sem_submit,
            self._sem_client_id,
            self._sem_status,
        )
        if rng.random() < 0.02:
            return self._sem_heavy()
        return rng.choice(recipes)()

    def _sem_src(self) -> tuple[str, tuple[bytes, ...]]:
        # A valid Paxos message from some other src than the sender's identity.
        rng = self._rng
        frame = list(self._base[rng.randrange(self._n_paxos)])
        frame[2] = rng.choice((1, 2, 3, 4, 99, U64))
        return "semantic.src", (_pack(frame),)

    def _sem_ballot(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        src = self._other_src()
        b = self._ballot()
        code = rng.choice((1, 5, 6, 7, 8, 9, 10))
        if code == 5:
            fields: tuple[Any, ...] = (src, b, self._ballot())
        elif code == 9:
            fields = (src, b)
        elif code == 10:
            fields = (src, b, rng.random() < 0.5)
        else:
            fields = (src, b, rng.choice(SLOTS))
        return f"semantic.ballot.{code}", (_pack((VERSION, code, *fields)),)

    def _sem_slot(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        src = self._other_src()
        slot = rng.choice(SLOTS)
        b = rng.choice(((1, src if 0 < src <= 3 else 1), self._ballot()))
        code = rng.choice((2, 3, 4, 6, 12))
        if code == 3:
            fields: tuple[Any, ...] = (src, b, slot, (("f", 1, b"v"),), rng.choice((0, slot)))
        elif code == 4 or code == 6:
            fields = (src, b, slot)
        elif code == 12:
            fields = (src, ((slot, (("f", 1, b"v"),)),), rng.choice(SLOTS))
        else:
            next_slot = rng.choice((0, slot, *SLOTS))
            fields = (src, b, slot, ((slot, b, (("f", 1, b"v"),)),), rng.choice(SLOTS), next_slot)
        return f"semantic.slot.{code}", (_pack((VERSION, code, *fields)),)

    def _sem_catchup(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        ranges = (
            (0, U64), (1, U64), (U64, 0), (U64, U64), (2**64 - 65, U64), (0, 2**63),
            (1, 64), (1, MAX_UINT), (MAX_UINT, MAX_UINT), (2, 1), (1, 1),
        )  # fmt: skip
        lo, hi = rng.choice(ranges)
        return "semantic.catchup", (_pack((VERSION, 11, self._other_src(), lo, hi)),)

    def _sem_fetch(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        fields = (
            rng.choice((0, 1, 2, 2**31, MAX_UINT, *HUGE)),
            rng.choice((0, 1, 4096, 4097, MAX_UINT, *HUGE)),
            rng.choice((0, 1, 30_000, 30_001, MAX_UINT, *HUGE)),
            rng.choice((0, 1, 2**40, MAX_UINT, *HUGE)),  # a ticket never issued
        )
        return "semantic.fetch", (_pack((VERSION, 67, *fields)),)

    def _sem_submit(self) -> tuple[str, tuple[bytes, ...]]:
        # A few commands from fresh or edge-case keys (never opened: refused), in or out
        # of order.
        rng = self._rng
        n = rng.choice((0, 1, 2, 10))
        prefix = rng.choice(("fz", LONGEST_ASCII_ID, LONGEST_UTF8_ID, ""))
        client = (prefix + str(rng.randrange(1000)))[-MAX_CLIENT_ID_LEN:]
        seqs = rng.choice(("fifo", "zero", "huge", "random"))
        return f"semantic.submit.{n}.{seqs}", (_submit_frame(rng, client, n, seqs),)

    def _sem_client_id(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        client = rng.choice((LONGEST_ASCII_ID, LONGEST_UTF8_ID, TOO_LONG_ID, "", "\x00" * 256))
        code = rng.choice((64, 73, 75))
        if code == 64:
            frame: tuple[Any, ...] = (VERSION, 64, ((client, 1, b"x"),))
        elif code == 73:
            frame = (VERSION, 73, client, self._bytes(NONCE_BYTES), "")
        else:
            frame = (VERSION, 75, client)
        return f"semantic.client_id.{code}", (_pack(frame),)

    def _sem_status(self) -> tuple[str, tuple[bytes, ...]]:
        nonce = self._rng.choice(EDGE_INTS)
        return "semantic.status", (_pack((VERSION, 69, nonce)),)

    def _sem_heavy(self) -> tuple[str, tuple[bytes, ...]]:
        """Thousands of entries where a few are expected (built once per shape, then reused)."""
        rng = self._rng
        n = rng.choice((1000, 5000))
        code = rng.choice((2, 12, 13, 64, 64, 65))
        key = (code, n, rng.random() < 0.5)  # the last bit: own src (or real session) or not
        kind = f"semantic.heavy.{code}.{n}"
        frame = self._heavy.get(key)
        if frame is None:
            src = self.src if key[2] and self.src > 0 else 2
            b = (1, 1)
            if code == 2:
                entries = tuple((s, b, ()) for s in range(1, n + 1))
                frame = _pack((VERSION, 2, src, b, 1, entries, 0, 0))
            elif code == 12:
                frame = _pack((VERSION, 12, src, tuple((s, ()) for s in range(1, n + 1)), 0))
            elif code == 13:
                frame = _pack((VERSION, 13, src, tuple(("fw", s, b"") for s in range(1, n + 1))))
            elif code == 64:
                # In order, from 1: a real session delivers what it had not yet and then
                # only acknowledges (a bogus key is refused at once).
                client = self.sessions[0] if key[2] and self.sessions else f"fz-heavy-{n}"
                frame = _submit_frame(rng, client, n, "fifo")
            else:
                frame = _pack((VERSION, 65, "c", tuple((s, s, 1) for s in range(1, n + 1)), 0))
            self._heavy[key] = frame
        return kind, (frame,)

    # ----------------------------------------------------------------- sessions

    def _session(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        how = rng.randrange(20)
        if how < 7:
            return self._session_run()
        if how < 9:
            return self._session_disorder()
        if how < 11:
            return self._session_system()
        if how < 12:
            return self._session_edge_seqs()
        if how < 14:
            return self._session_mixed()
        if how < 15:
            return self._session_payload_limit()
        if how < 17:
            return self._session_open()
        return self._session_close()

    def _payload(self) -> bytes:
        rng = self._rng
        (size,) = rng.choices((0, 1, rng.randint(2, 64), rng.randint(65, 4096)), (1, 4, 4, 1))
        return self._bytes(size)

    def _session_run(self) -> tuple[str, tuple[bytes, ...]]:
        """A run of consecutive seqs from anywhere: delivered where it covers the
        session's next seq, acknowledged below it, refused (a gap) above it."""
        rng = self._rng
        key = self._key()
        first = rng.choice(
            (1, 1, rng.randint(1, 64), rng.randint(1, 1000), rng.randint(1, 100_000))
        )
        n = rng.choice((1, 1, 2, 8, 64, 256, 257))
        commands = tuple((key, s, self._payload()) for s in range(first, first + n))
        return f"session.run.{n}", (_pack((VERSION, 64, commands)),)

    def _session_disorder(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        key = self._key()
        seqs = [rng.randint(1, 300) for _ in range(rng.randint(2, 20))]
        if rng.random() < 0.5:
            seqs = sorted(seqs, reverse=True)
        commands = tuple((key, s, self._payload()) for s in seqs)
        return "session.disorder", (_pack((VERSION, 64, commands)),)

    def _session_system(self) -> tuple[str, tuple[bytes, ...]]:
        """Seq-0 commands (open, close, expire and unknown tags) smuggled into a Submit,
        alone or among ordinary commands."""
        rng = self._rng
        key = self._key()
        tag = rng.choice((*SYSTEM_TAGS, 0, 4, 255))
        body = rng.choice((b"", self._bytes(NONCE_BYTES), (0).to_bytes(8, "big"), self._bytes(8)))
        system = (rng.choice((key, "fz-smuggled")), 0, bytes((tag,)) + body)
        where = rng.randrange(3)
        commands: tuple[Any, ...]
        if where == 0:
            commands = (system,)
        elif where == 1:
            commands = ((key, 1, b"before"), system, (key, 2, b"after"))
        else:
            commands = (system, (key, rng.randint(1, 50), b"after"))
        return f"session.system.{tag}", (_pack((VERSION, 64, commands)),)

    def _session_edge_seqs(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        key = self._key()
        seq = rng.choice((MAX_UINT - 1, MAX_UINT, MAX_UINT + 1, U64, 2**53, 2**32))
        commands: tuple[Any, ...] = ((key, seq, b"edge"),)
        if rng.random() < 0.5 and seq < MAX_UINT:
            commands = ((key, seq, b"edge"), (key, seq + 1, b"edge"))
        return "session.edge_seq", (_pack((VERSION, 64, commands)),)

    def _session_mixed(self) -> tuple[str, tuple[bytes, ...]]:
        """Several keys in one Submit: real, bogus, and the same key interleaved."""
        rng = self._rng
        commands = tuple(
            (self._key(), rng.randint(1, 200), self._payload()) for _ in range(rng.randint(2, 12))
        )
        return "session.mixed", (_pack((VERSION, 64, commands)),)

    def _session_payload_limit(self) -> tuple[str, tuple[bytes, ...]]:
        """A payload at the limit (seq 1 of a real session: delivered at most once, then
        only acknowledged) or just over it (refused, whatever its seq)."""
        rng = self._rng
        key = self._key()
        limit = self.max_payload_bytes
        if rng.random() < 0.5:
            commands: tuple[Any, ...] = ((key, 1, self._filled(limit)),)
            kind = "session.payload_at_limit"
        else:
            commands = ((key, rng.randint(1, 100), self._filled(limit + 1)),)
            if rng.random() < 0.5:
                commands = ((key, 1, b"small"), *commands)
            kind = "session.payload_over_limit"
        return kind, (_pack((VERSION, 64, commands)),)

    def _session_open(self) -> tuple[str, tuple[bytes, ...]]:
        """OpenSession: names, nonces and cluster ids at and beyond their bounds. Valid ones
        open sessions, mostly the same few again (one fixed nonce per name)."""
        rng = self._rng
        name = rng.choice(
            ("fz-open", "fz-open", "fz-other", "", "n" * MAX_NAME_LEN, "n" * (MAX_NAME_LEN + 1),
             "\U0001f600" * MAX_NAME_LEN, TOO_LONG_ID, "#", "fz#1", "\x00")
        )  # fmt: skip
        (nonce,) = rng.choices(
            (bytes(NONCE_BYTES), self._bytes(NONCE_BYTES), self._bytes(NONCE_BYTES - 1),
             self._bytes(NONCE_BYTES + 1), b""),
            (6, 1, 1, 1, 1),
        )  # fmt: skip
        cluster = rng.choice(
            ("", "", self._cluster_hex, self._cluster_hex.upper(), "another-cluster",
             "x" * 128, "x" * 129)
        )  # fmt: skip
        return "session.open", (_pack((VERSION, 73, name, nonce, cluster)),)

    def _session_close(self) -> tuple[str, tuple[bytes, ...]]:
        """CloseSession of bogus keys, of sessions the items opened, and of every real key
        but the first."""
        rng = self._rng
        keys = [
            "fz#1", "fz-open#1", "fz-open#2", "fz-open#3", "", "#", TOO_LONG_ID,
            LONGEST_ASCII_ID, "nobody#99999",
        ]  # fmt: skip
        keys += self.sessions[1:]
        return "session.close", (_pack((VERSION, 75, rng.choice(keys))),)


def _submit_frame(rng: random.Random, client: str, n: int, seqs: str) -> bytes:
    """A Submit of ``n`` one-byte commands of ``client``; seqs 1.. (fifo), 0, near 2**64, random."""
    numbers: Sequence[int]
    if seqs == "fifo":
        numbers = range(1, n + 1)
    elif seqs == "zero":
        numbers = [0] * n
    elif seqs == "huge":
        numbers = range(U64, U64 - n, -1)
    else:
        numbers = [rng.randrange(2**64) for _ in range(n)]
    return _pack((VERSION, 64, tuple((client, seq, b"p") for seq in numbers)))


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    return b"\xdc" + struct.pack(">H", n)


_LIMIT_CACHE: list[tuple[str, bytes]] = []


def _limit_frames() -> list[tuple[str, bytes]]:
    """Frames at and just over the codec's and the transport's size limits (built once).

    The frame at exactly ``MAX_FRAME_BYTES`` is well-formed msgpack that the codec
    must unpack and then refuse (a Fetch whose first field is a 64 MiB bin): the
    most expensive frame the codec accepts to parse.
    """
    if not _LIMIT_CACHE:
        head = b"\x96" + _pack(VERSION) + _pack(67)  # [VERSION, 67 (Fetch), ...]

        def fetch_with_bin(total: int) -> bytes:
            # [VERSION, 67, bin(n), 0, 0, 0]: bin32 header 5 bytes, tail 3 bytes.
            n = total - len(head) - 5 - 3
            return head + b"\xc6" + struct.pack(">I", n) + bytes(n) + b"\x00\x00\x00"

        at_codec = fetch_with_bin(MAX_FRAME_BYTES)
        assert len(at_codec) == MAX_FRAME_BYTES
        _LIMIT_CACHE.extend(
            [
                ("limit.codec_max", at_codec),
                ("limit.codec_max+1", fetch_with_bin(MAX_FRAME_BYTES + 1)),
                ("limit.transport_max+1", b"\x91" + bytes(MAX_MSG_BYTES)),
                ("limit.transport_max", b"\x91" + bytes(MAX_MSG_BYTES - 1)),
            ]
        )
    return _LIMIT_CACHE


def frame_at(seed: int, index: int, **params: Any) -> Hostile:
    """Rebuild item ``index`` of a fuzzer of ``seed`` (pass the same keyword parameters:
    ``src``, ``sessions``, ``cluster_id``, ``lies``...)."""
    return FrameFuzzer(seed, **params).item(index)
