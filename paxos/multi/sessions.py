"""Client sessions, kept in the replicated state: exactly-once and FIFO per client.

Every replica applies the same chosen log through the same rule, so every
replica admits exactly the same commands: no coordination is needed.

The rule lives in :meth:`paxos.multi.replica.Replica._deliver` (the hot loop):
a command ``(client, seq)`` is delivered iff ``seq == last[client] + 1``.
This module keeps ``last`` and, for outcome queries, where recent commands
went, as runs of consecutive seqs at consecutive indexes (one run per batch,
not one entry per command).
"""

from __future__ import annotations

from bisect import bisect_right

#: Runs remembered per client for outcome queries (older ones answer "delivered, index unknown").
RUNS_PER_CLIENT = 4096


class Sessions:
    """The last delivered sequence number of every client, and where recent ones went."""

    __slots__ = ("_runs", "last")

    def __init__(self) -> None:
        #: client -> last delivered seq (0: none). Read and written by the delivery loop.
        self.last: dict[str, int] = {}
        # client -> ascending [first_seq, first_index, count] runs.
        self._runs: dict[str, list[list[int]]] = {}

    def record(self, client: str, first_seq: int, first_index: int, count: int) -> None:
        """Remember that seqs ``first_seq ..`` of ``client`` went to indexes ``first_index ..``."""
        runs = self._runs.get(client)
        if runs is None:
            self._runs[client] = [[first_seq, first_index, count]]
            return
        tail = runs[-1]
        if first_seq == tail[0] + tail[2] and first_index == tail[1] + tail[2]:
            tail[2] += count
            return
        runs.append([first_seq, first_index, count])
        if len(runs) > 2 * RUNS_PER_CLIENT:
            del runs[:RUNS_PER_CLIENT]

    def admit(self, client: str, seq: int, index: int) -> bool:
        """Decide whether ``(client, seq)`` is delivered at ``index``; record it if so.

        Only ``last + 1`` is admitted: a lower seq is a retry of something
        delivered (exactly-once); a higher one means an earlier command of the
        same client was lost on the way, and delivering it would break FIFO
        order, so it is skipped and the client resends both, in order.
        """
        if seq != self.last.get(client, 0) + 1:
            return False
        self.last[client] = seq
        self.record(client, seq, index, 1)
        return True

    def outcome(self, client: str, seq: int) -> int | None:
        """The index of ``(client, seq)``; 0 if delivered long ago; None if not delivered."""
        if seq < 1 or seq > self.last.get(client, 0):
            return None
        runs = self._runs.get(client)
        if not runs:
            return 0
        i = bisect_right(runs, seq, key=lambda run: run[0]) - 1
        if i < 0:
            return 0
        first_seq, first_index, count = runs[i]
        return first_index + (seq - first_seq) if seq < first_seq + count else 0

    def last_seq(self, client: str) -> int:
        return self.last.get(client, 0)

    def __len__(self) -> int:
        return len(self.last)
