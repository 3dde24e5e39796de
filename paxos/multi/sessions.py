"""Client sessions, kept in the replicated state: exactly-once and FIFO per client.

Every replica applies the same chosen log through the same rule, so every
replica admits exactly the same commands: no coordination is needed.
"""

from __future__ import annotations

#: How many recent (seq -> index) answers a session remembers for outcome queries.
RECENT_PER_CLIENT = 1024


class _Session:
    __slots__ = ("last_seq", "recent")

    def __init__(self) -> None:
        self.last_seq = 0
        self.recent: dict[int, int] = {}


class Sessions:
    """The last delivered sequence number of every client, and where recent ones went."""

    __slots__ = ("_sessions",)

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def admit(self, client: str, seq: int, index: int) -> bool:
        """Decide whether ``(client, seq)`` is delivered at ``index``; record it if so.

        Only ``last_seq + 1`` is admitted: a lower seq is a retry of something
        delivered (exactly-once); a higher one means an earlier command of the
        same client was lost on the way, and delivering it would break FIFO
        order, so it is skipped and the client resends both, in order.
        """
        session = self._sessions.get(client)
        if session is None:
            session = self._sessions[client] = _Session()
        if seq != session.last_seq + 1:
            return False
        session.last_seq = seq
        recent = session.recent
        recent[seq] = index
        if len(recent) > RECENT_PER_CLIENT:
            recent.pop(seq - RECENT_PER_CLIENT, None)
        return True

    def outcome(self, client: str, seq: int) -> int | None:
        """The index of ``(client, seq)``; 0 if delivered long ago; None if not delivered."""
        session = self._sessions.get(client)
        if session is None or seq > session.last_seq or seq < 1:
            return None
        return session.recent.get(seq, 0)

    def last_seq(self, client: str) -> int:
        session = self._sessions.get(client)
        return 0 if session is None else session.last_seq

    def __len__(self) -> int:
        return len(self._sessions)
