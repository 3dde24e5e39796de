"""A virtual disk: what a node wrote survives a crash only once it was synced.

It models the runtime's files closely enough for compaction bugs to show:

* the write-ahead log is a sequence of numbered **segments**; a batch goes into the
  current segment, and a new one starts once the current holds
  ``segment_records`` records (as :mod:`broadcast.wal` rolls by bytes);
* a **snapshot** is written to a temporary file (lost in a crash) and then renamed
  (durable: the rename and the directory sync are one step here);
* the log's **floor** marker (segments below it were deleted on purpose) is durable
  when set, and segments are deleted one at a time, so a crash can strike between
  any two steps of snapshot-then-compact.
"""

from __future__ import annotations

from collections.abc import Iterable

from paxos.multi.compaction import top_slot
from paxos.multi.snapshot import Snapshot
from paxos.records import Record


class DiskCorruption(Exception):
    """What a restarted node would refuse to start from (a bug in compaction)."""


class Disk:
    """The stable storage of one simulated node.

    ``write`` buffers records (like a page cache), ``sync`` makes everything
    written so far durable (like fsync). :meth:`crash` throws away what was
    written but not synced; :meth:`records` is what a restarted node recovers.
    """

    __slots__ = (
        "_pending",
        "_snapshot_tmp",
        "current",
        "floor",
        "identity",
        "segment_records",
        "segments",
        "snapshot",
    )

    def __init__(self, segment_records: int = 1 << 62) -> None:
        #: The node's identity record (cluster and node id), written at its first
        #: start; a lost disk loses it too (see NodeDriver.may_start).
        self.identity = False
        self.segment_records = segment_records
        #: Durable records by segment number (ascending; no gaps from ``floor`` on).
        self.segments: dict[int, list[Record]] = {1: []}
        self.current = 1
        self._pending: list[tuple[int, Record]] = []
        #: Segments below it were deleted on purpose (the runtime's FLOOR file).
        self.floor = 1
        self.snapshot: Snapshot | None = None
        self._snapshot_tmp: Snapshot | None = None

    @property
    def durable(self) -> list[Record]:
        """Every durable record still on disk, in write order."""
        return [r for n in sorted(self.segments) for r in self.segments[n]]

    def write(self, records: Iterable[Record]) -> None:
        batch = list(records)
        if not batch:
            return
        # A batch never straddles two segments; a full segment is followed by a new one.
        in_current = len(self.segments[self.current]) + sum(
            1 for n, _ in self._pending if n == self.current
        )
        if in_current >= self.segment_records:
            self.current += 1
            self.segments[self.current] = []
        self._pending.extend((self.current, r) for r in batch)

    def sync(self) -> None:
        for number, record in self._pending:
            self.segments[number].append(record)
        self._pending.clear()

    @property
    def unsynced(self) -> int:
        return len(self._pending)

    def crash(self) -> int:
        """The node lost power: unsynced writes are gone. Returns how many were lost."""
        lost = len(self._pending)
        self._pending.clear()
        self._snapshot_tmp = None
        return lost

    def records(self) -> tuple[Record, ...]:
        """The durable records a restart reads, in write order (what the runtime's log
        recovery does: segments left below the floor are deleted first)."""
        for number in [n for n in self.segments if n < self.floor]:
            del self.segments[number]
        if self.floor > 1 and self.snapshot is None:
            raise DiskCorruption(f"log compacted below segment {self.floor} without a snapshot")
        if self.floor not in self.segments:
            raise DiskCorruption(f"segment {self.floor}, the log's floor, is missing")
        return tuple(self.durable)

    # ------------------------------------------------------------------ compaction

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """The temporary file: lost in a crash until :meth:`rename_snapshot`."""
        self._snapshot_tmp = snapshot

    def rename_snapshot(self) -> None:
        """Rename and sync the directory: the snapshot is durable (a newer one only)."""
        tmp = self._snapshot_tmp
        self._snapshot_tmp = None
        if tmp is not None and (self.snapshot is None or tmp.slot >= self.snapshot.slot):
            self.snapshot = tmp

    def segment_tops(self) -> list[tuple[int, int]]:
        """``(segment number, highest accepted slot in it or 0)`` for every segment with
        durable records, ascending (what the runtime tracks per segment as it writes)."""
        return [(n, top_slot(self.segments[n])) for n in sorted(self.segments)]

    def set_floor(self, keep_from: int) -> None:
        """Durably mark segments below ``keep_from`` as deleted on purpose."""
        if keep_from > self.current:
            raise ValueError("the active segment is never deleted")
        self.floor = max(self.floor, keep_from)

    def delete_segment(self, number: int) -> None:
        if number >= self.floor:
            raise ValueError(f"segment {number} is not below the floor {self.floor}")
        self.segments.pop(number, None)
