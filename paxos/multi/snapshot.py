"""Snapshots: a replica's whole applied state at one slot, as one checksummed blob.

A snapshot at slot ``F`` stands for every slot ``<= F``: once it is durable, the
chosen values and accepted records of those slots are no longer needed (the
log is compacted up to a floor ``<= F``), and a replica whose next needed slot
is at or below a peer's floor installs that peer's snapshot instead of
catching up slot by slot.

What it holds (the blob is msgpack, built and read only here):

* ``slot`` and ``index``: the last applied slot and the last delivered index;
* the replicated session table (:meth:`paxos.multi.sessions.Sessions.export`):
  always, so exactly-once survives compaction even for users without a state
  machine;
* ``app``: the application state machine's own bytes (``b""`` without one),
  opaque here.

Membership is static (the configuration every member starts with), so there
is nothing more of the cluster to record yet; cluster identity lives in the
node's data directory and is checked before a snapshot is read.

The checksum (CRC-32 of the blob) travels with every install chunk and is
checked before a received snapshot is installed; snapshot files carry it too.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import msgpack

from paxos.multi.sessions import Sessions

#: Bumped when the blob layout changes; a blob of another format is refused.
SNAPSHOT_FORMAT = 1


class SnapshotFormatError(ValueError):
    """A blob that is not a snapshot of this format (corrupt, forged or foreign)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A replica's state after applying every slot ``<= slot`` (``index`` deliveries)."""

    slot: int
    index: int
    crc: int
    blob: bytes

    @property
    def size(self) -> int:
        return len(self.blob)


@dataclass(frozen=True, slots=True)
class SnapshotState:
    """A decoded snapshot: what a replica and its application restore from."""

    slot: int
    index: int
    sessions: Sessions
    app: bytes


def build_snapshot(slot: int, index: int, sessions: Sessions, app: bytes) -> Snapshot:
    """The snapshot of a replica that applied every slot ``<= slot``."""
    blob = msgpack.packb([SNAPSHOT_FORMAT, slot, index, sessions.export(), app])
    return Snapshot(slot, index, zlib.crc32(blob), blob)


def read_snapshot(blob: bytes, max_sessions: int, window: int) -> SnapshotState:
    """Decode a blob :func:`build_snapshot` made. Raises :class:`SnapshotFormatError`."""
    try:
        fmt, slot, index, sessions, app = msgpack.unpackb(blob, use_list=True, raw=False)
    except Exception as exc:  # msgpack raises several types; all mean "not a snapshot"
        raise SnapshotFormatError(f"not a snapshot: {type(exc).__name__}") from None
    if fmt != SNAPSHOT_FORMAT:
        raise SnapshotFormatError(f"snapshot format {fmt!r}, expected {SNAPSHOT_FORMAT}")
    if type(slot) is not int or type(index) is not int or slot < 0 or index < 0:
        raise SnapshotFormatError("bad snapshot slot or index")
    if not isinstance(app, bytes):
        raise SnapshotFormatError("bad application state")
    try:
        table = Sessions.restore(sessions, max_sessions, window)
    except ValueError as exc:
        raise SnapshotFormatError(str(exc)) from None
    return SnapshotState(slot, index, table, app)


def verify(snapshot: Snapshot) -> bool:
    """Does the blob match its checksum?"""
    return zlib.crc32(snapshot.blob) == snapshot.crc
