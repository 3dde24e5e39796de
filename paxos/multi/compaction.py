"""Which write-ahead-log segments a durable snapshot makes obsolete.

Shared by the runtime (:mod:`broadcast.node`) and the simulator
(:mod:`paxos.sim.node`), so the simulator checks the rule that ships.

The steps, in this order, each durable before the next (a crash between any two
recovers: see the tests):

1. the snapshot at slot F is written atomically (temp file, fsync, rename,
   fsync of the directory);
2. :meth:`~paxos.multi.replica.Replica.compacted` moves the replica's floor to at
   most F and re-records its promise and its chosen prefix (synced like any
   record), so no older record is needed for either;
3. the log records that segments below ``keep_from`` are obsolete, then deletes
   them, oldest first.

Safety rule (:func:`keep_from`): a segment may go only if every accepted record
in it is at or below the replica's floor (covered by the durable snapshot: no
vote a leader may still count, no value a replay still needs), it precedes the
segment that holds step 2's records, and so does every segment before it (the
log stays contiguous).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from paxos.records import AcceptRecord, Record


def top_slot(records: Iterable[Record]) -> int:
    """The highest slot accepted in ``records`` (0 if none)."""
    return max((r.slot for r in records if type(r) is AcceptRecord), default=0)


def keep_from(tops: Sequence[tuple[int, int]], floor: int, current: int) -> int:
    """The first segment to keep.

    ``tops``: ``(segment number, highest accepted slot in it)``, ascending;
    ``floor``: the replica's floor after step 2; ``current``: the segment step 2's
    records went to (never deleted: it holds the promise now).
    """
    for number, top in tops:
        if number >= current or top > floor:
            return number
    return current
