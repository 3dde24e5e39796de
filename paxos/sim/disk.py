"""A virtual disk: what a node wrote survives a crash only once it was synced."""

from __future__ import annotations

from collections.abc import Iterable

from paxos.records import Record


class Disk:
    """The stable storage of one simulated node.

    ``write`` buffers records (like a page cache), ``sync`` makes everything
    written so far durable (like fsync). :meth:`crash` throws away what was
    written but not synced; :attr:`durable` is what a restarted node recovers.
    """

    __slots__ = ("_pending", "durable")

    def __init__(self) -> None:
        self.durable: list[Record] = []
        self._pending: list[Record] = []

    def write(self, records: Iterable[Record]) -> None:
        self._pending.extend(records)

    def sync(self) -> None:
        if self._pending:
            self.durable.extend(self._pending)
            self._pending.clear()

    @property
    def unsynced(self) -> int:
        return len(self._pending)

    def crash(self) -> int:
        """The node lost power: unsynced writes are gone. Returns how many were lost."""
        lost = len(self._pending)
        self._pending.clear()
        return lost

    def records(self) -> tuple[Record, ...]:
        """The durable records, in the order they were written."""
        return tuple(self.durable)
