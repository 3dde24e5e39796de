"""Client sessions, kept in the replicated state: exactly-once and FIFO per client.

Every replica applies the same chosen log through the same rules, so every
replica holds the same session table and admits exactly the same commands: no
coordination is needed, and nothing here reads a clock.

**Opening** (the Raft thesis, section 6.3). A client does not pick its session:
it asks for one through the log with a system command ``open(name, nonce)``.
Applying it gives the session the key ``"<name>#<incarnation>"``, where the
incarnation is a counter of the replicated table, so two clients that use one
name (two copies of one app) always get two sessions and never see each other's
acknowledgements. Applying the same ``(name, nonce)`` again (the client retried
because the answer was lost) returns the same key instead of opening another.

**Admission** (the hot loop in :meth:`paxos.multi.replica.Replica._deliver`):
a command ``(key, seq)`` is delivered iff ``key`` is a live session and ``seq
== last[key] + 1``. A lower seq is a retry of something delivered
(exactly-once); a higher one means an earlier command of the same session was
lost on the way, and delivering it would break FIFO order.

**Ending.** A session ends when its client closes it, when the leader sees it
idle for ``session_timeout_ticks`` and gets ``expire(key, last)`` chosen (a
no-op if the session delivered anything after ``last``: activity wins the
race), or when an open finds the table full and evicts the session that has
been idle the longest *in log order*. All three are decided by applying the
log, so every replica ends the same sessions at the same point, and a
command of an ended session is never delivered, on any replica, ever: a late
retry cannot resurrect it (the reason sessions must be opened explicitly).
A bounded list of tombstones remembers how ended sessions stood, so a client
can be told precisely that its session is gone.

System commands are :class:`~paxos.types.Command` s with ``seq == 0`` (client
seqs start at 1) and a one-byte tag at the start of the payload; they travel
and are chosen like any other command, so nothing in the wire format or the
log had to change for them.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Final

from paxos.types import Command

#: System command tags: the first byte of a ``seq == 0`` command's payload.
OPEN: Final = 1
CLOSE: Final = 2
EXPIRE: Final = 3
#: Bytes of the nonce that makes an open request unique.
NONCE_BYTES: Final = 16
#: Longest session name: the key ``name#incarnation`` must fit a client id (256 characters).
MAX_NAME_LEN: Final = 200
#: How ended sessions are remembered, at most.
MAX_TOMBSTONES: Final = 4096


def open_command(name: str, nonce: bytes) -> Command:
    """The system command that opens a session for ``name`` (``nonce``: 16 random bytes)."""
    return Command(name, 0, bytes((OPEN,)) + nonce)


def close_command(key: str) -> Command:
    """The system command that ends the session ``key`` at its client's request."""
    return Command(key, 0, bytes((CLOSE,)))


def expire_command(key: str, last_seq: int) -> Command:
    """End ``key`` unless it delivered anything after ``last_seq`` (proposed by a leader)."""
    return Command(key, 0, bytes((EXPIRE,)) + last_seq.to_bytes(8, "big"))


def incarnation_of(key: str) -> int | None:
    """The incarnation in a session key ``name#N``, or None if ``key`` is not one."""
    _, sep, digits = key.rpartition("#")
    if not sep or not digits.isdigit() or len(digits) > 18 or digits[0] == "0":
        return None
    return int(digits)


class Sessions:
    """The replicated session table: live sessions, their last delivered seq, where their
    recent commands went, and tombstones of ended ones.

    ``last`` is read and written directly by the replica's delivery loop (the hot
    path); everything else goes through methods.
    """

    __slots__ = (
        "_by_nonce",
        "_nonce_of",
        "_runs",
        "ended",
        "last",
        "max_sessions",
        "next_incarnation",
        "opened",
        "tombstones",
        "window",
    )

    def __init__(self, max_sessions: int = 4096, window: int = 4096) -> None:
        if max_sessions < 1 or window < 1:
            raise ValueError("max_sessions and window must be >= 1")
        self.max_sessions = max_sessions
        #: Outcomes are kept for at least this many of a session's latest seqs (a
        #: client never has more than this many commands unacknowledged).
        self.window = window
        #: Live session key -> last delivered seq (0: none yet). Insertion order is
        #: the order of last activity in the log: the first key is the idlest.
        self.last: dict[str, int] = {}
        self.next_incarnation = 1
        # (name, nonce) -> key, and back, for live sessions (idempotent opens).
        self._by_nonce: dict[tuple[str, bytes], str] = {}
        self._nonce_of: dict[str, tuple[str, bytes]] = {}
        # key -> (first seq of each run, first index of each run), ascending. A run is
        # consecutive seqs at consecutive indexes; since a session's seqs are delivered
        # without gaps, run i ends where run i + 1 starts (the last ends at last[key]).
        self._runs: dict[str, tuple[array[int], array[int]]] = {}
        #: Ended session key -> its last delivered seq, oldest first, bounded.
        self.tombstones: dict[str, int] = {}
        #: Sessions opened by the commands applied since the driver last looked:
        #: ``(name, nonce, key)``. The replica moves them into its Ready.
        self.opened: list[tuple[str, bytes, str]] = []
        #: Sessions ended likewise: ``(key, last_seq, reason)``.
        self.ended: list[tuple[str, int, str]] = []

    # ------------------------------------------------------------------ delivery

    def record(self, key: str, first_seq: int, first_index: int, count: int) -> None:
        """Remember that seqs ``first_seq ..`` of ``key`` went to indexes ``first_index ..``.

        Called once per run by the delivery loop, after ``last`` was advanced. The
        session becomes the most recently active one.
        """
        last = self.last
        seq = last.pop(key)
        last[key] = seq  # move to the end: most recently active
        runs = self._runs.get(key)
        if runs is None:
            self._runs[key] = (array("q", (first_seq,)), array("q", (first_index,)))
            return
        seqs, indexes = runs
        # Extends the previous run (same offset between seq and index): nothing to add.
        if first_index - first_seq == indexes[-1] - seqs[-1]:
            return
        seqs.append(first_seq)
        indexes.append(first_index)
        # Bounded: runs wholly below the window are forgotten (in bulk, amortised).
        if len(seqs) > 64 and seqs[len(seqs) // 2] < seq - self.window:
            cut = bisect_right(seqs, seq - self.window) - 1
            if cut > 0:
                del seqs[:cut]
                del indexes[:cut]

    def outcome(self, key: str, seq: int) -> int | None:
        """The index of ``(key, seq)``; 0 if delivered too long ago to know where (older
        than the window); None if not delivered (or ``key`` is not a live session)."""
        last = self.last.get(key)
        if last is None or seq < 1 or seq > last:
            return None
        runs = self._runs.get(key)
        if runs is None:
            return 0
        seqs, indexes = runs
        i = bisect_right(seqs, seq) - 1
        if i < 0:
            return 0
        return indexes[i] + (seq - seqs[i])

    def last_seq(self, key: str) -> int | None:
        """The last delivered seq of a live session, or None if ``key`` is not live."""
        return self.last.get(key)

    def status(self, key: str) -> tuple[str, int | None]:
        """How ``key`` stands here: ``("live", last seq)``; ``("ended", last seq or None
        if no longer remembered)``; ``("unknown", None)``: not opened yet as far as this
        replica has applied the log, or not a session key at all."""
        last = self.last.get(key)
        if last is not None:
            return "live", last
        if key in self.tombstones:
            return "ended", self.tombstones[key]
        incarnation = incarnation_of(key)
        if incarnation is not None and incarnation < self.next_incarnation:
            return "ended", None  # opened here once; ended so long ago it was forgotten
        return "unknown", None

    def key_for(self, name: str, nonce: bytes) -> str | None:
        """The key of the live session opened by ``(name, nonce)``, if any."""
        return self._by_nonce.get((name, nonce))

    def __len__(self) -> int:
        return len(self.last)

    # ------------------------------------------------------------------ system commands

    def apply(self, command: Command) -> None:
        """Apply a system command (``seq == 0``). Malformed ones are ignored, identically
        on every replica."""
        client, _, payload = command
        tag = payload[0] if payload else 0
        if tag == OPEN:
            if len(payload) == 1 + NONCE_BYTES and 0 < len(client) <= MAX_NAME_LEN:
                self._open(client, payload[1:])
        elif tag == CLOSE:
            if len(payload) == 1 and client in self.last:
                self._end(client, "closed")
        elif (
            tag == EXPIRE
            and len(payload) == 9
            # Conditional on no activity since the leader decided: a command delivered
            # in between wins the race and the session lives on.
            and self.last.get(client) == int.from_bytes(payload[1:], "big")
        ):
            self._end(client, "expired")

    def _open(self, name: str, nonce: bytes) -> None:
        existing = self._by_nonce.get((name, nonce))
        if existing is not None:
            self.opened.append((name, nonce, existing))  # a retried open: same session
            return
        if len(self.last) >= self.max_sessions:
            # Bounded table: the session idle the longest in log order makes room.
            self._end(next(iter(self.last)), "evicted")
        key = f"{name}#{self.next_incarnation}"
        self.next_incarnation += 1
        self.last[key] = 0
        self._by_nonce[(name, nonce)] = key
        self._nonce_of[key] = (name, nonce)
        self.opened.append((name, nonce, key))

    def _end(self, key: str, reason: str) -> None:
        last = self.last.pop(key)
        del self._by_nonce[self._nonce_of.pop(key)]
        self._runs.pop(key, None)
        tombstones = self.tombstones
        tombstones[key] = last
        if len(tombstones) > MAX_TOMBSTONES:
            del tombstones[next(iter(tombstones))]
        self.ended.append((key, last, reason))

    # ------------------------------------------------------------------ snapshots

    def export(self) -> list[object]:
        """The whole table as plain lists (msgpack-able), for a snapshot. Everything the
        delivery rules read is in it: a replica restored from it admits exactly the
        commands the exporting replica would (exactly-once survives compaction)."""
        live = [
            [key, last, *self._nonce_of[key], *self._export_runs(key)]
            for key, last in self.last.items()  # in order of last activity: eviction order
        ]
        return [self.next_incarnation, live, [[k, s] for k, s in self.tombstones.items()]]

    def _export_runs(self, key: str) -> tuple[list[int], list[int]]:
        runs = self._runs.get(key)
        if runs is None:
            return [], []
        return runs[0].tolist(), runs[1].tolist()

    @classmethod
    def restore(cls, state: object, max_sessions: int, window: int) -> Sessions:
        """The table :meth:`export` gave. Raises ValueError if ``state`` is not one."""
        table = cls(max_sessions, window)
        try:
            parts: list[object] = list(state)  # type: ignore[call-overload]
            next_incarnation, live, tombstones = parts
            if type(next_incarnation) is not int or next_incarnation < 1:
                raise ValueError("bad incarnation counter")
            table.next_incarnation = next_incarnation
            for key, last, name, nonce, seqs, indexes in live:  # type: ignore[attr-defined]
                if not (isinstance(key, str) and isinstance(name, str)):
                    raise ValueError("bad session key")
                if type(last) is not int or not isinstance(nonce, bytes):
                    raise ValueError("bad session entry")
                if len(seqs) != len(indexes):
                    raise ValueError("bad session runs")
                table.last[key] = last
                table._by_nonce[(name, nonce)] = key
                table._nonce_of[key] = (name, nonce)
                if seqs:
                    table._runs[key] = (array("q", seqs), array("q", indexes))
            for key, last in tombstones:  # type: ignore[attr-defined]
                if not isinstance(key, str) or type(last) is not int:
                    raise ValueError("bad tombstone")
                table.tombstones[key] = last
        except (TypeError, OverflowError) as exc:
            raise ValueError(f"not a session table: {exc}") from None
        return table
