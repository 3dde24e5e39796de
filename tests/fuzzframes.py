"""A seeded, deterministic generator of hostile frames for a live node.

Pure: no I/O, no clock, no module-level randomness. Frame ``i`` of seed ``s``
depends on ``(s, i)`` only (the generator reseeds one ``random.Random`` per
frame), so any frame a fuzz run reports is rebuilt with ``frame_at(s, i)``,
without replaying the ones before it::

    >>> from fuzzframes import frame_at
    >>> item = frame_at(seed=1, index=4242)
    >>> item.kind, item.parts[0][:16].hex()

What it makes (the ``kind`` of each item names the recipe):

* ``noise.*``: random bytes of every length class, some starting like a
  msgpack array so that the codec gets past its first byte;
* ``mutant.*``: a valid frame of a registered type (Paxos messages, durable
  records, client messages and node replies) then damaged: bit flips,
  truncation, appended garbage, inserted or deleted bytes, a field replaced by
  a value of the wrong type or range (bool for int, str for bytes, nil, floats,
  maps, ext types, ints at the msgpack int64/uint64 limits), a wrong version,
  type code or arity;
* ``nested.*``: arrays and maps nested thousands of levels deep, alone or in
  a field of an otherwise valid frame;
* ``liar.*``: length headers claiming huge arrays, maps, strs, bins or exts
  with a few bytes behind them;
* ``limit.*``: frames at and just over :data:`paxos.codec.MAX_FRAME_BYTES`
  and the transport's ``max_msg_bytes`` (rare: one every ``LIMIT_EVERY``
  frames, built once and shared);
* ``envelope.*``: node-to-node envelopes (first byte 0x00) whose inner
  lengths lie, are zero, are cut short, or are followed by junk;
* ``multipart.*``: ZeroMQ messages of 0, 2 or more parts (one part is a frame);
* ``semantic.*``: well-formed frames that are hostile by content: Paxos
  messages whose ``src`` is not the sender, ballots with rounds near 2**64,
  slots near 2**63, CatchupRequests for enormous ranges, Fetches with huge
  ``max_count``/``wait_ms``, Submits of thousands of commands, client ids of
  the maximal length (in characters and in UTF-8 bytes).

How a frame travels *as a peer* lives in one function, :func:`peer_message`
(the node-to-node envelope format is about to carry a cluster id).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from broadcast.protocol import (
    Deliveries,
    Fetch,
    SessionInfo,
    SessionQuery,
    Status,
    StatusRequest,
    Submit,
    SubmitAck,
    SubmitRefused,
)
from broadcast.transport import TransportConfig, unpack_envelope
from paxos.codec import MAX_CLIENT_ID_LEN, MAX_FRAME_BYTES, VERSION, CodecError, decode, encode
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
)
from paxos.records import AcceptRecord, CommitRecord, PromiseRecord
from paxos.types import ZERO_BALLOT, Ballot, Command

#: The transport's limit on one ZeroMQ message (larger ones make zmq drop the connection).
MAX_MSG_BYTES: Final = TransportConfig().max_msg_bytes
#: One ``limit.*`` frame (tens of MiB) every this many frames, at a fixed offset.
LIMIT_EVERY: Final = 25_000

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
_LEN: Final = struct.Struct("<I")
#: First byte of a node-to-node envelope (see broadcast.transport.ENVELOPE).
ENVELOPE_BYTE: Final = b"\x00"


# ---------------------------------------------------------------------------
# How a frame is sent as a peer: the one place that knows the envelope format.
# ---------------------------------------------------------------------------


def peer_message(frames: Sequence[bytes], *, enveloped: bool) -> bytes:
    """The one ZeroMQ message part a node's DEALER would send carrying ``frames``.

    ``enveloped=False`` needs exactly one frame and sends it bare (what
    ``pack_envelopes`` does with a lone frame). ``enveloped=True`` always wraps:
    ``0x00`` then, per frame, a little-endian u32 length and the frame. When the
    envelope starts carrying a cluster id after the 0x00 byte, this is the
    function to change (and bare frames from node identities will be dropped).
    """
    if not enveloped:
        if len(frames) != 1:
            raise ValueError("a bare peer message carries exactly one frame")
        return frames[0]
    return ENVELOPE_BYTE + b"".join(_LEN.pack(len(f)) + f for f in frames)


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


def _raw(fields: Sequence[Any]) -> tuple[Any, ...]:
    """A frame as the tuple msgpack packs: (VERSION, code, *fields)."""
    return tuple(fields)


# ---------------------------------------------------------------------------
# The pool of valid base frames (built once; every registered type, several shapes).
# ---------------------------------------------------------------------------


def _base_objects(src: int) -> list[object]:
    b = Ballot(3, 2)
    cmd = Command("c", 1, b"payload")
    value = (cmd, Command("d", 7, b""), Command(LONGEST_ASCII_ID, 2, b"\x00" * 40))
    return [
        Prepare(src, b, 1),
        Promise(src, b, 1, ((1, b, value), (2, ZERO_BALLOT, ())), 0),
        Promise(src, b, 5, (), 4),
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
        PromiseRecord(b),
        AcceptRecord(1, b, value),
        CommitRecord(1),
        Submit((cmd,)),
        Submit(value),
        SubmitAck("c", ((1, 1, 1), (3, 5, 2)), 1),
        SubmitRefused("c", 1, "busy", 0),
        Fetch(1, 16, 0),
        Fetch(1, 4096, 500),
        Deliveries(1, value, 3),
        StatusRequest(7),
        Status(7, 1, "leader", b, 1, 1, 1, True),
        SessionQuery("c"),
        SessionInfo("c", 1),
    ]


def base_frames(src: int) -> list[tuple[Any, ...]]:
    """Every registered type, as (VERSION, code, *fields) tuples; Paxos ones from ``src``."""
    out = []
    for obj in _base_objects(src):
        frame = msgpack.unpackb(encode(obj), use_list=False, raw=False)
        out.append(frame)
    return out


# ---------------------------------------------------------------------------
# The generator.
# ---------------------------------------------------------------------------


class FrameFuzzer:
    """Makes hostile items; ``item(i)`` is a pure function of ``(seed, i)``.

    ``src`` is the node id the items' sender has (0 for a client); Paxos
    messages carry it half of the time and some other id otherwise.
    ``limits`` enables the rare ``limit.*`` items (tens of MiB each).

    ``lies=False`` leaves out every well-formed Paxos message that claims to
    come from ``src`` when ``src`` is a member's id (the recipe is drawn again).
    Such a message is a lie of a cluster member: Multi-Paxos tolerates crashes,
    not lies, and any of them may break agreement (a forged Accept at a high
    ballot is adopted by the next leader even in a slot already chosen), so a
    run that checks agreement must leave them out. Everything else, junk under
    the member's name included, stays.
    """

    def __init__(self, seed: int, *, src: int = 0, limits: bool = True, lies: bool = True) -> None:
        self.seed = seed
        self.src = src
        self.limits = limits
        self.lies = lies
        self._rng = random.Random(seed)
        self._base = base_frames(src if src > 0 else 2)
        self._packed = [_pack(f) for f in self._base]
        self._heavy: dict[tuple[Any, ...], bytes] = {}
        self._n_paxos = sum(1 for f in self._base if 1 <= f[1] <= 31)  # they come first
        recipes: list[tuple[int, Callable[[], tuple[str, tuple[bytes, ...]]]]] = [
            (10, self._noise),
            (40, self._mutant),
            (4, self._nested),
            (5, self._liar),
            (4, self._envelope),
            (3, self._multipart),
            (20, self._semantic),
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
                if self.lies or self.src <= 0 or not self._is_lie(parts):
                    break
        return Hostile(index, kind, parts)

    def _is_lie(self, parts: tuple[bytes, ...]) -> bool:
        """Is some part (or a frame in an envelope) a well-formed Paxos message from ``src``?"""
        for part in parts:
            frames = [part] if part[:1] != ENVELOPE_BYTE else (unpack_envelope(part) or [])
            for frame in frames:
                try:
                    msg = decode(frame)
                except CodecError:
                    continue
                if isinstance(msg, _MESSAGE_TYPES) and msg.src == self.src:
                    return True
        return False

    def items(self, start: int, stop: int) -> Iterator[Hostile]:
        for i in range(start, stop):
            yield self.item(i)

    # ----------------------------------------------------------------- helpers

    def _other_src(self) -> int:
        rng = self._rng
        choice = rng.random()
        if choice < 0.5 and self.src > 0:
            return self.src
        return rng.choice((1, 2, 3, 4, 99, 2**31, 2**63 - 1, U64))

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

    # ----------------------------------------------------------------- recipes

    def _noise(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        data = self._bytes(self._length())
        head = rng.random()
        if head < 0.4 and data:
            # Look like a frame: a fixarray / array16 / array32 header, then noise.
            prefix = rng.choice((b"\x92\x01", b"\x95\x01\x03", b"\xdc\x00\x05\x01", b"\x93"))
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
                fields[0] = self._wrong() if rng.random() < 0.5 else rng.choice((0, 2, 255))
                return "mutant.version", (_pack(fields),)
            unknown = (0, 14, 31, 35, 63, 73, 255, 256, -3, U64)  # around the registered codes
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
        opener = rng.choice((b"\x91", b"\xdc\x00\x01", b"\x81\x00", b"\x92\x01"))
        # [[[... nil]]], [1, [1, [... nil]]], {0: {0: ... nil}}: one nil closes them all.
        inner = opener * depth + b"\xc0"
        if rng.random() < 0.5:
            return "nested.bare", (inner,)
        # In a field of an otherwise valid frame: [1, code, <nested>, ...].
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
            # Not a length lie but an encoding one: a str that is not UTF-8 (a SessionQuery).
            bad = rng.choice((b"\xff", b"\xed\xb3\xbf", b"\xc3", b"a\x80b"))
            return "liar.utf8", (b"\x92\x01\x47" + bytes((0xA0 | len(bad),)) + bad,)
        tail = self._bytes(rng.randint(0, 32))
        if rng.random() < 0.5:
            return "liar.bare", (head + tail,)
        # The lie in a field of a frame that starts well: [1, 64, <liar>].
        code = rng.choice((1, 3, 12, 13, 64, 67, 69, 71))
        return "liar.field", (b"\x93\x01" + _pack(code) + head + tail,)

    def _envelope(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        _, _, good = self._base_pick()
        how = rng.randrange(7)
        if how == 0:
            return "envelope.empty", (ENVELOPE_BYTE,)
        if how == 1:  # length claims more than there is
            claim = rng.choice((len(good) + 1, 2**31, 2**32 - 1))
            return "envelope.long", (ENVELOPE_BYTE + _LEN.pack(claim) + good,)
        if how == 2:  # a zero length
            return "envelope.zero", (ENVELOPE_BYTE + _LEN.pack(0) + good,)
        if how == 3:  # the length itself cut short
            return "envelope.cut", (ENVELOPE_BYTE + _LEN.pack(len(good)) + good + b"\x01\x00",)
        if how == 4:  # a valid first frame, then junk
            junk = self._bytes(rng.randint(5, 40))
            return "envelope.junk", (ENVELOPE_BYTE + _LEN.pack(len(good)) + good + junk,)
        if how == 5:  # an envelope inside an envelope
            inner = ENVELOPE_BYTE + _LEN.pack(len(good)) + good
            return "envelope.nested", (ENVELOPE_BYTE + _LEN.pack(len(inner)) + inner,)
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

    def _ballot(self) -> tuple[int, int]:
        rng = self._rng
        return (rng.choice(HUGE), rng.choice((1, 2, 3, 99, U64)))

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
            fields = (src, b, True)
        else:
            fields = (src, b, rng.choice((0, 1, *HUGE)))
        return f"semantic.ballot.{code}", (_pack((VERSION, code, *fields)),)

    def _sem_slot(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        src = self._other_src()
        slot = rng.choice(HUGE)
        b = rng.choice(((1, src if src <= 3 else 1), self._ballot()))
        code = rng.choice((3, 4, 6, 2))
        if code == 3:
            fields: tuple[Any, ...] = (src, b, slot, (("f", 1, b"v"),), rng.choice((0, slot)))
        elif code == 4 or code == 6:
            fields = (src, b, slot)
        else:
            fields = (src, b, slot, ((slot, b, (("f", 1, b"v"),)),), slot)
        return f"semantic.slot.{code}", (_pack((VERSION, code, *fields)),)

    def _sem_catchup(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        ranges = ((0, U64), (1, U64), (U64, 0), (U64, U64), (2**64 - 65, U64), (0, 2**63))
        lo, hi = rng.choice(ranges)
        return "semantic.catchup", (_pack((VERSION, 11, self._other_src(), lo, hi)),)

    def _sem_fetch(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        fields = (
            rng.choice((0, 1, 2, 2**31, *HUGE)),
            rng.choice((0, 1, 4096, 4097, *HUGE)),
            rng.choice((0, 1, 30_000, 30_001, *HUGE)),
        )
        return "semantic.fetch", (_pack((VERSION, 67, *fields)),)

    def _sem_submit(self) -> tuple[str, tuple[bytes, ...]]:
        # A few commands from fresh or edge-case sessions, in or out of order; some commit.
        rng = self._rng
        n = rng.choice((0, 1, 2, 10))
        prefix = rng.choice(("fz", LONGEST_ASCII_ID, LONGEST_UTF8_ID, ""))
        client = (prefix + str(rng.randrange(1000)))[-MAX_CLIENT_ID_LEN:]
        seqs = rng.choice(("fifo", "zero", "huge", "random"))
        return f"semantic.submit.{n}.{seqs}", (_submit_frame(rng, client, n, seqs),)

    def _sem_client_id(self) -> tuple[str, tuple[bytes, ...]]:
        rng = self._rng
        client = rng.choice((LONGEST_ASCII_ID, LONGEST_UTF8_ID, TOO_LONG_ID, "", "\x00" * 256))
        code = rng.choice((64, 71))
        if code == 64:
            frame: tuple[Any, ...] = (VERSION, 64, ((client, 1, b"x"),))
        else:
            frame = (VERSION, 71, client)
        return f"semantic.client_id.{code}", (_pack(frame),)

    def _sem_status(self) -> tuple[str, tuple[bytes, ...]]:
        nonce = self._rng.choice(EDGE_INTS)
        return "semantic.status", (_pack((VERSION, 69, nonce)),)

    def _sem_heavy(self) -> tuple[str, tuple[bytes, ...]]:
        """Thousands of entries where a few are expected (built once per shape, then reused)."""
        rng = self._rng
        n = rng.choice((1000, 5000))
        code = rng.choice((2, 12, 13, 64, 64, 65))
        key = (code, n, rng.random() < 0.5)  # the last bit: own src or another
        kind = f"semantic.heavy.{code}.{n}"
        frame = self._heavy.get(key)
        if frame is None:
            src = self.src if key[2] and self.src > 0 else 2
            b = (1, 1)
            if code == 2:
                entries = tuple((s, b, ()) for s in range(1, n + 1))
                frame = _pack((VERSION, 2, src, b, 1, entries, 0))
            elif code == 12:
                frame = _pack((VERSION, 12, src, tuple((s, ()) for s in range(1, n + 1)), 0))
            elif code == 13:
                frame = _pack((VERSION, 13, src, tuple(("fw", s, b"") for s in range(1, n + 1))))
            elif code == 64:
                # In order, so that it commits once and every resend is only acknowledged
                # (an undeliverable batch would be chosen and kept again at every resend).
                frame = _submit_frame(rng, f"fz-heavy-{n}", n, "fifo")
            else:
                frame = _pack((VERSION, 65, "c", tuple((s, s, 1) for s in range(1, n + 1)), 0))
            self._heavy[key] = frame
        return kind, (frame,)


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
        def fetch_with_bin(total: int) -> bytes:
            # [1, 67, bin(n), 0, 0]: header 0x95 0x01 0x43, bin32 header 5 bytes, tail 2 bytes.
            n = total - 3 - 5 - 2
            return b"\x95\x01\x43\xc6" + struct.pack(">I", n) + bytes(n) + b"\x00\x00"

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


def frame_at(seed: int, index: int, *, src: int = 0) -> Hostile:
    """Rebuild item ``index`` of a run with ``seed`` (and the same ``src``)."""
    return FrameFuzzer(seed, src=src).item(index)
