"""What a node keeps to answer remote callers of its state machine: results and held queries.

A state machine may answer remote callers (the coordination service does,
:mod:`broadcast.kv`): ``encode_result(result) -> bytes`` turns what ``apply``
returned into bytes the node sends the client that broadcast the command
(:class:`~broadcast.protocol.SubmitResults`), and ``query(payload, final) ->
bytes | None`` answers read-only questions (:class:`~broadcast.protocol.Query`).

**Results of retries.** A client that did not hear its result resends the command,
maybe to another node; the replicated session drops the repeat (nothing is
applied twice) and the node answers from :class:`ResultCache`. Every node applies
every command, and the state machine is deterministic, so any node holds the same
result. The cache is bounded in bytes and entries: a result evicted (or applied
before the snapshot the node started from) is answered as "committed at this
index, result unknown", never by applying the command again.

**Held queries** (a watch waiting for a change) are bounded in number and in bytes
(their payloads), per client and in all; each is answered once, at the latest at its
deadline.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from broadcast.protocol import Query

#: Results kept for retries, in bytes of encoded results and in entries.
DEFAULT_RESULT_CACHE_BYTES = 16 * 1024 * 1024
DEFAULT_RESULT_CACHE_ENTRIES = 65_536
#: Per result, besides its bytes (the key, the tuple, the dict slot).
RESULT_OVERHEAD = 96
#: Held queries: per client, and in all.
MAX_HELD_PER_CLIENT = 64
MAX_HELD = 4096
#: Bytes of held queries (payload and bookkeeping): per client, and in all. A query's
#: payload is bounded only by the frame limit (megabytes): without a byte bound, 4096
#: held ones could hold gigabytes.
MAX_HELD_BYTES_PER_CLIENT = 1024 * 1024
MAX_HELD_BYTES = 16 * 1024 * 1024
#: What a held query costs besides its payload.
HELD_OVERHEAD = 200
#: The longest a query is held.
MAX_QUERY_WAIT_MS = 60_000


class ResultCache:
    """``(session key, seq) -> (index, encoded result)`` of recent commands, oldest
    evicted first, at most ``max_bytes`` and ``max_entries``."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_RESULT_CACHE_BYTES,
        max_entries: int = DEFAULT_RESULT_CACHE_ENTRIES,
    ) -> None:
        if max_bytes < 1 or max_entries < 1:
            raise ValueError("max_bytes and max_entries must be >= 1")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, int], tuple[int, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, client: str, seq: int, index: int, result: bytes) -> None:
        key = (client, seq)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= RESULT_OVERHEAD + len(old[1])
        self._entries[key] = (index, result)
        self.bytes += RESULT_OVERHEAD + len(result)
        entries = self._entries
        while len(entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, gone) = entries.popitem(last=False)
            self.bytes -= RESULT_OVERHEAD + len(gone)

    def get(self, client: str, seq: int) -> tuple[int, bytes] | None:
        return self._entries.get((client, seq))


@dataclass(slots=True)
class HeldQuery:
    deadline: float
    identity: bytes
    query: Query

    @property
    def size(self) -> int:
        return HELD_OVERHEAD + len(self.query.payload)


class HeldQueries:
    """Queries waiting for an index or for the state machine to have an answer."""

    def __init__(
        self,
        max_held: int = MAX_HELD,
        per_client: int = MAX_HELD_PER_CLIENT,
        max_bytes: int = MAX_HELD_BYTES,
        per_client_bytes: int = MAX_HELD_BYTES_PER_CLIENT,
    ) -> None:
        self.max_held = max_held
        self.per_client = per_client
        self.max_bytes = max_bytes
        self.per_client_bytes = per_client_bytes
        self.held: list[HeldQuery] = []
        self.bytes = 0
        # identity -> (queries held, their bytes)
        self._per: dict[bytes, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.held)

    def __bool__(self) -> bool:
        return bool(self.held)

    def hold(self, now: float, identity: bytes, query: Query) -> bool:
        """Hold ``query`` until its deadline; False if the bounds say no."""
        wait_s = min(query.wait_ms, MAX_QUERY_WAIT_MS) / 1000.0
        h = HeldQuery(now + wait_s, identity, query)
        count, size = self._per.get(identity, (0, 0))
        if (
            count >= self.per_client
            or len(self.held) >= self.max_held
            or size + h.size > self.per_client_bytes
            or self.bytes + h.size > self.max_bytes
        ):
            return False
        self.keep(h)
        return True

    def keep(self, h: HeldQuery) -> None:
        """Hold again one that :meth:`take_all` returned (it was within the bounds)."""
        self.held.append(h)
        count, size = self._per.get(h.identity, (0, 0))
        self._per[h.identity] = (count + 1, size + h.size)
        self.bytes += h.size

    def take_all(self) -> list[HeldQuery]:
        """Every held query, forgotten here (the caller holds again what stays)."""
        held, self.held, self._per, self.bytes = self.held, [], {}, 0
        return held

    def forget(self, identity: bytes) -> None:
        gone = self._per.pop(identity, None)
        if gone:
            self.held = [h for h in self.held if h.identity != identity]
            self.bytes -= gone[1]
